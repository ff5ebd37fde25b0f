"""The wav2lip renderer: reference mel features, the published generator, checkpoints, frames.

No public Wav2Lip weights can be had offline, so the checkpoints here are random-init
generators the tests save in the public format (``{"state_dict": ...}``, with and without
``module.``). What they check does not depend on trained weights: shapes, counts, which pixels
may change, that torch and ONNX Runtime compute the same thing, and that work is cached.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

if os.environ.get("CI") == "true":  # CI installs the wav2lip extra: a missing package fails
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import torch
else:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

import torch

from lipcast.config import parse_settings
from lipcast.wiring import build_renderer
from lipsync.audio_features import frame_count
from lipsync.avatar import Avatar, load_avatar
from lipsync.wav2lip import CheckpointError, load_model
from lipsync.wav2lip.audio import (
    MAX_ABS_VALUE,
    mel_filterbank,
    mel_window,
    melspectrogram,
    resample,
)
from lipsync.wav2lip.model import Wav2Lip
from lipsync.wav2lip.renderer import Wav2LipRenderer
from pipeline.errors import ConfigError, MissingDependencyError

ASSETS = Path(__file__).parent / "assets"
FloatArray = npt.NDArray[np.float32]


def tone(frequency: float, seconds: float, rate: int = 16_000, level: float = 0.5) -> FloatArray:
    t = np.arange(round(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def speechlike(seconds: float, rate: int) -> FloatArray:
    """A voiced buzz whose loudness comes and goes three times a second, like syllables."""
    t = np.arange(round(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return (0.25 * buzz * envelope).astype(np.float32)


def random_generator(seed: int = 0) -> Wav2Lip:
    """A random-init generator whose batch-norm statistics are not the defaults either."""
    torch.manual_seed(seed)
    model = Wav2Lip()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def save_checkpoint(model: Wav2Lip, path: Path, *, prefix: str = "") -> Path:
    state = {prefix + key: value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 1, "global_epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wav2lip")
    return save_checkpoint(random_generator(), folder / "wav2lip_gan.pth", prefix="module.")


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return load_avatar(ASSETS / "face-astronaut.png")


@pytest.fixture(scope="module")
def torch_renderer(checkpoint: Path) -> Wav2LipRenderer:
    return Wav2LipRenderer(checkpoint=checkpoint, device="cpu", runtime="torch", size=512)


@pytest.fixture(scope="module")
def onnx_renderer(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Wav2LipRenderer:
    cache = tmp_path_factory.mktemp("onnx-cache")
    return Wav2LipRenderer(checkpoint=checkpoint, runtime="onnx", size=512, cache_dir=cache)


# -- mel features ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", [200, 799, 3200, 16_000, 16_123])
def test_mel_has_80_bands_and_one_step_per_hop(length: int) -> None:
    mel = melspectrogram(tone(440, length / 16_000))
    assert mel.shape == (80, 1 + length // 200)
    assert mel.dtype == np.float32
    assert mel.min() >= -MAX_ABS_VALUE and mel.max() <= MAX_ABS_VALUE


def test_silence_is_the_floor_and_loudness_raises_the_level() -> None:
    assert np.all(melspectrogram(np.zeros(8000, np.float32)) == -MAX_ABS_VALUE)
    quiet = melspectrogram(tone(1000, 0.5, level=0.01)).max()
    loud = melspectrogram(tone(1000, 0.5, level=0.5)).max()
    assert -MAX_ABS_VALUE < quiet < loud <= MAX_ABS_VALUE
    # 20*log10(50) = 34 dB apart, scaled by 8/100 per dB: about 2.7 apart
    assert loud - quiet == pytest.approx(8 * 20 * math.log10(50) / 100, abs=0.1)


def test_a_1khz_tone_peaks_in_the_slaney_mel_band_around_1khz() -> None:
    # Slaney's scale is linear up to 1 kHz (mel 15 there, 3 mels per 200 Hz), log above
    def to_mel(hz: float) -> float:
        return hz * 3 / 200 if hz < 1000 else 15 + math.log(hz / 1000) * 27 / math.log(6.4)

    low, high = to_mel(55), to_mel(7600)
    centres = [low + (high - low) * (i + 1) / 81 for i in range(80)]
    expected = min(range(80), key=lambda i: abs(centres[i] - to_mel(1000)))
    mel = melspectrogram(tone(1000, 1.0))
    assert int(np.argmax(mel[:, 10:-10].mean(axis=1))) == expected


def test_mel_filters_are_slaney_normalised_triangles() -> None:
    filters = mel_filterbank()
    assert filters.shape == (80, 401)
    assert np.all(filters >= 0)
    widths = (filters > 0).sum(axis=1)
    # each triangle has unit area in Hz (bins are 20 Hz apart) once it spans enough bins
    areas = filters.sum(axis=1) * 20.0
    assert np.allclose(areas[widths >= 8], 1.0, atol=0.05)
    assert filters[:, : 55 // 20].sum() == 0  # nothing below fmin
    assert filters[:, 7600 // 20 + 1 :].sum() == 0  # nothing above fmax


def test_mel_window_takes_16_steps_at_80_per_second_clamped_at_the_end() -> None:
    mel = np.arange(80 * 50, dtype=np.float32).reshape(80, 50)
    for frame in range(12):
        window = mel_window(mel, frame, fps=25)
        start = min(int(frame * 80 / 25), 50 - 16)
        assert window.shape == (80, 16)
        assert np.array_equal(window, mel[:, start : start + 16])
    assert np.array_equal(mel_window(mel, 1000, fps=30), mel[:, -16:])
    short = mel_window(mel[:, :5], 0, fps=25)
    assert np.array_equal(short[:, :5], mel[:, :5]) and np.all(short[:, 5:] == -MAX_ABS_VALUE)


def test_resampling_keeps_duration_and_pitch() -> None:
    out = resample(tone(440, 1.0, rate=22_050), 22_050)
    assert abs(len(out) - 16_000) <= 32
    spectrum = np.abs(np.fft.rfft(out[:16_000]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1


# -- the generator and its checkpoints ------------------------------------------------------


def test_generator_has_the_published_size_and_shapes() -> None:
    model = Wav2Lip().eval()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(36.3e6, rel=0.005)
    with torch.inference_mode():
        out = model(torch.randn(3, 1, 80, 16), torch.rand(3, 6, 96, 96))
    assert out.shape == (3, 3, 96, 96)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("prefix", ["", "module."])
def test_public_checkpoint_format_loads_strictly(tmp_path: Path, prefix: str) -> None:
    source = random_generator(seed=3)
    path = save_checkpoint(source, tmp_path / "wav2lip.pth", prefix=prefix)
    loaded = load_model(path, "cpu")
    assert not loaded.training
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_checkpoint_with_other_keys_is_refused_with_the_fix(tmp_path: Path) -> None:
    state = Wav2Lip().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["output_block.1.weight"]
    torch.save({"state_dict": state}, tmp_path / "lipsync_expert.pth")
    with pytest.raises(CheckpointError) as caught:
        load_model(tmp_path / "lipsync_expert.pth")
    message = str(caught.value)
    assert "1 keys missing" in message and "'output_block.1.weight'" in message
    assert "1 keys unexpected" in message and "wav2lip_gan.pth" in message


def _garbage(kind: str, folder: Path, checkpoint: Path) -> Path:
    path = folder / "wav2lip_gan.pth"
    if kind == "text":
        path.write_text("wav2lip_gan.pth: see the README for the download link\n")
    elif kind == "csv":
        path.write_text("key,shape\naudio_encoder.0.conv_block.0.weight,32x1x3x3\n")
    elif kind == "html":
        path.write_text(
            "<!DOCTYPE html><html><head><title>wav2lip_gan.pth - OneDrive</title></head>"
            "<body><a href='/download'>Download</a></body></html>"
        )
    elif kind == "random":
        path.write_bytes(np.random.default_rng(7).bytes(4096))
    elif kind == "truncated":
        path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "latin1":
        path.write_bytes("clé: wav2lip\n".encode("latin-1") * 40)
    elif kind == "folder":
        path.mkdir()
    return path


GARBAGE = {
    "text": "a text file",
    "csv": "a text file",
    "html": "a web page",
    "random": "not a PyTorch checkpoint",
    "truncated": "zip archive",
    "empty": "empty",
    "latin1": "not a PyTorch checkpoint",
    "folder": "a folder",
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_any_file_that_is_not_a_checkpoint_is_one_clear_error(
    tmp_path: Path, checkpoint: Path, kind: str
) -> None:
    path = _garbage(kind, tmp_path, checkpoint)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert GARBAGE[kind] in message and "github.com/Rudrabha/Wav2Lip" in message


def test_an_absent_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "absent.pth")


def test_a_checkpoint_holding_no_state_dict_is_refused(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_model(tmp_path / "list.pth")


def _run_lipcast(*args: str, cwd: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "LIPCAST"))}
    result = subprocess.run(
        [sys.executable, "-m", "lipcast", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("kind", ["html", "random"])
def test_say_and_doctor_report_a_garbage_checkpoint_in_one_line(
    tmp_path: Path, checkpoint: Path, kind: str
) -> None:
    path = _garbage(kind, tmp_path, checkpoint)
    (tmp_path / "bot.toml").write_text(
        f'[render]\nrenderer = "wav2lip"\n\n[render.wav2lip]\ncheckpoint = "{path}"\n'
    )
    code, output = _run_lipcast("say", "Hello chat", "-o", "hello.mp4", cwd=tmp_path)
    assert code != 0 and "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lipcast: error: "), output
    assert str(path) in lines[0] and GARBAGE[kind] in lines[0]
    assert not (tmp_path / "hello.mp4").exists()

    code, output = _run_lipcast("doctor", cwd=tmp_path)
    assert code == 1 and "Traceback" not in output and "all set" not in output
    [line] = [line for line in output.splitlines() if line.split()[1:2] == ["wav2lip"]]
    assert line.startswith("FAIL") and GARBAGE[kind] in line


def test_doctor_opens_a_good_checkpoint(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "bot.toml").write_text(
        f'[render]\nrenderer = "wav2lip"\n\n[render.wav2lip]\ncheckpoint = "{checkpoint}"\n'
    )
    _, output = _run_lipcast("doctor", cwd=tmp_path)
    [line] = [line for line in output.splitlines() if line.split()[1:2] == ["wav2lip"]]
    assert line.startswith("ok") and "36.3 M parameters" in line, output


# -- the renderer ---------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "rate", "fps"), [(0.5, 22_050, 25), (0.37, 16_000, 30)])
def test_frames_cover_the_audio_and_change_only_the_face_box(
    torch_renderer: Wav2LipRenderer, avatar: Avatar, seconds: float, rate: int, fps: int
) -> None:
    torch_renderer.fps = fps
    try:
        frames = list(torch_renderer.render(speechlike(seconds, rate), rate, avatar))
    finally:
        torch_renderer.fps = 25
    assert len(frames) == round(seconds * fps) == frame_count(round(seconds * rate), rate, fps)
    # the photo is 512x512 and opaque: the avatar over its background is the photo itself
    photo = avatar.image[..., :3]
    x0, y0, x1, y1 = torch_renderer.prepare(avatar).box
    assert 150 < x0 < 200 and 50 < y0 < 90 and 250 < x1 < 290 and 150 < y1 < 190
    inside = np.zeros(photo.shape[:2], bool)
    inside[y0:y1, x0:x1] = True
    for frame in frames:
        assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
        assert np.array_equal(frame[~inside], photo[~inside])
    mouth = slice(y0 + (y1 - y0) * 2 // 3, y1 - 5), slice(x0 + 10, x1 - 10)
    assert not np.array_equal(frames[0][mouth], photo[mouth])
    eyes = slice(y0 + 5, y0 + (y1 - y0) // 3), slice(x0, x1)
    assert np.array_equal(frames[0][eyes], photo[eyes])  # the upper face stays the avatar's


def test_torch_and_onnx_runtime_agree(
    torch_renderer: Wav2LipRenderer, onnx_renderer: Wav2LipRenderer, avatar: Avatar
) -> None:
    audio = speechlike(0.4, 16_000)
    by_torch = np.stack(list(torch_renderer.render(audio, 16_000, avatar))).astype(np.int16)
    by_onnx = np.stack(list(onnx_renderer.render(audio, 16_000, avatar))).astype(np.int16)
    assert by_torch.shape == by_onnx.shape == (10, 512, 512, 3)
    assert int(np.abs(by_torch - by_onnx).max()) <= 2
    mels = np.random.default_rng(1).uniform(-4, 4, (5, 1, 80, 16)).astype(np.float32)
    features = torch_renderer.prepare(avatar).features
    torch_faces = torch_renderer.load().decode(mels, features)
    onnx_faces = onnx_renderer.load().decode(mels, features)
    assert float(np.abs(torch_faces - onnx_faces).max()) < 1e-3


def test_onnx_graph_is_exported_once_and_reused(
    onnx_renderer: Wav2LipRenderer, checkpoint: Path, avatar: Avatar
) -> None:
    onnx_renderer.load()
    exported = list(onnx_renderer.cache_dir.glob("*.onnx"))
    assert len(exported) == 1
    mtime = exported[0].stat().st_mtime_ns
    again = Wav2LipRenderer(
        checkpoint=checkpoint, runtime="onnx", cache_dir=onnx_renderer.cache_dir
    )
    again.load()
    assert [p.stat().st_mtime_ns for p in onnx_renderer.cache_dir.glob("*.onnx")] == [mtime]


def test_face_encoder_runs_once_per_avatar_and_background(checkpoint: Path, avatar: Avatar) -> None:
    renderer = Wav2LipRenderer(checkpoint=checkpoint, device="cpu", runtime="torch", batch_size=4)
    audio = speechlike(0.2, 16_000)
    first = list(renderer.render(audio, 16_000, avatar))
    second = list(renderer.render(audio, 16_000, avatar))
    assert renderer.face_encodings == 1
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    list(renderer.render(audio, 16_000, avatar, background=(0, 0, 255)))
    assert renderer.face_encodings == 2  # an opaque photo, but the cache cannot know that


# -- configuration and wiring ---------------------------------------------------------------


def test_wiring_builds_the_renderer_from_bot_toml(checkpoint: Path) -> None:
    settings = parse_settings(
        {
            "render": {
                "renderer": "wav2lip",
                "fps": 30,
                "wav2lip": {"checkpoint": str(checkpoint), "runtime": "onnx", "batch_size": 4},
            }
        },
        source="bot.toml",
    )
    renderer = build_renderer(settings)
    assert isinstance(renderer, Wav2LipRenderer)
    assert (renderer.name, renderer.fps, renderer.batch_size) == ("wav2lip", 30, 4)


def test_a_missing_checkpoint_names_the_key_the_path_and_where_to_get_it(tmp_path: Path) -> None:
    absent = tmp_path / "wav2lip_gan.pth"
    settings = parse_settings(
        {"render": {"renderer": "wav2lip", "wav2lip": {"checkpoint": str(absent)}}},
        source="bot.toml",
    )
    with pytest.raises(ConfigError) as caught:
        build_renderer(settings)
    message = str(caught.value)
    assert "[render.wav2lip] checkpoint" in message and str(absent) in message
    assert "github.com/Rudrabha/Wav2Lip" in message
    unset = parse_settings({"render": {"renderer": "wav2lip"}}, source="bot.toml")
    with pytest.raises(ConfigError, match=r"\[render.wav2lip\] checkpoint is not set"):
        build_renderer(unset)


def test_a_missing_torch_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, checkpoint: Path
) -> None:
    real = importlib.util.find_spec

    def without_torch(name: str, package: str | None = None) -> object:
        return None if name == "torch" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_torch)
    settings = parse_settings(
        {"render": {"renderer": "wav2lip", "wav2lip": {"checkpoint": str(checkpoint)}}},
        source="bot.toml",
    )
    with pytest.raises(MissingDependencyError, match=r'pip install "lipcast\[wav2lip\]"'):
        build_renderer(settings)


def test_onnx_on_cuda_is_refused_in_bot_toml() -> None:
    with pytest.raises(ConfigError, match="runs on the CPU"):
        parse_settings(
            {"render": {"wav2lip": {"runtime": "onnx", "device": "cuda"}}}, source="bot.toml"
        )


# -- lipcast bench wav2lip --------------------------------------------------------------------


def test_bench_wav2lip_measures_every_backend_and_batch_in_one_run() -> None:
    import argparse

    from lipcast.benchmarks import wav2lip as bench
    from lipcast.cli import Context
    from lipcast.config import Secrets

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(
        ["--batches", "2,1", "--frames", "2", "--repeat", "1", "--text", "Hi!"]
    )
    settings = parse_settings({"render": {"size": 256}}, source="bot.toml")
    figures = bench.run(args, Context(settings=settings, secrets=Secrets(), config_path=None))
    assert figures["weights"].startswith("random")
    runs = figures["runs"]
    names = ("torch_eager", "torch_cached", "onnxruntime")
    expected = {(name, "cpu", batch) for name in names for batch in (1, 2)}
    assert {(r["backend"], r["device"], r["batch"]) for r in runs} >= expected
    for run in runs:
        assert set(run) >= {
            "backend",
            "device",
            "batch",
            "generator_fps",
            "renderer_fps",
            "ratio_to_torch_eager",
        }
        assert run["generator_fps"] > 0 and run["renderer_fps"] > 0
        if run["backend"] == "torch_eager":
            assert run["ratio_to_torch_eager"] == 1.0
    assert figures["best_onnxruntime_renderer_fps"] == max(
        r["renderer_fps"] for r in runs if r["backend"] == "onnxruntime"
    )


def test_bench_wav2lip_refuses_bad_batch_sizes() -> None:
    import argparse

    from lipcast.benchmarks import wav2lip as bench
    from lipcast.cli import Context
    from lipcast.config import Secrets
    from pipeline.errors import InputError

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    context = Context(settings=parse_settings({}, source="x"), secrets=Secrets(), config_path=None)
    for bad in ("0,8", "eight", ""):
        with pytest.raises(InputError, match="--batches"):
            bench.run(parser.parse_args(["--batches", bad]), context)
