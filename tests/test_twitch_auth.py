"""``lipcast twitch auth``: twitchio's OAuth web adapter on localhost, the code exchanged at the
fake id.twitch.tv, the token stored owner-only in the user's config folder, never printed."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

pytest.importorskip("twitchio")

from bots.twitch.auth import TokenStore, scopes_for
from lipcast.cli import main
from lipcast.commands.twitch import wanted_scopes
from lipcast.config import parse_settings
from tests.twitch_support import CLIENT_ID, CLIENT_SECRET, Account, FakeTwitch, point_twitchio_at

TOKEN, REFRESH = "fresh-user-token-0123456789abcd", "fresh-refresh-token-0123456789ab"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwitch]:
    """The fake Twitch on a loop of its own thread: ``lipcast twitch auth`` runs its own
    ``asyncio.run`` in the main thread (aiohttp's web runner handles signals there)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-twitch", daemon=True)
    thread.start()
    server = FakeTwitch()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    point_twitchio_at(monkeypatch, server.base_url)
    yield server
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def sign_in_as_a_browser_would(port: int, out: io.StringIO, seen: dict[str, object]) -> None:
    """Open the printed address (Twitch's page would redirect back with a code), then call the
    redirect URL with the code, as the browser does after the streamer allows access."""
    opener = urllib.request.build_opener(NoRedirect)
    deadline = time.monotonic() + 60
    while "/oauth?" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    start = next(line.strip() for line in out.getvalue().splitlines() if "/oauth?" in line)
    seen["start"] = start
    try:
        opener.open(start, timeout=10)
    except urllib.error.HTTPError as redirect:  # the 308 to Twitch's authorisation page
        seen["status"] = redirect.code
        seen["location"] = redirect.headers["Location"]
    with urllib.request.urlopen(
        f"http://localhost:{port}/oauth/callback?code=the-code", timeout=10
    ) as back:
        seen["callback"] = back.status


def sign_in(port: int, args: list[str]) -> tuple[int, str]:
    """Run ``lipcast twitch auth`` on ``port`` while a browser thread signs in."""
    out, err = io.StringIO(), io.StringIO()
    seen: dict[str, object] = {}
    browser = threading.Thread(
        target=sign_in_as_a_browser_would, args=(port, out, seen), name="browser", daemon=True
    )
    browser.start()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            ["twitch", "auth", "--no-browser", "--port", str(port), "--timeout", "60", *args]
        )
    browser.join(10)
    return code, out.getvalue() + err.getvalue()


