"""The ``wav2lip`` renderer: the published Wav2Lip generator over a still avatar.

Wav2Lip (Prajwal, Mukhopadhyay, Namboodiri, Jawahar: "A Lip Sync Expert Is All You Need for
Speech to Lip Generation In The Wild", ACM Multimedia 2020) redraws the lower half of a 96x96
face crop to match 0.2 s of audio. lipcast ships the architecture (:mod:`.model`), the audio
features (:mod:`.audio`) and the renderer (:mod:`.renderer`), not the weights.

Getting the checkpoint
----------------------
lipcast never downloads anything. Download the generator checkpoint yourself from the links in
the README of the official repository, https://github.com/Rudrabha/Wav2Lip ("Wav2Lip + GAN",
``wav2lip_gan.pth``, looks best; ``wav2lip.pth`` syncs slightly more exactly), and name it in
bot.toml::

    [render]
    renderer = "wav2lip"

    [render.wav2lip]
    checkpoint = "models/wav2lip_gan.pth"

The weights are licensed by their authors for personal, research and non-commercial use only;
commercial use needs a licence from them (see the repository's README). The discriminator and
``lipsync_expert.pth`` (SyncNet) are not generators and are refused. Install the extra with
``pip install "lipcast[wav2lip]"`` (torch and ONNX Runtime).

Importing this package is free: torch is imported only by :func:`load_model` and by the
renderer when it first renders.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from lipsync.errors import LipsyncError

if TYPE_CHECKING:
    from lipsync.wav2lip.model import Wav2Lip

CHECKPOINT_HELP = (
    "download wav2lip_gan.pth (or wav2lip.pth) from the links in the README of "
    "https://github.com/Rudrabha/Wav2Lip and set [render.wav2lip] checkpoint to its path"
)

__all__ = ["CHECKPOINT_HELP", "CheckpointError", "load_model"]


class CheckpointError(LipsyncError):
    """A Wav2Lip checkpoint is missing, unreadable or not the Wav2Lip generator."""


def _looks_like(path: Path) -> str:
    """What a file that is not a checkpoint seems to be, from its first bytes."""
    try:
        with path.open("rb") as file:
            head = file.read(1024)
    except OSError:
        return "unreadable"
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        return "a zip archive, truncated or not saved by torch.save: download it again"
    lower = head.lower()
    if b"<html" in lower or b"<!doctype html" in lower:
        return "a web page: the download saved the page, not the file it links to"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data, or a truncated download"
    return "a text file"


def load_model(path: Path, device: str = "cpu") -> Wav2Lip:
    """The Wav2Lip generator with the weights of the checkpoint at ``path``, in eval mode.

    Accepts the public checkpoint format ``{"state_dict": ...}`` (with or without the
    ``module.`` prefix that ``nn.DataParallel`` adds) and a bare state dict, and loads it with
    ``strict=True``. Raises :class:`CheckpointError` with the fix when it cannot.
    """
    import torch

    from lipsync.wav2lip.model import Wav2Lip

    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise CheckpointError(f"{path}: {what}; {CHECKPOINT_HELP}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of odd files
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint: {err.strerror or err}; {CHECKPOINT_HELP}"
        ) from err
    except Exception as err:
        # torch.load on arbitrary bytes raises almost anything: IndexError, KeyError, EOFError,
        # struct.error, UnicodeDecodeError, RuntimeError, UnpicklingError ...
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint ({_looks_like(path)}); {CHECKPOINT_HELP}"
        ) from err
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise CheckpointError(f"{path}: holds no state dict; {CHECKPOINT_HELP}")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    model = Wav2Lip()
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [
        key
        for key, value in state.items()
        if key in expected
        and (not isinstance(value, torch.Tensor) or value.shape != expected[key].shape)
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of the wrong shape", wrong_shape),
        ):
            if keys:
                problems.append(f"{len(keys)} keys {label} (e.g. {keys[0]!r})")
        raise CheckpointError(
            f"{path}: not the 96x96 Wav2Lip generator: {', '.join(problems)}. "
            "SyncNet (lipsync_expert.pth), the discriminator and retrained variants of other "
            f"sizes do not fit; {CHECKPOINT_HELP}"
        )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
