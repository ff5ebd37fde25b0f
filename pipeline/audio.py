"""Audio as it travels between TTS, STT and the renderers: mono float32 samples and a rate."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.errors import InputError

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, kw_only=True)
class AudioChunk:
    """A piece of mono audio: float32 samples in [-1, 1] at ``sample_rate`` Hz."""

    samples: FloatArray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    @classmethod
    def from_pcm16(cls, data: bytes, sample_rate: int) -> AudioChunk:
        """Build a chunk from little-endian signed 16-bit mono PCM."""
        if len(data) % 2:
            data = data[:-1]
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        return cls(samples=samples, sample_rate=sample_rate)

    def to_pcm16(self) -> bytes:
        clipped = np.clip(self.samples, -1.0, 1.0)
        return (clipped * 32767.0).astype("<i2").tobytes()


def concat(chunks: list[AudioChunk]) -> AudioChunk:
    """Join chunks of one rate into one; an empty list is an error, not silence."""
    if not chunks:
        raise InputError("no audio was produced")
    rate = chunks[0].sample_rate
    if any(chunk.sample_rate != rate for chunk in chunks):
        raise InputError("audio chunks of different sample rates cannot be joined")
    return AudioChunk(
        samples=np.concatenate([chunk.samples for chunk in chunks]).astype(np.float32),
        sample_rate=rate,
    )


def read_wav(data: bytes) -> AudioChunk:
    """Decode a PCM WAV file (8/16/32-bit, any channel count; channels are averaged)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, RuntimeError) as err:  # a chunk size past the data: RuntimeError
        raise InputError(f"not a readable PCM WAV file: {err}") from err
    dtypes: dict[int, np.dtype[np.integer]] = {
        1: np.dtype(np.uint8),
        2: np.dtype("<i2"),
        4: np.dtype("<i4"),
    }
    if width not in dtypes:
        raise InputError(f"unsupported WAV sample width: {width * 8} bit")
    usable = len(frames) - len(frames) % (width * channels)
    raw = np.frombuffer(frames[:usable], dtype=dtypes[width])
    if width == 1:
        samples = (raw.astype(np.float32) - 128.0) / 128.0
    else:
        samples = raw.astype(np.float32) / float(2 ** (8 * width - 1))
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return AudioChunk(samples=samples.astype(np.float32), sample_rate=rate)


def write_wav(chunk: AudioChunk) -> bytes:
    """Encode a chunk as 16-bit mono WAV."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(chunk.sample_rate)
        wav.writeframes(chunk.to_pcm16())
    return buffer.getvalue()
