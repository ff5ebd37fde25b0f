"""The ``wav2lip`` renderer: Wav2Lip's generated mouth pasted into a still avatar.

Per avatar (once, cached): the avatar is fitted to the square output frame over its
background, the face box is taken from its geometry (declared in persona.toml or found by the
Haar cascade) and widened at the chin, the 96x96 crop is turned into the generator's face input
(the crop with its lower half blanked, stacked on the crop itself), and — the avatar being
still — the face encoder runs on it once. Per batch of frames only the audio encoder and the
face decoder run, on torch (CUDA or CPU) or on ONNX Runtime (CPU, from a graph exported once
and cached on disk). Each generated face is scaled back to the face box and blended in with a
feathered mask that covers the lower face only, so the eyes keep the avatar's full sharpness
and nothing outside the face box ever changes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import numpy.typing as npt

from lipsync.audio_features import frame_count
from lipsync.avatar import (
    HAAR_EYES,
    HAAR_MOUTH,
    HAAR_MOUTH_WIDTH,
    RGB,
    Avatar,
    FaceGeometry,
    fit_avatar,
    hex_to_rgb,
)
from lipsync.cache import PreparedCache
from lipsync.errors import AvatarError
from lipsync.renderer import Frame
from lipsync.wav2lip.audio import (
    SAMPLE_RATE,
    FloatArray,
    mel_window,
    melspectrogram,
    resample,
)

if TYPE_CHECKING:
    from lipsync.wav2lip.model import Wav2Lip

Device = Literal["auto", "cuda", "cpu"]
Runtime = Literal["auto", "torch", "onnx"]

FACE_SIZE = 96  # the generator's face crop, pixels
CHIN_PAD = 0.1  # the face box grows by this fraction of its height below a Haar-style box
FEATHER = 0.12  # blend ramp at the box edges, as a fraction of the box's smaller side
LOWER_FACE = (0.42, 0.58)  # the mask fades in between these fractions of the box height
CACHE_SIZE = 8
EXPORT_VERSION = 1  # bump when the exported graph changes, to invalidate cached files
FACE_FEATURES = 7  # face encoder blocks, one skip connection each


@dataclass(frozen=True, kw_only=True)
class PreparedFace:
    """An avatar made ready for the generator: everything that does not depend on the audio."""

    base: Frame  # the avatar fitted to the output frame over its background
    box: tuple[int, int, int, int]  # the face crop (x0, y0, x1, y1) in frame pixels
    mask: npt.NDArray[np.float32]  # (y1 - y0, x1 - x0, 1) blend weight of the generated face
    features: tuple[FloatArray, ...]  # the face encoder's outputs for the face input, batch 1


class Generator(Protocol):
    """One runtime of the Wav2Lip generator, fed and answering numpy arrays."""

    def encode_face(self, faces: FloatArray) -> tuple[FloatArray, ...]: ...

    def decode(self, mels: FloatArray, features: Sequence[FloatArray]) -> FloatArray: ...


def default_cache_dir() -> Path:
    """Where exported ONNX graphs are kept: ``$XDG_CACHE_HOME/lipcast/wav2lip``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "lipcast" / "wav2lip"


