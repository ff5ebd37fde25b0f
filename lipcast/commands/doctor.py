"""``lipcast doctor``: what is configured, installed, reachable and missing — no secrets shown."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import logging
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lipcast.config import SECRET_VARIABLES
from lipcast.wiring import (
    build_adapter,
    build_clip_renderer,
    persona_from_settings,
    voice_live_report,
)
from pipeline.errors import LipcastError
from pipeline.jobs.queue.rabbitmq import safe_url
from pipeline.services.openai_client import needs_api_key
from pipeline.services.tts import TTS_BACKENDS

if TYPE_CHECKING:
    from bots.base import Readiness
    from lipcast.cli import Context
    from lipcast.config import Secrets, Settings

HELP = "check the configuration, optional packages, broker, API keys and GPU"

OPTIONAL_PACKAGES = {
    "piper-tts": ("piper", "piper", "Piper voices"),
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
    openai_tts = settings.tts.openai
    if (
        settings.tts.backend == "openai"
        and needs_api_key(openai_tts.base_url)
        and secrets.openai_api_key is None
    ):
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

    found.extend(_adapters(settings, secrets))
    found.extend(_voice(settings))
    wav2lip = _wav2lip(settings)
    if wav2lip is not None:
        found.append(wav2lip)
    found.append(_llm(settings, secrets))
    found.append(_broker(settings, secrets))
    found.append(_gpu())
    return found


def _adapters(settings: Settings, secrets: Secrets) -> list[Check]:
    """Each chat adapter: off, or whether it can start and what it lacks (read-only checks;
    nothing is joined or posted)."""
    from bots import ADAPTERS

    found: list[Check] = []
    for name in ADAPTERS:
        topic = f"adapter.{name}"
        if not getattr(settings, name).enabled:
            found.append(Check("info", topic, f"off ([{name}] enabled = false)"))
            continue
        try:
            adapter = build_adapter(name, settings, secrets)
            readiness = asyncio.run(asyncio.wait_for(adapter.check(), timeout=15))
        except LipcastError as err:
            found.append(Check("FAIL", topic, f"cannot start: {err}"))
            continue
        except TimeoutError:
            found.append(Check("FAIL", topic, "its checks did not answer within 15 s"))
            continue
        for line in readiness:
            status = _status(line)
            found.append(Check(status, topic, line.detail))
    return found


def _voice(settings: Settings) -> list[Check]:
    """Speech-to-text and Discord voice receive under DAVE: installed and loadable?"""
    from pipeline.services.stt import STT_BACKENDS

    needed = settings.discord.enabled  # voice is part of the Discord adapter
    spec = STT_BACKENDS[settings.stt.backend]
    missing = spec.missing()
    found = []
    if missing:
        fix = (
            f'pip install "lipcast[{spec.extra}]"' if spec.extra else f"pip install {spec.package}"
        )
        found.append(
            Check(
                "FAIL" if needed else "info", f"stt.{settings.stt.backend}", f"not installed: {fix}"
            )
        )
    else:
        found.append(Check("ok", f"stt.{settings.stt.backend}", spec.description + " (selected)"))
    if settings.stt.backend == "queue":
        found.append(_stt_queue(settings, needed))
    if importlib.util.find_spec("discord") is None:
        found.append(
            Check(
                "FAIL" if needed else "info",
                "voice",
                'discord.py is not installed: pip install "lipcast[voice]"',
            )
        )
        return found
    from bots.discord.voice.feature import read_live_report, voice_requirements

    for line in voice_requirements():
        status = _status(line)
        found.append(Check(status if needed or status == "ok" else "info", "voice", line.detail))
    # what the running lipcast hears now: joined channels, packets, decryption failures
    for line in read_live_report(voice_live_report()) or []:
        found.append(Check(_status(line), "voice.live", line.detail))
    return found


def _status(line: Readiness) -> str:
    """A readiness line's doctor status: FAIL, warn or ok."""
    return "FAIL" if not line.ok else "warn" if line.warning else "ok"


