"""Wav2Lip's audio features: constants and pure numpy functions.

The mel spectrogram is the one the published checkpoints were trained on (Wav2Lip's
``hparams.py`` and ``audio.py``): 16 kHz audio, pre-emphasis 0.97, a centred STFT with a
periodic Hann window (n_fft 800, hop 200, win 800, reflect padding), 80 Slaney mel bands over
55–7600 Hz, decibels relative to 20 dB with a floor of -100 dB, scaled symmetrically to ±4.
A frame of video at ``fps`` sees 16 mel steps starting at ``frame * 80 / fps``.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

SAMPLE_RATE = 16_000
N_FFT = 800
HOP_LENGTH = 200  # 12.5 ms: 80 mel steps per second
WIN_LENGTH = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_STEPS_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 80
MEL_WINDOW = 16  # mel steps the generator sees per video frame (0.2 s)


def hz_to_mel(frequencies: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = hz / f_sp
    logarithmic = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, logarithmic, linear)


def mel_to_hz(mels: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = mel * f_sp
    logarithmic = min_log_hz * np.exp(logstep * (np.maximum(mel, min_log_mel) - min_log_mel))
    return np.where(mel >= min_log_mel, logarithmic, linear)


@functools.cache
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> FloatArray:
    """Slaney-normalised triangular mel filters ``(n_mels, n_fft // 2 + 1)``.

    The same matrix as ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` (htk=False,
    norm="slaney"): triangles evenly spaced on the mel scale, each scaled to unit area in Hz.
    """
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.flags.writeable = False
    return weights.astype(np.float32)


def preemphasis(samples: FloatArray, coefficient: float = PREEMPHASIS) -> FloatArray:
    """``y[n] = x[n] - k * x[n - 1]`` with ``y[0] = x[0]`` (scipy's ``lfilter([1, -k], [1])``)."""
    out = samples.astype(np.float32, copy=True)
    out[1:] -= coefficient * samples[:-1]
    return out


def stft_magnitude(samples: FloatArray) -> FloatArray:
    """``|STFT|`` ``(n_fft // 2 + 1, 1 + len // hop)``, frames centred by reflect padding."""
    pad = N_FFT // 2
    # reflect padding needs more samples than the pad; shorter clips are zero-padded instead
    if len(samples) > pad:
        padded = np.pad(samples.astype(np.float32), pad, mode="reflect")
    else:
        padded = np.pad(samples.astype(np.float32), pad, mode="constant")
    count = 1 + len(samples) // HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:count]
    window = np.hanning(WIN_LENGTH + 1)[:-1].astype(np.float32)  # periodic Hann
    return np.abs(np.fft.rfft(frames * window, axis=1)).T.astype(np.float32)


def melspectrogram(samples: FloatArray) -> FloatArray:
    """The normalised mel spectrogram ``(80, 1 + len // 200)`` of 16 kHz mono audio, in ±4."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    mel = mel_filterbank() @ stft_magnitude(preemphasis(samples))
    min_level = 10.0 ** (MIN_LEVEL_DB / 20.0)
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    scaled = (2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.asarray(np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE), dtype=np.float32)


def mel_window(mel: FloatArray, frame: int, fps: float) -> FloatArray:
    """The 16 mel steps video frame ``frame`` sees ``(80, 16)``, as Wav2Lip's inference cuts them.

    The window starts at ``int(frame * 80 / fps)``; near the end it is clamped to the last 16
    steps, and a spectrogram shorter than 16 steps is padded with silence (-4).
    """
    steps = mel.shape[1]
    if steps < MEL_WINDOW:
        silence = np.full((mel.shape[0], MEL_WINDOW - steps), -MAX_ABS_VALUE, np.float32)
        mel = np.concatenate([mel, silence], axis=1)
        steps = MEL_WINDOW
    start = min(int(frame * MEL_STEPS_PER_SECOND / fps), steps - MEL_WINDOW)
    return np.ascontiguousarray(mel[:, start : start + MEL_WINDOW], dtype=np.float32)


def resample(samples: FloatArray, sample_rate: int, target: int = SAMPLE_RATE) -> FloatArray:
    """Mono float samples resampled to ``target`` Hz with FFmpeg's resampler (PyAV)."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sample_rate == target or len(samples) == 0:
        return samples
    import av

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = 0
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    parts = [
        f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]
    ]
    out = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return out.astype(np.float32, copy=False)
