"""``lipcast run`` with several adapters: one that cannot start is reported in one line, the
others keep working; ``lipcast doctor`` names what is missing."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from bots import ADAPTERS
from bots.base import AdapterUnavailable, ChatAdapter, Listener, Readiness
from lipcast.cli import Context
from lipcast.commands import doctor
from lipcast.commands import run as run_command
from lipcast.config import Settings, load_secrets
from lipcast.wiring import ADAPTER_BUILDERS
from pipeline.backends import BackendSpec

MISSING = "TWITCH_CLIENT_ID is not set: run `lipcast twitch auth` (README: Twitch)"


class RefusedAtStart(ChatAdapter):
    """An adapter whose platform refuses it (a revoked token) when it connects."""

    platform: ClassVar[str] = "twitch"

    async def run(self, listener: Listener) -> None:
        raise AdapterUnavailable(MISSING)

    async def check(self) -> list[Readiness]:
        return [Readiness(ok=False, detail=MISSING)]


def settings_with_twitch(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "twitch": {"enabled": True},
            "output": {"dir": str(tmp_path / "clips")},
            "overlay": {"enabled": False},
            "memory": {"enabled": False},
            "chat": {"user_cooldown_s": 0},
        }
    )


@pytest.fixture
def twitch_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ADAPTERS, "twitch", BackendSpec(target="tests:RefusedAtStart"))
    monkeypatch.setitem(ADAPTER_BUILDERS, "twitch", lambda settings, secrets: RefusedAtStart())


@pytest.mark.usefixtures("twitch_refused")
def test_an_adapter_that_cannot_start_leaves_the_others_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("ada: hello from the console\n/quit\n"))
    args = argparse.Namespace(persona=None, language=None, user=None, no_overlay=True)
    context = Context(
        settings=settings_with_twitch(tmp_path), secrets=load_secrets(None), config_path=None
    )
    code = run_command.run(args, context)
    out, err = capsys.readouterr()
    assert code == 0
    refused = [line for line in err.splitlines() if "twitch" in line]
    assert refused == [f"lipcast: the twitch adapter is off: {MISSING}"]  # one line
    # ... and the console was answered all the same: its clip was rendered and written
    assert "hello from the console" in out
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 1


@pytest.mark.usefixtures("twitch_refused")
def test_doctor_lists_each_adapter_and_what_it_lacks(tmp_path: Path) -> None:
    context = Context(
        settings=settings_with_twitch(tmp_path), secrets=load_secrets(None), config_path=None
    )
    found = {check.topic: check for check in doctor.checks(context)}
    assert found["adapter.console"].status == "ok"
    assert (found["adapter.twitch"].status, found["adapter.twitch"].detail) == ("FAIL", MISSING)


def test_doctor_says_which_adapters_are_off() -> None:
    context = Context(settings=Settings(), secrets=load_secrets(None), config_path=None)
    found = {check.topic: check for check in doctor.checks(context)}
    for name in ADAPTERS:
        if name != "console":
            assert found[f"adapter.{name}"].detail == f"off ([{name}] enabled = false)"


def test_discord_without_its_token_is_one_line_and_the_console_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO("ada: hello from the console\n/quit\n"))
    settings = Settings.model_validate(
        {
            "discord": {"enabled": True},
            "output": {"dir": str(tmp_path / "clips")},
            "overlay": {"enabled": False},
            "memory": {"enabled": False},
        }
    )
    args = argparse.Namespace(persona=None, language=None, user=None, no_overlay=True)
    context = Context(settings=settings, secrets=load_secrets(None), config_path=None)
    assert run_command.run(args, context) == 0
    out, err = capsys.readouterr()
    discord_lines = [line for line in err.splitlines() if "discord adapter" in line]
    assert len(discord_lines) == 1 and "DISCORD_TOKEN" in discord_lines[0]
    assert "hello from the console" in out
    found = {check.topic: check for check in doctor.checks(context)}
    assert found["adapter.discord"].status == "FAIL"
    assert "DISCORD_TOKEN" in found["adapter.discord"].detail
