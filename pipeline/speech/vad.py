"""Silero VAD (the ONNX model faster-whisper ships) on onnxruntime, one stream per speaker.

The model scores 32 ms windows (512 samples at 16 kHz) with the 64 samples before each as
context, and carries a recurrent state from window to window; :class:`VADStream` holds one
speaker's state. One inference session serves every stream (onnxruntime's ``run`` is
thread-safe). No torch.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio import FloatArray
from pipeline.errors import MissingDependencyError

SAMPLE_RATE = 16_000
WINDOW = 512  # samples per decision: 32 ms
WINDOW_MS = WINDOW * 1000 // SAMPLE_RATE
_CONTEXT = 64
_STATE_SHAPE = (1, 1, 128)


def silero_model_path() -> Path:
    """The Silero VAD model inside the faster-whisper package."""
    for module in ("faster_whisper", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            package = module.replace("_", "-")
            raise MissingDependencyError("voice activity detection", package=package, extra="voice")
    from faster_whisper.utils import get_assets_path

    return Path(get_assets_path()) / "silero_vad_v6.onnx"


class SileroVAD:
    """The model, loaded on first use (or by :meth:`load`, off the event loop)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._session: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model now (blocking: call it in a worker thread)."""
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = 1
            options.log_severity_level = 4
            self._session = onnxruntime.InferenceSession(
                str(self._path or silero_model_path()),
                providers=["CPUExecutionProvider"],
                sess_options=options,
            )

    def stream(self) -> VADStream:
        """A new speaker's stream of decisions."""
        return VADStream(self)

    def _run(self, window: FloatArray, h: FloatArray, c: FloatArray) -> tuple[float, Any, Any]:
        if self._session is None:
            self.load()
        probability, h, c = self._session.run(None, {"input": window, "h": h, "c": c})
        return float(np.asarray(probability).reshape(-1)[0]), h, c


class VADStream:
    """One speaker's voice activity, window by window."""

    def __init__(self, vad: SileroVAD) -> None:
        self._vad = vad
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)

    def probability(self, window: FloatArray) -> float:
        """How likely the 512 samples (16 kHz) of ``window`` are speech, 0..1."""
        if len(window) != WINDOW:
            raise ValueError(f"a VAD window is {WINDOW} samples, not {len(window)}")
        batch = np.concatenate([self._context, window]).astype(np.float32).reshape(1, -1)
        probability, self._h, self._c = self._vad._run(batch, self._h, self._c)
        self._context = window[-_CONTEXT:].astype(np.float32)
        return probability
