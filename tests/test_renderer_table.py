"""The renderer is chosen by name through its backend table, like TTS, LLM and queue."""

from __future__ import annotations

import pytest

from lipcast.config import RenderSettings, parse_settings
from lipcast.wiring import build_renderer
from lipsync.sprite import SpriteRenderer
from pipeline.backends import BackendSpec, load_backend
from pipeline.jobs.render import RENDERERS


def test_every_renderer_bot_toml_accepts_is_in_the_table() -> None:
    choices = RenderSettings.model_json_schema()["properties"]["renderer"]["enum"]
    assert set(choices) == set(RENDERERS)
    for name, spec in RENDERERS.items():
        if spec.missing() is None:
            cls = load_backend("renderer", name, RENDERERS)
            assert callable(getattr(cls, "render", None)), name  # Renderer is a protocol


class TaggedSprite(SpriteRenderer):
    """A renderer registered under the sprite name, to see that the table is what is used."""


def test_wiring_builds_the_renderer_the_table_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        RENDERERS, "sprite", BackendSpec(target=f"{__name__}:TaggedSprite", description="test")
    )
    settings = parse_settings({"render": {"fps": 30, "size": 256}}, source="bot.toml")
    renderer = build_renderer(settings)
    assert type(renderer) is TaggedSprite
    assert (renderer.fps, renderer.size) == (30, 256)
