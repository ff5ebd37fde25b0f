"""Text-to-speech backends, chosen by name in bot.toml (``[tts] backend``)."""

from __future__ import annotations

from pipeline.backends import BackendSpec
from pipeline.services.tts.base import TTS, Voice

TTS_BACKENDS: dict[str, BackendSpec] = {
    "espeak": BackendSpec(
        target="pipeline.services.tts.espeak:EspeakTTS",
        requires=("espeakng_loader",),
        package="espeakng-loader",
        description="eSpeak NG, offline, 100+ languages (the default)",
    ),
    "piper": BackendSpec(
        target="pipeline.services.tts.piper:PiperTTS",
        requires=("piper",),
        package="piper-tts",
        extra="piper",
        description="Piper neural voices, offline, one model per voice",
    ),
    "openai": BackendSpec(
        target="pipeline.services.tts.openai:OpenAITTS",
        requires=("openai",),
        package="openai",
        description="OpenAI (or a compatible server) audio.speech",
    ),
    "silero": BackendSpec(
        target="pipeline.services.tts.silero:SileroTTS",
        requires=("aiohttp",),
        package="aiohttp",
        description="a Silero TTS HTTP server (POST /tts/generate)",
    ),
}

__all__ = ["TTS", "TTS_BACKENDS", "Voice"]
