"""The channel's AutoMod as a check on what the persona says: Twitch's Check AutoMod Status
through twitchio's Helix client, against the local fake Twitch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("twitchio")

import twitchio

from bots.twitch.automod import AutoModCheck
from tests.test_twitch_adapter import OWNER_REFRESH, OWNER_TOKEN, make_adapter
from tests.twitch_support import (
    CHANNEL_ID,
    CHANNEL_LOGIN,
    CLIENT_ID,
    CLIENT_SECRET,
    Account,
    FakeTwitch,
    point_twitchio_at,
)


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeTwitch]:
    server = FakeTwitch()
    await server.start()
    point_twitchio_at(monkeypatch, server.base_url)
    server.add_account(
        Account(
            user_id=CHANNEL_ID,
            login=CHANNEL_LOGIN,
            token=OWNER_TOKEN,
            refresh=OWNER_REFRESH,
            scopes=["channel:bot", "moderation:read"],
        )
    )
    yield server
    await server.close()


@pytest.fixture
async def client(fake: FakeTwitch) -> AsyncIterator[twitchio.Client]:
    tio = twitchio.Client(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, fetch_client_user=False)
    await tio.login(load_tokens=False, save_tokens=False)
    await tio.add_token(OWNER_TOKEN, OWNER_REFRESH)
    yield tio
    await tio.close(save_tokens=False)


async def test_a_sentence_automod_would_hold_is_blocked_others_pass(
    fake: FakeTwitch, client: twitchio.Client
) -> None:
    check = AutoModCheck(lambda: client, CHANNEL_ID)
    assert check.name == "automod"
    allowed = await check.check("What a lovely stream today.")
    held = await check.check("You absolute blorp.")
    assert allowed.ok
    assert not held.ok and held.reason == "automod"
    assert fake.automod_checks == ["What a lovely stream today.", "You absolute blorp."]
    assert check.last_latency_s > 0


@pytest.mark.parametrize(("fail_closed", "ok"), [(True, False), (False, True)])
async def test_a_rate_limited_automod_fails_closed_unless_told_otherwise(
    fake: FakeTwitch, client: twitchio.Client, fail_closed: bool, ok: bool
) -> None:
    fake.automod_status = 429  # 5 checks a minute for an ordinary channel
    verdict = await AutoModCheck(lambda: client, CHANNEL_ID, fail_closed=fail_closed).check("hi")
    assert verdict.ok is ok
    if not ok:
        assert verdict.reason == "automod_unavailable" and "HTTP 429" in verdict.detail


async def test_the_adapter_offers_automod_only_when_configured(tmp_path: Path) -> None:
    assert make_adapter(tmp_path).automod_check(CHANNEL_ID) is None
    layer = make_adapter(tmp_path, automod_check=True).automod_check(CHANNEL_ID)
    assert layer is not None
    verdict = await layer.check("anything")  # the adapter is not running: no client
    assert not verdict.ok and verdict.reason == "automod_unavailable"


def test_build_safety_takes_the_automod_layer_for_each_sentence(tmp_path: Path) -> None:
    from lipcast.config import Secrets, Settings
    from lipcast.wiring import build_safety
    from personas import load_persona

    layer = make_adapter(tmp_path, automod_check=True).automod_check()
    assert layer is not None
    guard = build_safety(Settings(), Secrets(), load_persona("cohost"), reply_layers=[layer])
    assert layer in guard.reply_layers and layer not in guard.layers
