"""The voice feature at discord.py's REST boundary: the linked text channel's lines and the
/join command's answer, through discord.py's own HTTP client and interaction parsing against
a local server that plays Discord's API (tests/discord_support.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest
from discord import app_commands

from bots.discord.voice.client import ListeningVoiceClient
from bots.discord.voice.feature import (
    DiscordPoster,
    VoiceFeature,
    VoiceOptions,
    read_live_report,
)
from bots.discord.voice.receive import ConnectionKeys
from pipeline.services.stt.openai import OpenAISTT
from pipeline.speech.vad import SileroVAD
from pipeline.utterance import Admission, Control, Utterance
from tests.conftest import ServeApp
from tests.discord_support import (
    APP_ID,
    CHANNEL_ID,
    TOKEN,
    FakeDiscord,
    guild_payload,
    interaction_payload,
)


class Nobody:
    async def hear(self, utterance: Utterance) -> Admission:
        return Admission(accepted=False, reason="no_route")

    async def control(self, command: Control) -> Admission:
        return Admission(accepted=False, reason="command")


@pytest.fixture
async def fake(serve_app: ServeApp, monkeypatch: pytest.MonkeyPatch) -> FakeDiscord:
    server = FakeDiscord()
    base = await serve_app(server.app())
    monkeypatch.setattr(discord.http.Route, "BASE", f"{base}/api/v10")
    return server


@pytest.fixture
async def client(fake: FakeDiscord) -> AsyncIterator[discord.Client]:
    bot = discord.Client(intents=discord.Intents.all(), application_id=APP_ID)
    await bot.login(TOKEN)  # as discord.py logs in: the bot user from GET /users/@me
    bot._connection._add_guild_from_data(guild_payload())  # type: ignore[arg-type]
    yield bot
    await bot.close()


async def test_linked_text_channel_lines_are_posted_and_grown(
    fake: FakeDiscord, client: discord.Client
) -> None:
    poster = DiscordPoster(client)
    await poster.post(CHANNEL_ID, "🎙 Ada: what is the weather like today?", None)
    reply = await poster.post(CHANNEL_ID, "Cohost: Sunny.", (b"\x00\x00\x00\x18ftypisom", "r.mp4"))
    await poster.edit(reply, "Cohost: Sunny. And warm.")
    first, second = fake.sent
    assert first.where == f"channel:{CHANNEL_ID}"
    assert first.content == "🎙 Ada: what is the weather like today?"
    assert first.allowed_mentions == {"parse": []}  # a transcript never pings anyone
    assert second.files == [("r.mp4", b"\x00\x00\x00\x18ftypisom")]
    assert second.edits == ["Cohost: Sunny. And warm."]


async def test_join_outside_a_voice_channel_says_what_to_do(
    fake: FakeDiscord, client: discord.Client
) -> None:
    tree = app_commands.CommandTree(client)
    stt = OpenAISTT(base_url="http://127.0.0.1:9/v1")  # never reached: nobody speaks
    feature = VoiceFeature(stt=stt, options=VoiceOptions(), vad=SileroVAD())
    await feature.setup(client, tree, Nobody())
    payload = interaction_payload("join")
    fake.allow_interaction(payload)
    client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
    await fake.wait_for(lambda: bool(fake.callbacks))
    [callback] = fake.callbacks
    assert callback["type"] == 4  # a message, answered at once
    assert callback["data"]["content"] == "Join a voice channel first, then use /join."
    assert callback["data"]["flags"] == 64  # ephemeral
    await feature.close()


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


VOICE_ID = 920000000000000050  # "Lounge", a voice channel of the test server
UNKNOWN_ID = 920000000000000077  # a channel the bot cannot see


@dataclass
class Joined:
    """A voice connection as ``VoiceChannel.connect`` returns it: the one part that would talk
    to Discord's voice servers, which this machine cannot reach."""

    channel: Any
    disconnected: bool = False
    on_speaker_left: Any = None

    def attach(self, receiver: Any) -> None:
        pass

    def keys(self) -> ConnectionKeys:
        return ConnectionKeys(secret_key=None, mode=None, dave=None)

    def play(self, source: Any, *, after: Any = None) -> None:
        pass

    def is_playing(self) -> bool:
        return False

    def stop(self) -> None:
        pass

    async def disconnect(self, *, force: bool = False) -> None:
        self.disconnected = True


