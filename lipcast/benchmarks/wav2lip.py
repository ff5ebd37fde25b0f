"""``lipcast bench wav2lip``: frames per second of the Wav2Lip generator and of the renderer.

No Wav2Lip weights can be had offline, so the benchmark makes a generator with random weights
in the published architecture (36.3 M parameters), saves it in the public checkpoint format
(``{"state_dict": ...}`` with DataParallel's ``module.`` prefix) and loads it through the
renderer's own loader. Speed does not depend on the weights' values; the JSON says
``"weights": "random"``.

Backends, each at every batch size (frames per generator call):

- ``torch_eager``: the whole generator per batch, the face encoder included, as the reference
  ``inference.py`` runs it;
- ``torch_cached``: the face encoder once per avatar, then per batch only the audio encoder and
  the decoder (``runtime = "torch"``);
- ``onnxruntime``: that decoder exported to ONNX and run by ONNX Runtime on the CPU
  (``runtime = "onnx"``).

On a CUDA device the torch backends run in float32 and float16. ``generator_fps`` times the
generator alone on random mel windows; ``renderer_fps`` the whole renderer on speech: mel
features, inference, pasting the face back into the persona's frame, and H.264 encoding.
``ratio_to_torch_eager`` is ``renderer_fps`` over torch eager's at the same device, batch and
precision, measured in the same run (``generator_ratio_to_torch_eager`` likewise).
``renderer_cpu_use`` is the CPU time the process used per second of that measurement: about
the number of cores it kept busy, far less when other programs held them.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipcast.wiring import encode_options, persona_from_settings
from lipsync.audio_features import frame_count
from lipsync.encode import encode_mp4_bytes
from lipsync.wav2lip.audio import FloatArray
from pipeline.audio import AudioChunk, concat
from pipeline.jobs.render import avatar_for
from pipeline.services.tts import Voice

if TYPE_CHECKING:
    from lipcast.cli import Context
    from lipsync.avatar import RGB, Avatar
    from lipsync.encode import EncodeOptions
    from lipsync.wav2lip.model import Wav2Lip
    from lipsync.wav2lip.renderer import Generator, Wav2LipRenderer

HELP = "frames per second of the wav2lip generator and renderer: torch, cached, ONNX (JSON)"

LINE = (
    "Welcome back, everyone. Tonight we are trying the final boss again, and I have a good "
    "feeling about it."
)
FEATURE_SHAPES = ((16, 96), (32, 48), (64, 24), (128, 12), (256, 6), (512, 3), (512, 1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batches",
        default="1,2,4,8,16,32",
        help="comma-separated batch sizes (default: 1,2,4,8,16,32)",
    )
    parser.add_argument(
        "--frames", type=int, default=64, help="frames per generator measurement (default 64)"
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="measurements per figure, best kept (default 2)"
    )
    parser.add_argument("--persona", help="persona whose avatar is rendered (default: bot.toml)")
    parser.add_argument("--text", default=LINE, help="the line spoken for renderer_fps")


@dataclass(frozen=True)
class _Backend:
    name: str
    device: str
    half: bool
    make: Callable[[], Generator]


class _EagerTorch:
    """The whole generator per batch: the face encoder runs again for every batch."""

    def __init__(self, model: Wav2Lip, device: str, *, half: bool) -> None:
        import torch

        self.model = model.half() if half else model
        self.device = device
        self.dtype = torch.float16 if half else torch.float32

    def encode_face(self, faces: FloatArray) -> tuple[FloatArray, ...]:
        return (faces,)  # kept as the input; encoded with every batch in decode

    def decode(self, mels: FloatArray, features: Sequence[FloatArray]) -> FloatArray:
        import torch

        with torch.inference_mode():
            mel = torch.from_numpy(mels).to(self.device, self.dtype)
            face = torch.from_numpy(features[0]).to(self.device, self.dtype)
            out = self.model(mel, face.expand(mel.shape[0], -1, -1, -1))
            return np.asarray(out.float().cpu().numpy(), np.float32)


def _random_checkpoint(folder: Path) -> Path:
    """A random-init generator in the public checkpoint format (batch norms not at defaults)."""
    import torch

    from lipsync.wav2lip.model import Wav2Lip

    torch.manual_seed(0)
    model = Wav2Lip()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    path = folder / "wav2lip_gan.pth"
    torch.save({"state_dict": state, "global_step": 0, "global_epoch": 0}, path)
    return path


def _backends(checkpoint: Path, cache_dir: Path) -> list[_Backend]:
    import torch

    from lipsync.wav2lip import load_model
    from lipsync.wav2lip.renderer import OnnxGenerator, TorchGenerator, export_onnx

    def onnx() -> Generator:
        model = load_model(checkpoint, "cpu")
        return OnnxGenerator(model, export_onnx(model, checkpoint, cache_dir))

    def eager(device: str, half: bool) -> Callable[[], Generator]:
        return lambda: _EagerTorch(load_model(checkpoint, device), device, half=half)

    def cached(device: str, half: bool) -> Callable[[], Generator]:
        return lambda: TorchGenerator(load_model(checkpoint, device), device, half=half)

    found = [
        _Backend("torch_eager", "cpu", False, eager("cpu", False)),
        _Backend("torch_cached", "cpu", False, cached("cpu", False)),
        _Backend("onnxruntime", "cpu", False, onnx),
    ]
    if torch.cuda.is_available():
        for half in (False, True):
            found.append(_Backend("torch_eager", "cuda", half, eager("cuda", half)))
            found.append(_Backend("torch_cached", "cuda", half, cached("cuda", half)))
    return found


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _generator_fps(
    generator: Generator, face: FloatArray, batch: int, frames: int, repeat: int, device: str
) -> float:
    rng = np.random.default_rng(0)
    features = generator.encode_face(face)
    calls = max(1, round(frames / batch))
    mels = rng.uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32)
    generator.decode(mels, features)  # warm-up: first-call allocations and kernel choice
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        started = time.perf_counter()
        for _ in range(calls):
            generator.decode(mels, features)
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return calls * batch / best


def run(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    import importlib.util

    for module in ("torch", "onnxruntime", "onnx"):
        if importlib.util.find_spec(module) is None:
            from pipeline.errors import MissingDependencyError

            raise MissingDependencyError("lipcast bench wav2lip", package=module, extra="wav2lip")
    try:
        batches = sorted({int(part) for part in str(args.batches).split(",") if part.strip()})
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        from pipeline.errors import InputError

        raise InputError(f"--batches {args.batches!r}: give batch sizes such as 1,2,4,8,16,32")
    with tempfile.TemporaryDirectory(prefix="lipcast-bench-wav2lip-") as folder:
        return _bench(args, context, batches, Path(folder))


def _speech(text: str, language: str) -> AudioChunk:
    from pipeline.services.tts.espeak import EspeakTTS

    async def speak() -> AudioChunk:
        tts = EspeakTTS()
        try:
            return concat([chunk async for chunk in tts.synthesize(text, Voice(language=language))])
        finally:
            await tts.aclose()

    return asyncio.run(speak())


def _bench(
    args: argparse.Namespace, context: Context, batches: list[int], folder: Path
) -> dict[str, Any]:
    import torch

    from lipsync.avatar import hex_to_rgb
    from lipsync.wav2lip.renderer import Wav2LipRenderer, face_input

    settings = context.settings
    persona = persona_from_settings(settings, args.persona)
    avatar = avatar_for(persona)
    background = hex_to_rgb(persona.spec.avatar.background)
    audio = _speech(args.text, persona.language)
    options = encode_options(settings)
    size, fps = settings.render.size, settings.render.fps
    checkpoint = _random_checkpoint(folder)
    cache_dir = folder / "onnx"

    runs: list[dict[str, Any]] = []
    eager: dict[tuple[str, bool, int], tuple[float, float]] = {}
    for backend in _backends(checkpoint, cache_dir):
        generator = backend.make()
        renderer = Wav2LipRenderer(
            checkpoint=checkpoint, fps=fps, size=size, device="cpu", generator=generator
        )
        prepared = renderer.prepare(avatar, background)
        face = face_input(prepared.base, prepared.box)
        for batch in batches:
            renderer.batch_size = batch
            generator_fps = _generator_fps(
                generator, face, batch, args.frames, args.repeat, backend.device
            )
            renderer_fps, cpu_use = _renderer_fps(
                renderer, avatar, background, audio, options, args.repeat
            )
            key = (backend.device, backend.half, batch)
            if backend.name == "torch_eager":
                eager[key] = (generator_fps, renderer_fps)
            base = eager.get(key)
            runs.append(
                {
                    "backend": backend.name,
                    "device": backend.device,
                    "precision": "float16" if backend.half else "float32",
                    "batch": batch,
                    "generator_fps": round(generator_fps, 1),
                    "renderer_fps": round(renderer_fps, 1),
                    "ratio_to_torch_eager": round(renderer_fps / base[1], 2) if base else None,
                    "generator_ratio_to_torch_eager": (
                        round(generator_fps / base[0], 2) if base else None
                    ),
                    "renderer_cpu_use": round(cpu_use, 2),
                }
            )
        del generator, renderer
    best_onnx = max(
        (run["renderer_fps"] for run in runs if run["backend"] == "onnxruntime"), default=0.0
    )
    return {
        "benchmark": "wav2lip",
        "weights": "random (the published architecture and checkpoint format; no trained "
        "weights offline — speed does not depend on their values)",
        "persona": persona.id,
        "size": f"{size}x{size}",
        "fps": fps,
        "clip_seconds": round(audio.duration_s, 2),
        "encoder": f"libx264 {options.preset} crf {options.crf}",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "runs": runs,
        "best_onnxruntime_renderer_fps": best_onnx,
        "target": {"onnxruntime_renderer_fps": float(fps), "met": best_onnx >= fps},
    }


def _renderer_fps(
    renderer: Wav2LipRenderer,
    avatar: Avatar,
    background: RGB,
    audio: AudioChunk,
    options: EncodeOptions,
    repeat: int,
) -> tuple[float, float]:
    """Frames per second of rendering and encoding ``audio``, frames streamed to the encoder,
    and the CPU time the process used per second meanwhile (about the number of cores it
    kept busy; far less means that other programs had the cores)."""
    best, cpu_use = float("inf"), 0.0
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        frames = renderer.render(audio.samples, audio.sample_rate, avatar, background=background)
        encode_mp4_bytes(frames, audio.samples, audio.sample_rate, options)
        seconds = time.perf_counter() - started
        if seconds < best:
            best, cpu_use = seconds, (time.process_time() - cpu) / seconds
    return frame_count(len(audio.samples), audio.sample_rate, renderer.fps) / best, cpu_use
