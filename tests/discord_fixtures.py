"""Fixtures for the Discord tests: the local Discord (REST and gateway) and the stand-in model.

Loaded for the whole suite by ``pytest_plugins`` in ``tests/conftest.py``, so each Discord test
module uses them without defining them again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import discord
import pytest
from yarl import URL

from tests.conftest import ServeApp
from tests.discord_support import FakeDiscord, FakeGateway
from tests.openai_stub import OpenAIStub
from tests.platform_support import echo_reply


@pytest.fixture
async def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
async def fake_discord(
    serve_app: ServeApp, monkeypatch: pytest.MonkeyPatch, gateway: FakeGateway
) -> FakeDiscord:
    """Discord's REST API and gateway on 127.0.0.1, with discord.py pointed at them."""
    fake = FakeDiscord()
    app = fake.app()
    gateway.add_to(app)
    base = await serve_app(app)
    monkeypatch.setattr(discord.http.Route, "BASE", f"{base}/api/v10")
    ws_base = base.replace("http://", "ws://")
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", URL(f"{ws_base}/gateway")
    )
    return fake


@pytest.fixture
async def model() -> AsyncIterator[OpenAIStub]:
    """A stand-in model that answers each question by naming it."""
    stub = OpenAIStub(reply=echo_reply, tokens_per_s=2000)
    await stub.start()
    yield stub
    await stub.close()