class Wav2LipRenderer:
    """Lip-synced frames of a still avatar from the Wav2Lip generator.

    Nothing is loaded when the renderer is made: the checkpoint is read, and on the ONNX
    runtime exported, on the first :meth:`render` (or an explicit :meth:`load`).
    ``face_encodings`` counts how often the face encoder has run (once per avatar and
    background while it stays in the cache).
    """

    name = "wav2lip"

    def __init__(
        self,
        *,
        checkpoint: Path,
        fps: int = 25,
        size: int = 512,
        background: str = "#00b140",
        device: Device = "auto",
        runtime: Runtime = "auto",
        batch_size: int = 8,
        cache_dir: Path | None = None,
        generator: Generator | None = None,
    ) -> None:
        if runtime == "onnx" and device == "cuda":
            raise ValueError(
                "the onnx runtime runs on the CPU: use device 'cpu' or runtime 'torch'"
            )
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.fps = fps
        self.size = size
        self.background = hex_to_rgb(background)
        self.checkpoint = checkpoint
        self.device: Device = device
        self.runtime: Runtime = runtime
        self.batch_size = batch_size
        self.cache_dir = cache_dir or default_cache_dir()
        self.face_encodings = 0
        self._generator: Generator | None = generator  # given: used as is (benchmarks)
        self._load_lock = threading.Lock()
        self._cache: PreparedCache[PreparedFace] = PreparedCache(CACHE_SIZE)
        self._count_lock = threading.Lock()

    def load(self) -> Generator:
        """Read the checkpoint and start the runtime (once; later calls return it)."""
        with self._load_lock:
            if self._generator is None:
                self._generator = self._start()
            return self._generator

    def _start(self) -> Generator:
        import torch

        from lipsync.wav2lip import load_model

        device = self.device
        if device == "auto":
            device = "cuda" if self.runtime != "onnx" and torch.cuda.is_available() else "cpu"
        runtime = self.runtime
        if runtime == "auto":
            runtime = "torch" if device == "cuda" else "onnx"
        model = load_model(self.checkpoint, device)
        if runtime == "torch":
            return TorchGenerator(model, device)
        path = export_onnx(model, self.checkpoint, self.cache_dir)
        return OnnxGenerator(model, path)

    def prepare(self, avatar: Avatar, background: RGB | None = None) -> PreparedFace:
        """The avatar's frame, face box, blend mask and face features (cached)."""
        colour = background or self.background
        return self._cache.get_or_make((avatar.key, colour), lambda: self._prepare(avatar, colour))

    def _prepare(self, avatar: Avatar, colour: RGB) -> PreparedFace:
        generator = self.load()
        base, geometry = fit_avatar(avatar, self.size, colour)
        box = face_box(geometry, self.size)
        features = generator.encode_face(face_input(base, box))
        with self._count_lock:
            self.face_encodings += 1
        return PreparedFace(base=base, box=box, mask=blend_mask(box), features=features)

    def render(
        self,
        samples: npt.NDArray[np.float32],
        sample_rate: int,
        avatar: Avatar,
        *,
        start_frame: int = 0,
        background: RGB | None = None,
    ) -> Iterator[Frame]:
        """Frames at ``fps`` covering the audio exactly (``round(duration * fps)``, at least 1).

        ``start_frame`` is accepted for the interface; a still avatar has no motion to continue.
        """
        del start_frame
        prepared = self.prepare(avatar, background)
        generator = self.load()
        total = frame_count(len(samples), sample_rate, self.fps)
        mel = melspectrogram(resample(samples, sample_rate, SAMPLE_RATE))
        for first in range(0, total, self.batch_size):
            indices = range(first, min(total, first + self.batch_size))
            mels = np.stack([mel_window(mel, index, self.fps) for index in indices])[:, None]
            faces = generator.decode(mels, prepared.features)
            for face in faces:
                yield paste_face(prepared, face)


def face_box(geometry: FaceGeometry, size: int) -> tuple[int, int, int, int]:
    """The face crop ``(x0, y0, x1, y1)``: the Haar-style box the geometry implies, plus chin.

    Detected geometry came from a Haar box by fixed proportions; inverting them gives that box
    back, and declared geometry gets the box a detector would have drawn. Wav2Lip was trained on
    face-detector crops padded below the chin, so the box grows downwards by ``CHIN_PAD``.
    """
    mouth_x, mouth_y = geometry.mouth
    eyes_y = (geometry.eyes[0][1] + geometry.eyes[1][1]) / 2
    width = geometry.mouth_width / HAAR_MOUTH_WIDTH
    height = max(1.0, (mouth_y - eyes_y) / (HAAR_MOUTH[1] - HAAR_EYES[0][1]))
    x0 = mouth_x - HAAR_MOUTH[0] * width
    y0 = mouth_y - HAAR_MOUTH[1] * height
    x1, y1 = x0 + width, y0 + height * (1 + CHIN_PAD)
    left, top = max(0, round(x0)), max(0, round(y0))
    right, bottom = min(size, round(x1)), min(size, round(y1))
    if right - left < 8 or bottom - top < 8:
        raise AvatarError(
            f"the face on the avatar is too small to lip-sync at {size}x{size} pixels "
            f"(face box {left, top, right, bottom}); use a larger face or a larger [render] size"
        )
    return (left, top, right, bottom)


def face_input(base: Frame, box: tuple[int, int, int, int]) -> FloatArray:
    """The generator's face input ``(1, 6, 96, 96)``: masked crop and reference, BGR in 0..1."""
    import cv2

    x0, y0, x1, y1 = box
    crop = base[y0:y1, x0:x1]
    shrink = crop.shape[0] > FACE_SIZE or crop.shape[1] > FACE_SIZE
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    face = cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=interpolation)
    reference = face[..., ::-1].astype(np.float32) / 255.0  # the checkpoints were trained on BGR
    masked = reference.copy()
    masked[FACE_SIZE // 2 :] = 0.0
    stacked = np.concatenate([masked, reference], axis=2)  # (96, 96, 6)
    return np.ascontiguousarray(stacked.transpose(2, 0, 1)[None], dtype=np.float32)


def blend_mask(box: tuple[int, int, int, int]) -> npt.NDArray[np.float32]:
    """Blend weights of the generated face over its box: feathered edges, lower face only.

    The generator redraws the whole crop, but its upper half is only a 96-pixel copy of the
    reference; keeping the avatar's own pixels there keeps the eyes sharp.
    """
    x0, y0, x1, y1 = box
    height, width = y1 - y0, x1 - x0
    feather = max(2.0, FEATHER * min(width, height))
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32) + 0.5
    across = np.clip(np.minimum(xs, width - xs) / feather, 0.0, 1.0)
    down = np.clip(np.minimum(ys, height - ys) / feather, 0.0, 1.0)
    start, end = LOWER_FACE[0] * height, LOWER_FACE[1] * height
    down *= np.clip((ys - start) / max(1.0, end - start), 0.0, 1.0)
    # smoothstep: no visible seam where the ramps end
    mask = np.outer(down, across)
    mask = mask * mask * (3.0 - 2.0 * mask)
    return mask[..., None].astype(np.float32)