def test_the_broadcaster_sign_in_never_replaces_the_bots_token(
    fake: FakeTwitch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bots.twitch.auth import StoredToken

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWITCH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", CLIENT_SECRET)
    tokens = tmp_path / "tokens.json"
    store = TokenStore(path=tokens)
    store.put(StoredToken(user_id="2914196", login="persona_bot", token="old", refresh="old-r"))
    store.save()
    fake.code_accounts["the-code"] = Account(
        user_id="2914196", login="persona_bot", token=TOKEN, refresh=REFRESH, scopes=["channel:bot"]
    )
    code, shown = sign_in(free_port(), ["--broadcaster", "--tokens", str(tokens)])
    assert code == 2 and "the bot account: its token was kept" in shown
    kept = TokenStore.load(tokens).tokens["2914196"]
    assert (kept.token, kept.role) == ("old", "bot")


def test_auth_stores_the_token_owner_only_in_the_config_folder(
    fake: FakeTwitch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWITCH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LIPCAST_TWITCH_TOKENS", raising=False)
    fake.code_accounts["the-code"] = Account(
        user_id="2914196",
        login="persona_bot",
        token=TOKEN,
        refresh=REFRESH,
        scopes=["user:read:chat", "user:write:chat", "user:bot", "channel:bot"],
    )
    port = free_port()
    out, err = io.StringIO(), io.StringIO()
    seen: dict[str, object] = {}
    browser = threading.Thread(
        target=sign_in_as_a_browser_would, args=(port, out, seen), name="browser", daemon=True
    )
    browser.start()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["twitch", "auth", "--no-browser", "--port", str(port), "--timeout", "20"])
    browser.join(10)
    assert code == 0, err.getvalue()
    assert seen["status"] in (301, 302, 307, 308) and seen["callback"] == 200
    target = urllib.parse.urlsplit(str(seen["location"]))
    query = urllib.parse.parse_qs(target.query)
    assert target.path == "/oauth2/authorize" and query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [f"http://localhost:{port}/oauth/callback"]
    assert set(query["scope"][0].split()) == {
        "user:read:chat",
        "user:write:chat",
        "user:bot",
        "channel:bot",
    }
    path = tmp_path / "config" / "lipcast" / "twitch-tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = TokenStore.load(path).tokens["2914196"]
    assert (stored.login, stored.token, stored.refresh, stored.role) == (
        "persona_bot",
        TOKEN,
        REFRESH,
        "bot",
    )
    assert json.loads(path.read_text())["tokens"]["2914196"]["token"] == TOKEN
    shown = out.getvalue() + err.getvalue()
    assert "signed in as persona_bot" in shown and str(path) in shown
    assert TOKEN not in shown and REFRESH not in shown and CLIENT_SECRET not in shown
    assert not list(tmp_path.glob("*.json"))  # nothing in the working folder (the checkout)


def test_auth_without_an_application_says_what_to_register(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWITCH_CLIENT_ID", raising=False)
    monkeypatch.delenv("TWITCH_CLIENT_SECRET", raising=False)
    assert main(["twitch", "auth", "--no-browser"]) == 2
    captured = capsys.readouterr()
    assert "https://dev.twitch.tv/console/apps" in captured.out
    assert "http://localhost:4343/oauth/callback" in captured.out
    assert "TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET not set" in captured.err


def test_scopes_follow_the_features_that_are_on() -> None:
    plain = parse_settings({"twitch": {"channels": ["streamer"]}}, source="t")
    assert wanted_scopes(plain, broadcaster=False) == [
        "user:read:chat",
        "user:write:chat",
        "user:bot",
        "channel:bot",
    ]
    separate = parse_settings(
        {
            "twitch": {
                "channels": ["streamer"],
                "bot": "helperbot",
                "automod_check": True,
                "manage_rewards": True,
                "triggers": {"rewards": ["Ask"]},
            }
        },
        source="t",
    )
    assert wanted_scopes(separate, broadcaster=False) == [
        "user:read:chat",
        "user:write:chat",
        "user:bot",
    ]
    assert wanted_scopes(separate, broadcaster=True) == [
        "channel:bot",
        "channel:manage:redemptions",
        "moderation:read",
    ]
    assert "channel:read:redemptions" in scopes_for(
        "broadcaster", rewards=True, manage_rewards=False, automod=False, same_account=False
    )


def test_doctor_names_the_missing_twitch_credential(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lipcast.commands.doctor import _adapters
    from lipcast.config import Secrets

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWITCH_CLIENT_ID", raising=False)
    off = parse_settings({}, source="t")
    assert [c.detail for c in _adapters(off, Secrets()) if c.topic == "adapter.twitch"] == [
        "off ([twitch] enabled = false)"
    ]
    on = parse_settings({"twitch": {"enabled": True, "channels": ["streamer"]}}, source="t")
    [check] = [c for c in _adapters(on, Secrets()) if c.topic == "adapter.twitch"]
    assert check.status == "FAIL" and "TWITCH_CLIENT_ID is not set" in check.detail


def test_doctor_checks_the_stored_token_with_twitch(
    fake: FakeTwitch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bots.twitch.auth import StoredToken
    from lipcast.commands.doctor import _adapters
    from lipcast.config import Secrets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWITCH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("LIPCAST_TWITCH_TOKENS", str(tmp_path / "tokens.json"))
    scopes = ["user:read:chat", "user:write:chat", "user:bot"]
    fake.add_account(
        Account(user_id="2914196", login="persona_bot", token=TOKEN, refresh=REFRESH, scopes=scopes)
    )
    tokens = TokenStore(path=tmp_path / "tokens.json")
    tokens.put(StoredToken(user_id="2914196", login="persona_bot", token=TOKEN, refresh=REFRESH))
    tokens.save()
    on = parse_settings({"twitch": {"enabled": True, "channels": ["streamer"]}}, source="t")
    secrets = Secrets(twitch_client_secret=SecretStr(CLIENT_SECRET))
    [check] = [c for c in _adapters(on, secrets) if c.topic == "adapter.twitch"]
    assert check.status == "ok" and "bot persona_bot: token valid" in check.detail
    assert TOKEN not in check.detail
