"""Discord voice messages: an Ogg Opus attachment on a message flagged as a voice message,
turned into the text of an utterance through the speech-to-text seam.

The Discord adapter downloads the attachment (``Attachment.read()``) and hands the bytes to
:func:`transcribe_voice_message`; the answer then goes like any text message, video included.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np

from pipeline.audio import AudioChunk
from pipeline.errors import InputError
from pipeline.services.stt import STT

MAX_VOICE_MESSAGE_BYTES = 25 * 1024 * 1024
MAX_VOICE_MESSAGE_S = 300.0  # longer ones are cut: a chat turn is not a podcast
_DECODE_RATE = 16_000


def is_voice_message(message: Any) -> bool:
    """Whether a ``discord.Message`` is a voice message (its flag, and an audio attachment)."""
    flags = getattr(message, "flags", None)
    if not getattr(flags, "voice", False):
        return False
    return any(
        (attachment.content_type or "").startswith("audio/")
        for attachment in getattr(message, "attachments", [])
    )


def decode_voice_message(data: bytes, *, max_s: float = MAX_VOICE_MESSAGE_S) -> AudioChunk:
    """The speech of an Ogg Opus (or any audio file FFmpeg reads) as 16 kHz mono; blocking."""
    import av

    if len(data) > MAX_VOICE_MESSAGE_BYTES:
        raise InputError(
            f"the voice message is {len(data) // 1_000_000} MB; at most "
            f"{MAX_VOICE_MESSAGE_BYTES // 1_000_000} MB are transcribed"
        )
    parts: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    kept = 0
    limit = int(max_s * _DECODE_RATE)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InputError("the voice message holds no audio")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=_DECODE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1).astype(np.float32)
                    parts.append(samples)
                    kept += len(samples)
                if kept >= limit:
                    break
    except av.error.FFmpegError as err:
        raise InputError(f"the voice message is not audio lipcast can read: {err}") from err
    if not parts:
        raise InputError("the voice message holds no audio")
    samples = np.concatenate(parts)[:limit]
    return AudioChunk(samples=samples.astype(np.float32), sample_rate=_DECODE_RATE)


async def transcribe_voice_message(data: bytes, stt: STT, *, language: str | None = None) -> str:
    """The words of a voice message's attachment bytes ("" when nothing was said)."""
    audio = await asyncio.to_thread(decode_voice_message, data)
    transcript = await stt.transcribe(audio, language=language)
    return transcript.text