async def test_routes_voice_channel_is_joined_when_ready_and_not_after_leave(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    connected: list[Joined] = []

    async def connect(channel: discord.VoiceChannel, **options: Any) -> Joined:
        assert options["cls"] is ListeningVoiceClient
        assert options["self_deaf"] is False  # it must hear the viewers
        connected.append(Joined(channel))
        return connected[-1]

    monkeypatch.setattr(discord.VoiceChannel, "connect", connect)
    client = discord.Client(intents=discord.Intents.all(), application_id=APP_ID)
    await client.login(TOKEN)
    payload = guild_payload()
    payload["channels"].append(
        {"id": str(VOICE_ID), "type": 2, "name": "Lounge", "position": 1}
        | {"permission_overwrites": [], "bitrate": 64000, "user_limit": 0, "parent_id": None}
    )
    client._connection._add_guild_from_data(payload)  # type: ignore[arg-type]
    tree = app_commands.CommandTree(client)
    stt = OpenAISTT(base_url="http://127.0.0.1:9/v1")  # never reached: nobody speaks
    report = tmp_path / "voice-receive.json"
    options = VoiceOptions(auto_join=(VOICE_ID, CHANNEL_ID, UNKNOWN_ID), live_report=report)
    feature = VoiceFeature(stt=stt, options=options, vad=SileroVAD())
    feature.live_report_every_s = 0.05
    await feature.setup(client, tree, Nobody())
    before = await feature.check()
    assert any("joined when lipcast runs" in line.detail and line.ok for line in before)

    await asyncio.sleep(0)  # the feature's task waits for READY
    client.dispatch("ready")  # as discord.py does once the gateway's guilds are in
    await until(lambda: len(feature.auto_joined) == 3)
    assert [joined.channel.id for joined in connected] == [VOICE_ID]
    assert feature.auto_joined[VOICE_ID] == "joined"
    assert feature.auto_joined[CHANNEL_ID] == "#general is not a voice channel"
    assert feature.auto_joined[UNKNOWN_ID].startswith("Discord says 404")
    lines = {line.detail: line.ok for line in await feature.check()}
    assert lines[f"voice channel {VOICE_ID} (a route's join): joined"] is True
    not_voice = f"voice channel {CHANNEL_ID} (a route's join): #general is not a voice channel"
    assert lines[not_voice] is False
    # what `lipcast doctor` reads from this running process
    await until(lambda: bool(read_live_report(report)) and len(read_live_report(report) or []) == 4)
    live = {line.detail: line.ok for line in read_live_report(report) or []}
    assert live[not_voice] is False
    assert (
        live[
            f"voice receive in channel {VOICE_ID}: 0 speakers, 0 packets, 0 not decryptable "
            "(DAVE), 0 corrupt, 0 lost"
        ]
        is True
    )

    client.dispatch("ready")  # a new gateway session: already there, not joined twice
    await asyncio.sleep(0.2)
    assert len(connected) == 1

    leave = interaction_payload("leave")
    fake.allow_interaction(leave)
    client._connection.parse_interaction_create(leave)  # type: ignore[arg-type]
    await fake.wait_for(lambda: bool(fake.callbacks))
    assert fake.callbacks[-1]["data"]["content"] == "Left the voice channel."
    assert connected[0].disconnected
    client.dispatch("ready")  # /leave holds until someone uses /join
    await until(lambda: "/leave" in feature.auto_joined[VOICE_ID])
    assert len(connected) == 1
    await feature.close()
    assert not report.exists()  # no lipcast hears there any more
    await client.close()
