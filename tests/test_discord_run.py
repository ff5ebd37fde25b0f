"""``lipcast run`` with Discord enabled: it joins (a local gateway and REST server that play
Discord's) and answers; without a token it says so in one line and the console goes on."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from lipcast.cli import Context
from lipcast.commands import run as run_command
from lipcast.config import Secrets, Settings
from tests.discord_support import BOT_ID, GUILD_ID, TOKEN, FakeDiscord, FakeGateway, message_payload
from tests.media import probe
from tests.openai_stub import OpenAIStub


def settings(tmp_path: Path, **more: Any) -> Settings:
    return Settings.model_validate(
        {
            "discord": {"enabled": True, "guilds": [str(GUILD_ID)]},
            "output": {"dir": str(tmp_path / "clips")},
            "overlay": {"enabled": False},
            "memory": {"enabled": False},
            "render": {"size": 192, "fps": 20, "preset": "ultrafast"},
            **more,
        }
    )


ARGS = argparse.Namespace(persona=None, language=None, user=None, no_overlay=True)


async def test_lipcast_run_joins_discord_and_answers(
    fake_discord: FakeDiscord,
    gateway: FakeGateway,
    model: OpenAIStub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(read_end))  # the console: /quit ends the run
    config = settings(tmp_path, llm={"backend": "openai", "base_url": model.base_url})
    context = Context(
        settings=config, secrets=Secrets(discord_token=SecretStr(TOKEN)), config_path=None
    )
    running = asyncio.create_task(asyncio.to_thread(run_command.run, ARGS, context))
    try:
        await asyncio.wait_for(gateway.identified.wait(), 30)
        question = message_payload(f"<@{BOT_ID}> Wie geht's?", mentions=(BOT_ID,))
        await gateway.dispatch("MESSAGE_CREATE", question)
        await fake_discord.wait_for(lambda: any(sent.files for sent in fake_discord.sent), 30)
    finally:
        os.write(write_end, b"/quit\n")
        os.close(write_end)
        code = await asyncio.wait_for(running, 30)

    assert code == 0
    text, clip = fake_discord.sent
    assert text.reference == int(question["id"]) and "Wie geht" in text.content
    assert probe(clip.files[0][1]).audio_seconds > 1.0


async def test_without_a_token_lipcast_run_says_so_once_and_the_console_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    read_end, write_end = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(read_end))
    context = Context(settings=settings(tmp_path), secrets=Secrets(), config_path=None)
    running = asyncio.create_task(asyncio.to_thread(run_command.run, ARGS, context))
    clips = tmp_path / "clips"
    try:
        os.write(write_end, b"ada: hello from the console\n")
        async with asyncio.timeout(30):
            # The clip file is written by lipcast run in its own thread: nothing to await.
            while not list(clips.glob("*.mp4")):  # noqa: ASYNC110 - the console was answered
                await asyncio.sleep(0.05)
    finally:
        os.write(write_end, b"/quit\n")
        os.close(write_end)
        code = await asyncio.wait_for(running, 30)
    assert code == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("lipcast:")]
    refused = [line for line in said if "discord" in line.lower()]
    assert refused == [
        "lipcast: the discord adapter is off: Discord is enabled but DISCORD_TOKEN is not set: "
        'put the bot\'s token in .env (README: "Discord"), or set [discord] enabled = false'
    ]