def _stt_queue(settings: Settings, needed: bool) -> Check:
    """``[stt] backend = "queue"``: where the speech goes, and whether it can get there."""
    queue = settings.stt.queue
    if settings.queue.backend != "rabbitmq":
        return Check(
            "FAIL" if needed else "info",
            "stt.queue",
            '[stt] backend = "queue" needs [queue] backend = "rabbitmq" (and `lipcast worker '
            "--stt` on a machine that has [stt.queue] backend installed)",
        )
    return Check(
        "ok",
        "stt.queue",
        f"transcribe jobs go to {settings.queue.name}.stt; run `lipcast worker --stt` on a "
        f"machine with {queue.backend} (answer within {queue.timeout_s:g} s)",
    )


def _wav2lip(settings: Settings) -> Check | None:
    """Open the wav2lip checkpoint the renderer would use, as it would (None: not in use)."""
    config = settings.render.wav2lip
    chosen = settings.render.renderer == "wav2lip"
    if not chosen and config.checkpoint is None:
        return None
    status = "FAIL" if chosen else "warn"
    if config.checkpoint is None:
        from lipsync.wav2lip import CHECKPOINT_HELP

        return Check(
            status, "wav2lip", f"[render.wav2lip] checkpoint is not set; {CHECKPOINT_HELP}"
        )
    if importlib.util.find_spec("torch") is None:
        return Check(status, "wav2lip", 'torch is not installed: pip install "lipcast[wav2lip]"')
    from lipsync.wav2lip import CheckpointError, load_model

    try:
        model = load_model(config.checkpoint)
    except CheckpointError as err:
        return Check(status, "wav2lip", f"[render.wav2lip] checkpoint: {err}")
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    use = "in use" if chosen else 'not in use: [render] renderer = "sprite"'
    return Check(
        "ok" if chosen else "info",
        "wav2lip",
        f"{config.checkpoint}: the Wav2Lip generator, {parameters:.1f} M parameters ({use})",
    )


def _llm(settings: Settings, secrets: Secrets) -> Check:
    llm = settings.llm
    if llm.backend == "none":
        return Check("info", "llm", 'none: chat is read aloud ([llm] backend = "openai" to talk)')
    if needs_api_key(llm.base_url) and secrets.openai_api_key is None:
        return Check("FAIL", "llm", "OPENAI_API_KEY is not set (environment or .env)")
    port = 443 if llm.base_url.startswith("https") else 80
    problem = _reachable(llm.base_url, port)
    return Check("FAIL" if problem else "ok", "llm", problem or f"{llm.model} at {llm.base_url}")


def _broker(settings: Settings, secrets: Secrets) -> Check:
    """Connect to the broker as `lipcast worker` would (password never shown)."""
    url = settings.queue.broker_url(secrets)
    shown = safe_url(url)
    chosen = settings.queue.backend == "rabbitmq"

    async def connect() -> None:
        import aio_pika

        connection = await asyncio.wait_for(aio_pika.connect(url), timeout=5)
        await connection.close()

    quiet = logging.getLogger("aiormq")  # it logs each failed attempt; the report says it once
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        asyncio.run(connect())
    except Exception as err:  # noqa: BLE001 - any failure is the report
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        for secret in [url, *secrets.values()]:
            reason = reason.replace(secret, "***")
        detail = f"{shown}: cannot connect ({reason})"
        return Check("FAIL" if chosen else "info", "broker", detail)
    finally:
        quiet.setLevel(level)
    use = "in use" if chosen else 'not in use: [queue] backend = "memory"'
    return Check("ok" if chosen else "info", "broker", f"{shown}: reachable ({use})")


def _gpu() -> Check:
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return Check("ok", "gpu", f"CUDA: {torch.cuda.get_device_name(0)}")
        return Check("info", "gpu", "torch sees no CUDA device; renderers run on the CPU")
    if shutil.which("nvidia-smi"):
        return Check("info", "gpu", "NVIDIA driver present; the sprite renderer runs on the CPU")
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
