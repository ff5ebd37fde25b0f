"""Composition: build the configured backends and parts from settings and secrets.

This is the one place that knows which backend class takes which settings; everything else
receives ready objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lipcast.config import Secrets, Settings
from lipsync.encode import EncodeOptions
from lipsync.renderer import Renderer
from obs_overlay.clip_store import ClipStore
from obs_overlay.events import PageOptions
from obs_overlay.server import OverlayError, OverlayServer, PlaybackCallback
from personas import Persona, load_persona
from pipeline.backends import load_backend
from pipeline.errors import ConfigError
from pipeline.job_queue import JobQueue, QueueOptions, open_job_queue
from pipeline.render import ClipRenderer, RenderJobHandler
from pipeline.tts import TTS, TTS_BACKENDS


def build_tts(settings: Settings, secrets: Secrets) -> TTS:
    """The TTS backend named by ``[tts] backend``, configured from its section."""
    name = settings.tts.backend
    cls = load_backend("TTS", name, TTS_BACKENDS)
    options: dict[str, Any] = getattr(settings.tts, name).model_dump()
    if name == "openai":
        key = secrets.openai_api_key
        options["api_key"] = key.get_secret_value() if key else None
    if name == "silero" and secrets.silero_token is not None:
        options["token"] = secrets.silero_token.get_secret_value()
    tts: TTS = cls(**options)
    return tts


def build_renderer(settings: Settings) -> Renderer:
    """The lip-sync renderer named by ``[render] renderer``."""
    from lipsync.sprite import SpriteRenderer

    return SpriteRenderer(fps=settings.render.fps, size=settings.render.size)


def encode_options(settings: Settings) -> EncodeOptions:
    render = settings.render
    return EncodeOptions(fps=render.fps, crf=render.crf, preset=render.preset)


def build_clip_renderer(settings: Settings, secrets: Secrets) -> ClipRenderer:
    """TTS, renderer and encoder as configured, ready to turn text into clips."""
    return ClipRenderer(
        tts=build_tts(settings, secrets),
        tts_name=settings.tts.backend,
        renderer=build_renderer(settings),
        encode=encode_options(settings),
    )


def persona_from_settings(
    settings: Settings, name: str | None = None, language: str | None = None
) -> Persona:
    """Load a persona by name (default ``[persona] default``) in a language (default its own)."""
    return load_persona(
        name or settings.persona.default,
        language=language or settings.persona.language,
        search_dirs=list(settings.persona.dirs),
    )


def build_job_handler(settings: Settings, secrets: Secrets) -> RenderJobHandler:
    """The render worker's handler: the configured TTS, renderer and encoder, per job."""

    def load(name: str, language: str | None) -> Persona:
        return persona_from_settings(settings, name, language)

    return RenderJobHandler(build_clip_renderer(settings, secrets), load)


def job_queue_options(
    settings: Settings, secrets: Secrets, *, connection_name: str, name: str | None = None
) -> QueueOptions:
    """Queue options from ``[queue]``, with the broker URL from LIPCAST_AMQP_URL when set."""
    queue = settings.queue
    return QueueOptions(
        url=queue.broker_url(secrets),
        name=name or queue.name,
        max_length=queue.max_length,
        max_priority=queue.max_priority,
        max_attempts=queue.max_attempts,
        result_timeout_s=queue.result_timeout_s,
        dead_letter_max_length=queue.dead_letter_max_length,
        reconnect_interval_s=queue.reconnect_interval_s,
        connect_timeout_s=queue.connect_timeout_s,
        connection_name=connection_name,
    )


def build_job_queue(
    settings: Settings, secrets: Secrets, *, connection_name: str = "lipcast"
) -> JobQueue:
    """The job queue ``[queue] backend`` names, not yet started."""
    options = job_queue_options(settings, secrets, connection_name=connection_name)
    return open_job_queue(settings.queue.backend, options)


def build_overlay_server(
    settings: Settings,
    secrets: Secrets,
    *,
    idle_image: Path | None = None,
    on_playback: PlaybackCallback | None = None,
    host: str | None = None,
    port: int | None = None,
) -> OverlayServer:
    """The overlay server as ``[overlay]`` configures it (not started).

    ``idle_image`` is used when bot.toml names none (``lipcast run`` passes the persona's
    avatar); ``host`` and ``port`` override bot.toml.
    """
    overlay = settings.overlay
    token = secrets.overlay_token.get_secret_value() if secrets.overlay_token else None
    store = ClipStore(
        max_clips=overlay.store_max_clips,
        max_bytes=overlay.store_max_mb * 1024 * 1024,
        max_age_s=overlay.store_max_age_s,
    )
    options = PageOptions(captions=overlay.captions, banner=overlay.banner, hold_ms=overlay.hold_ms)
    try:
        return OverlayServer(
            host=host or overlay.host,
            port=port or overlay.port,
            control_token=token,
            store=store,
            idle_image=overlay.idle_image or idle_image,
            idle_video=overlay.idle_video,
            options=options,
            on_playback=on_playback,
        )
    except OverlayError as err:
        raise ConfigError(f"{err} (check overlay.idle_image and overlay.idle_video)") from err
