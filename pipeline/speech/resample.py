"""Sample-rate and channel conversion with FFmpeg's resampler (through PyAV, a core dependency).

Whisper wants 16 kHz mono, Silero VAD 16 kHz mono, Discord 48 kHz stereo 16-bit; TTS voices
speak at 16-24 kHz. A plain linear interpolation would alias; swresample filters properly.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pipeline.audio import AudioChunk, FloatArray


def resample(audio: AudioChunk, rate: int) -> AudioChunk:
    """``audio`` at ``rate`` Hz (mono float32); the same object when the rate already matches."""
    if audio.sample_rate == rate:
        return audio
    if len(audio.samples) == 0:
        return AudioChunk(samples=np.zeros(0, dtype=np.float32), sample_rate=rate)
    import av

    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(audio.samples, dtype=np.float32).reshape(1, -1),
        format="flt",
        layout="mono",
    )
    frame.sample_rate = audio.sample_rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    parts = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    samples: FloatArray = (
        np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)
    )
    return AudioChunk(samples=samples, sample_rate=rate)


def to_stereo_pcm16(audio: AudioChunk, rate: int = 48_000) -> bytes:
    """``audio`` as interleaved 16-bit little-endian stereo PCM at ``rate`` (Discord's format)."""
    mono = resample(audio, rate).samples
    pcm: npt.NDArray[np.int16] = (np.clip(mono, -1.0, 1.0) * 32767.0).astype("<i2")
    return np.repeat(pcm, 2).tobytes()


def from_stereo_pcm16(data: bytes) -> FloatArray:
    """Interleaved 16-bit stereo PCM as mono float32 samples (the channels averaged)."""
    usable = len(data) - len(data) % 4
    pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32).reshape(-1, 2)
    mono: FloatArray = (pcm.mean(axis=1) / 32768.0).astype(np.float32)
    return mono


class StreamResampler:
    """Converts a stream of 16-bit interleaved PCM frames, frame by frame, to mono float32 at
    another rate, with the resampler's filter state carried across frames (one per speaker)."""

    def __init__(self, *, in_rate: int = 48_000, in_channels: int = 2, out_rate: int = 16_000):
        import av

        self._in_rate = in_rate
        self._layout = {1: "mono", 2: "stereo"}[in_channels]
        self._channels = in_channels
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=out_rate)

    def push(self, pcm: bytes) -> FloatArray:
        """Resample one piece of PCM; returns what the resampler has ready (may be empty)."""
        import av

        usable = len(pcm) - len(pcm) % (2 * self._channels)
        samples = np.frombuffer(pcm[:usable], dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=self._layout)
        frame.sample_rate = self._in_rate
        parts = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        if not parts:
            return np.zeros(0, dtype=np.float32)
        out: FloatArray = np.concatenate(parts).astype(np.float32)
        return out
