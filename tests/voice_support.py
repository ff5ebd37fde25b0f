"""Speech for the voice tests: eSpeak sentences, word error rate, Discord-style packets."""

from __future__ import annotations

from pipeline.audio import AudioChunk, concat
from pipeline.services.tts.base import Voice
from pipeline.services.tts.espeak import EspeakTTS

# Sentences tiny.en hears well from eSpeak's en-us voice.
SENTENCES = (
    "Hello, can you hear me?",
    "What is the weather like today?",
    "Please tell me a story about a dragon.",
    "I would like to learn some German.",
    "Thank you very much for the help.",
    "Where is the nearest train station?",
)


async def speak(text: str, *, words_per_minute: int = 165) -> AudioChunk:
    """``text`` spoken by eSpeak NG (22,050 Hz mono)."""
    tts = EspeakTTS(words_per_minute=words_per_minute)
    return concat([chunk async for chunk in tts.synthesize(text, Voice(language="en"))])
