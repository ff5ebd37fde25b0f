"""``lipcast run`` with the Twitch adapter enabled, end to end against the local fake Twitch:
it connects, subscribes, answers a chat question in chat (as a reply) while the console keeps
working; without credentials it names what is missing and the console runs on."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

pytest.importorskip("twitchio")

from bots.twitch.auth import StoredToken, TokenStore
from lipcast.cli import Context
from lipcast.commands import run as run_command
from lipcast.config import Secrets, Settings
from tests.openai_stub import OpenAIStub
from tests.twitch_support import (
    BOT_ID,
    BOT_LOGIN,
    BOT_SCOPES,
    CHANNEL_ID,
    CLIENT_ID,
    CLIENT_SECRET,
    Account,
    FakeTwitch,
    chat_message_event,
    point_twitchio_at,
)

TOKEN, REFRESH = "run-bot-token-0123456789abcdef", "run-bot-refresh-0123456789abcd"


class Services:
    """The fake Twitch and the OpenAI stub on an event loop of their own thread, since
    ``lipcast run`` runs its own loop in the test's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="services", daemon=True)
        self.thread.start()
        self.twitch = FakeTwitch()
        self.stub = OpenAIStub(reply="Hello from the show. Nice to see you!", tokens_per_s=2000)

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(20)

    def close(self) -> None:
        self.call(self.twitch.close())
        self.call(self.stub.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    running = Services()
    url = running.call(running.twitch.start())
    running.call(running.stub.start())
    point_twitchio_at(monkeypatch, url)
    running.twitch.add_account(
        Account(user_id=BOT_ID, login=BOT_LOGIN, token=TOKEN, refresh=REFRESH, scopes=BOT_SCOPES)
    )
    yield running
    running.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings(tmp_path: Path, llm_url: str, **twitch: Any) -> Settings:
    return Settings.model_validate(
        {
            "twitch": {"enabled": True, "channels": ["streamer"], **twitch},
            "llm": {"backend": "openai", "base_url": llm_url, "model": "stub"},
            "output": {"dir": str(tmp_path / "clips")},
            "overlay": {"port": free_port()},
            "memory": {"enabled": False},
            "chat": {"user_cooldown_s": 0},
        }
    )


@pytest.mark.parametrize("automod", [False, True])
def test_lipcast_run_answers_twitch_chat_in_chat(
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    automod: bool,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWITCH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("LIPCAST_TWITCH_TOKENS", str(tmp_path / "tokens.json"))
    store = TokenStore(path=tmp_path / "tokens.json")
    store.put(
        StoredToken(
            user_id=BOT_ID, login=BOT_LOGIN, token=TOKEN, refresh=REFRESH, scopes=BOT_SCOPES
        )
    )
    if automod:  # the channel's owner signed in too, for its AutoMod
        owner = ["channel:bot", "moderation:read"]
        services.twitch.add_account(
            Account(
                user_id=CHANNEL_ID, login="streamer", token="own-t", refresh="own-r", scopes=owner
            )
        )
        store.put(
            StoredToken(
                user_id=CHANNEL_ID,
                login="streamer",
                token="own-t",
                refresh="own-r",
                scopes=owner,
                role="broadcaster",
            )
        )
        services.stub.reply = "Hello from the show. You absolute blorp!"
    store.save()
    reader, writer = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(reader, "r"))
    console = os.fdopen(writer, "w")
    question = chat_message_event("!ask are you live?")

    def viewer() -> None:
        """Ask once lipcast has subscribed; quit through the console once it answered."""
        twitch = services.twitch
        deadline = time.monotonic() + 30
        while not twitch.subscriptions and time.monotonic() < deadline:
            time.sleep(0.05)
        services.call(twitch.notify("channel.chat.message", question))
        while not twitch.chat_posts and time.monotonic() < deadline:
            time.sleep(0.05)
        console.write("/quit\n")
        console.close()

    asker = threading.Thread(target=viewer, name="viewer", daemon=True)
    asker.start()
    args = argparse.Namespace(persona=None, language=None, user=None, no_overlay=False)
    context = Context(
        settings=settings(tmp_path, services.stub.base_url, automod_check=automod),
        secrets=Secrets(twitch_client_secret=SecretStr(CLIENT_SECRET)),
        config_path=None,
    )
    assert run_command.run(args, context) == 0
    asker.join(10)
    posts = services.twitch.chat_posts
    assert len(posts) == 1
    if automod:  # the second sentence is one the channel's AutoMod would hold
        assert posts[0]["message"] == "Hello from the show."
        assert services.twitch.automod_checks == ["Hello from the show.", "You absolute blorp!"]
    else:
        assert posts[0]["message"] == "Hello from the show. Nice to see you!"
        assert services.twitch.automod_checks == []
    assert posts[0]["reply_parent_message_id"] == question["message_id"]
    assert posts[0]["sender_id"] == BOT_ID
    clips = sorted((tmp_path / "clips").glob("*.mp4"))  # the show's clips, as the overlay's
    assert len(clips) == (1 if automod else 2)
    err = capfd.readouterr().err
    assert "OBS Browser Source" in err and "adapter is off" not in err
    assert TOKEN not in err and CLIENT_SECRET not in err


def test_lipcast_run_without_credentials_names_them_and_runs_the_console(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWITCH_CLIENT_ID", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO("/quit\n"))
    args = argparse.Namespace(persona=None, language=None, user=None, no_overlay=True)
    context = Context(
        settings=settings(tmp_path, "http://127.0.0.1:9/v1"), secrets=Secrets(), config_path=None
    )
    assert run_command.run(args, context) == 0
    err = capsys.readouterr().err
    twitch = [line for line in err.splitlines() if "twitch" in line.lower()]
    assert twitch == [
        "lipcast: the twitch adapter is off: Twitch: TWITCH_CLIENT_ID is not set: put your "
        "application's client id in .env or in bot.toml [twitch] client_id (README: Twitch)"
    ]