def paste_face(prepared: PreparedFace, face: FloatArray) -> Frame:
    """The avatar frame with a generated face ``(3, 96, 96)`` (BGR, 0..1) blended into its box."""
    import cv2

    x0, y0, x1, y1 = prepared.box
    rgb = np.clip(face.transpose(1, 2, 0)[..., ::-1] * 255.0, 0.0, 255.0).astype(np.float32)
    scaled = cv2.resize(rgb, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    frame = prepared.base.copy()
    region = frame[y0:y1, x0:x1].astype(np.float32)
    mixed = region + (scaled - region) * prepared.mask
    frame[y0:y1, x0:x1] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return frame


class TorchGenerator:
    """The generator on torch, on CUDA or the CPU; ``half`` runs it in float16 (CUDA only).

    ``half`` converts ``model`` itself.
    """

    def __init__(self, model: Wav2Lip, device: str, *, half: bool = False) -> None:
        import torch

        self.model = model.half() if half else model
        self.device = device
        self.dtype = torch.float16 if half else torch.float32

    def encode_face(self, faces: FloatArray) -> tuple[FloatArray, ...]:
        import torch

        with torch.inference_mode():
            features = self.model.encode_face(torch.from_numpy(faces).to(self.device, self.dtype))
            return tuple(np.asarray(f.float().cpu().numpy(), np.float32) for f in features)

    def decode(self, mels: FloatArray, features: Sequence[FloatArray]) -> FloatArray:
        import torch

        with torch.inference_mode():
            skips = [torch.from_numpy(f).to(self.device, self.dtype) for f in features]
            faces = self.model.decode(torch.from_numpy(mels).to(self.device, self.dtype), skips)
            return np.asarray(faces.float().cpu().numpy(), np.float32)


class OnnxGenerator:
    """The per-frame decoder on ONNX Runtime (CPU); the face encoder, run once, on torch."""

    def __init__(self, model: Wav2Lip, path: Path) -> None:
        import onnxruntime

        self._torch = TorchGenerator(model, "cpu")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    def encode_face(self, faces: FloatArray) -> tuple[FloatArray, ...]:
        return self._torch.encode_face(faces)

    def decode(self, mels: FloatArray, features: Sequence[FloatArray]) -> FloatArray:
        feeds = {"mels": mels, **{f"face{i}": f for i, f in enumerate(features)}}
        (faces,) = self.session.run(["faces"], feeds)
        return np.asarray(faces, np.float32)


def onnx_path(checkpoint: Path, cache_dir: Path) -> Path:
    """Where the decoder exported from ``checkpoint`` is cached (new when the file changes)."""
    import torch

    stat = checkpoint.stat()
    identity = (
        f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:"
        f"{torch.__version__}:{EXPORT_VERSION}"
    )
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_dir / f"{checkpoint.stem}-decoder-{digest}.onnx"


def export_onnx(model: Wav2Lip, checkpoint: Path, cache_dir: Path) -> Path:
    """The decoder of ``model`` as an ONNX graph file, exported once per checkpoint file.

    Inputs: ``mels`` (B, 1, 80, 16) and ``face0``..``face6``, the face encoder's outputs with
    batch 1 (broadcast inside the graph); output ``faces`` (B, 3, 96, 96).
    """
    import torch

    from lipsync.wav2lip.model import Wav2LipDecoder

    path = onnx_path(checkpoint, cache_dir)
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    decoder = Wav2LipDecoder(model).eval()
    param = next(model.parameters())
    mels = torch.zeros(2, 1, 80, 16, device=param.device)
    with torch.inference_mode():
        faces = torch.zeros(1, 6, FACE_SIZE, FACE_SIZE, device=param.device)
        features = [f.clone() for f in model.encode_face(faces)]
    names = [f"face{i}" for i in range(FACE_FEATURES)]
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        with warnings.catch_warnings():
            # the TorchScript-based exporter warns that it is deprecated; it needs only `onnx`
            warnings.simplefilter("ignore")
            torch.onnx.export(
                decoder,
                (mels, *features),
                str(partial),
                input_names=["mels", *names],
                output_names=["faces"],
                dynamic_axes={"mels": {0: "batch"}, "faces": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
