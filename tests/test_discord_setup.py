"""Discord set-up: the token, the invite URL, and doctor's read-only checks, against a local
server that plays Discord's REST API."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import discord
import pytest
from pydantic import SecretStr

from bots.base import AdapterUnavailable
from bots.discord.adapter import DiscordAdapter, DiscordOptions
from lipcast.cli import Context, build_parser
from lipcast.commands import discord as discord_command
from lipcast.commands.doctor import _adapters
from lipcast.config import DiscordSettings, Secrets, Settings
from lipcast.wiring import build_discord_adapter
from tests.discord_support import APP_ID, GUILD_ID, TOKEN, FakeDiscord


def enabled(**options: object) -> Settings:
    return Settings(discord=DiscordSettings(enabled=True, **options))  # type: ignore[arg-type]


def test_without_a_token_the_adapter_is_unavailable_in_one_line() -> None:
    with pytest.raises(AdapterUnavailable) as caught:
        build_discord_adapter(enabled(), Secrets())
    message = str(caught.value)
    assert "DISCORD_TOKEN" in message and "\n" not in message


def test_the_adapter_takes_its_settings_and_never_shows_the_token() -> None:
    settings = enabled(guilds=[str(GUILD_ID)], max_clip_mb=1.0, replies=False)
    adapter = build_discord_adapter(settings, Secrets(discord_token=SecretStr(TOKEN)))
    assert isinstance(adapter, DiscordAdapter)
    assert adapter.options.guilds == (GUILD_ID,) and not adapter.options.replies
    assert adapter.options.max_clip_bytes == 1024 * 1024
    choices = {choice.id: choice for choice in adapter.options.personas}
    assert "de" in choices["teacher"].languages and choices["cohost"].languages
    assert not adapter.intents().message_content  # not asked for when replies are off
    assert TOKEN not in repr(adapter) and TOKEN not in adapter.describe()


def test_a_server_id_that_is_not_one_is_refused_with_the_fix() -> None:
    from lipcast.config import parse_settings
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="Copy Server ID"):
        parse_settings({"discord": {"guilds": ["my server"]}}, source="bot.toml")


async def test_check_reads_the_token_and_the_intents(fake_discord: FakeDiscord) -> None:
    lines = await DiscordAdapter(token=TOKEN).check()
    assert [line.ok for line in lines] == [True, True]
    assert "token valid" in lines[0].detail and str(APP_ID) in lines[0].detail
    assert "message content on" in lines[1].detail
    assert not any(r.startswith(("PUT", "POST", "PATCH")) for r in fake_discord.requests)

    fake_discord.application_flags = 0
    lines = await DiscordAdapter(token=TOKEN).check()
    assert not lines[1].ok and "Message Content Intent" in lines[1].detail
    lines = await DiscordAdapter(token=TOKEN, options=DiscordOptions(replies=False)).check()
    assert lines[1].ok  # replies off: the intent is not needed


async def test_check_says_a_refused_token_without_showing_it(fake_discord: FakeDiscord) -> None:
    fake_discord.valid_token = "another-token"
    (line,) = await DiscordAdapter(token=TOKEN).check()
    assert not line.ok and "DISCORD_TOKEN" in line.detail and "Reset Token" in line.detail
    assert TOKEN not in line.detail


async def test_doctor_reports_the_discord_checks(fake_discord: FakeDiscord) -> None:
    secrets = Secrets(discord_token=SecretStr(TOKEN))
    checks = await asyncio.to_thread(_adapters, enabled(), secrets)
    found = [check for check in checks if check.topic == "adapter.discord"]
    assert [check.status for check in found] == ["ok"] * len(found)
    token, intents, *voice = (check.detail for check in found)
    assert "token valid" in token and "message content" in intents
    assert any("DAVE" in line for line in voice)  # the voice feature's requirements line
    missing = await asyncio.to_thread(_adapters, enabled(), Secrets())
    (line,) = [check for check in missing if check.topic == "adapter.discord"]
    assert line.status == "FAIL" and "DISCORD_TOKEN" in line.detail


async def test_invite_prints_exactly_the_permissions_and_scopes(
    fake_discord: FakeDiscord, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["discord", "invite"])
    context = Context(
        settings=Settings(), secrets=Secrets(discord_token=SecretStr(TOKEN)), config_path=None
    )
    code = await asyncio.to_thread(discord_command.run, args, context)
    assert code == 0
    url = capsys.readouterr().out.splitlines()[0]
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == [str(APP_ID)]  # read with the token
    assert query["scope"] == ["bot applications.commands"]
    granted = discord.Permissions(int(query["permissions"][0]))
    expected = discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        attach_files=True,
        read_message_history=True,
        add_reactions=True,
        connect=True,
        speak=True,
    )
    assert granted == expected
