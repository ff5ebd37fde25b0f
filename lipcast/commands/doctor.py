"""``lipcast doctor``: what is configured, installed, reachable and missing — no secrets shown."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lipcast.config import SECRET_VARIABLES
from lipcast.wiring import build_clip_renderer, persona_from_settings
from pipeline.errors import LipcastError
from pipeline.tts import TTS_BACKENDS

if TYPE_CHECKING:
    from lipcast.cli import Context

HELP = "check the configuration, optional packages, broker, API keys and GPU"

OPTIONAL_PACKAGES = {
    "piper-tts": ("piper", "piper", "Piper voices"),
    "faster-whisper": ("faster_whisper", "whisper", "speech-to-text for Discord voice"),
    "torch": ("torch", "wav2lip", "the wav2lip renderer"),
    "onnxruntime": ("onnxruntime", "wav2lip", "wav2lip on ONNX Runtime"),
    "twitchio": ("twitchio", "twitch", "the Twitch adapter"),
    "discord.py": ("discord", "discord", "the Discord adapter"),
}


@dataclass(frozen=True)
class Check:
    status: str  # "ok", "warn", "FAIL", "info"
    topic: str
    detail: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _reachable(url: str, default_port: int, timeout: float = 1.5) -> str | None:
    """None when a TCP connection to the URL's host and port opens, else the reason."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{host}:{port} unreachable ({err.strerror or err})"


def _public(url: str) -> str:
    """A URL without user name or password."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def checks(context: Context) -> list[Check]:
    settings, secrets = context.settings, context.secrets
    found: list[Check] = []
    if context.config_path is not None:
        source = str(context.config_path)
    else:
        source = "./bot.toml" if Path("bot.toml").is_file() else "built-in defaults (no bot.toml)"
    found.append(Check("ok", "config", f"{source}: valid"))

    try:
        persona = persona_from_settings(settings)
        clip_renderer = build_clip_renderer(settings, secrets)
        avatar = clip_renderer.avatar(persona)
        how = "face detected" if avatar.detected else "declared geometry"
        found.append(
            Check("ok", "persona", f"{persona.id} ({persona.name}, {persona.language}), {how}")
        )
    except LipcastError as err:
        found.append(Check("FAIL", "persona/backends", str(err)))

    for name, spec in TTS_BACKENDS.items():
        chosen = name == settings.tts.backend
        missing = spec.missing()
        if missing:
            fix = (
                f'pip install "lipcast[{spec.extra}]"'
                if spec.extra
                else f"pip install {spec.package}"
            )
            found.append(
                Check("FAIL" if chosen else "info", f"tts.{name}", f"not installed: {fix}")
            )
        else:
            found.append(
                Check(
                    "ok" if chosen else "info",
                    f"tts.{name}",
                    spec.description + (" (selected)" if chosen else ""),
                )
            )
    if settings.tts.backend == "openai" and secrets.openai_api_key is None:
        found.append(Check("FAIL", "tts.openai", "OPENAI_API_KEY is not set (environment or .env)"))
    if settings.tts.backend == "silero":
        problem = _reachable(settings.tts.silero.url, 80)
        found.append(
            Check("FAIL" if problem else "ok", "tts.silero", problem or settings.tts.silero.url)
        )

    av_version = _version("av")
    try:
        import av

        codecs = {"libx264", "aac"} - set(av.codecs_available)
        if codecs:
            found.append(Check("FAIL", "encoder", f"PyAV lacks {', '.join(sorted(codecs))}"))
        else:
            found.append(Check("ok", "encoder", f"PyAV {av_version}: libx264 + aac"))
    except ImportError:
        found.append(Check("FAIL", "encoder", "PyAV is not installed: pip install av"))

    for distribution, (module, extra, purpose) in OPTIONAL_PACKAGES.items():
        if importlib.util.find_spec(module) is None:
            found.append(
                Check(
                    "info",
                    distribution,
                    f'not installed ({purpose}): pip install "lipcast[{extra}]"',
                )
            )
        else:
            found.append(Check("ok", distribution, f"{_version(distribution)} ({purpose})"))

    for field, variable in SECRET_VARIABLES.items():
        present = getattr(secrets, field) is not None
        found.append(Check("info", variable, "set" if present else "not set"))

    found.append(_gpu())
    return found


def _gpu() -> Check:
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return Check("ok", "gpu", f"CUDA: {torch.cuda.get_device_name(0)}")
        return Check("info", "gpu", "torch sees no CUDA device; renderers run on the CPU")
    if shutil.which("nvidia-smi"):
        return Check("info", "gpu", 'NVIDIA driver present; install "lipcast[wav2lip]" to use it')
    return Check("info", "gpu", "none found; the sprite renderer needs none")


def run(args: argparse.Namespace, context: Context) -> int:
    del args
    results = checks(context)
    width = max(len(check.topic) for check in results)
    for check in results:
        print(f"{check.status:<4}  {check.topic:<{width}}  {check.detail}")
    failed = [check for check in results if check.status == "FAIL"]
    print(f"\n{len(failed)} problem(s)" if failed else "\nall set")
    return 1 if failed else 0
