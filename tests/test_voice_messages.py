"""Discord voice messages: Ogg Opus as Discord's clients record it, through discord.py's
message parsing, PyAV's decoder and faster-whisper."""

from __future__ import annotations

import io

import av
import discord
import numpy as np
import pytest

from bots.discord.voice.messages import (
    decode_voice_message,
    is_voice_message,
    transcribe_voice_message,
)
from pipeline.audio import AudioChunk
from pipeline.errors import InputError
from pipeline.services.stt.faster_whisper import FasterWhisperSTT
from pipeline.speech.resample import resample
from tests.voice_support import SENTENCES, speak


def ogg_opus(audio: AudioChunk) -> bytes:
    """A voice message file: Ogg Opus, 48 kHz mono, as the Discord apps record them."""
    mono = resample(audio, 48_000).samples
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48_000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            (np.clip(mono, -1, 1) * 32767).astype("<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 48_000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def message(flags: int, content_type: str) -> discord.Message:
    client = discord.Client(intents=discord.Intents.none())
    channel = discord.DMChannel(
        me=None,  # type: ignore[arg-type]
        state=client._connection,
        data={"id": "77", "type": 1, "recipients": [], "last_message_id": None},  # type: ignore[typeddict-item]
    )
    payload = {
        "id": "88",
        "channel_id": "77",
        "type": 0,
        "content": "",
        "flags": flags,
        "author": {"id": "2002", "username": "ada", "discriminator": "0", "avatar": None},
        "attachments": [
            {
                "id": "99",
                "filename": "voice-message.ogg",
                "size": 12345,
                "url": "https://cdn.discordapp.com/attachments/77/99/voice-message.ogg",
                "proxy_url": "https://media.discordapp.net/attachments/77/99/voice-message.ogg",
                "content_type": content_type,
                "duration_secs": 2.1,
                "waveform": "AAAA",
            }
        ],
        "embeds": [],
        "mentions": [],
        "mention_roles": [],
        "mention_everyone": False,
        "pinned": False,
        "tts": False,
        "timestamp": "2026-12-02T10:00:00+00:00",
        "edited_timestamp": None,
    }
    return discord.Message(state=client._connection, channel=channel, data=payload)  # type: ignore[arg-type]


def test_voice_message_flag_and_audio_attachment() -> None:
    assert is_voice_message(message(8192, "audio/ogg"))
    assert not is_voice_message(message(0, "audio/ogg"))  # an ordinary audio upload
    assert not is_voice_message(message(8192, "image/png"))


async def test_voice_message_is_transcribed() -> None:
    data = ogg_opus(await speak(SENTENCES[5]))
    assert data.startswith(b"OggS")
    stt = FasterWhisperSTT()
    try:
        text = await transcribe_voice_message(data, stt, language="en")
    finally:
        await stt.aclose()
    assert text.lower().rstrip("?") == SENTENCES[5].lower().rstrip("?")


def test_unreadable_voice_message_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="not audio lipcast can read") as caught:
        decode_voice_message(b"OggS" + bytes(200))
    assert "\n" not in str(caught.value)
