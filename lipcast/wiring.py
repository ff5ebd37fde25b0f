"""Composition: build the configured backends and parts from settings and secrets.

This is the one place that knows which backend class takes which settings; everything else
receives ready objects.
"""

from __future__ import annotations

from typing import Any

from lipcast.config import Secrets, Settings
from lipsync.encode import EncodeOptions
from lipsync.renderer import Renderer
from personas import Persona, load_persona
from pipeline.backends import load_backend
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
