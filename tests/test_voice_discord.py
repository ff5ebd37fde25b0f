"""The voice feature at discord.py's REST boundary: the linked text channel's lines and the
/join command's answer, through discord.py's own HTTP client and interaction parsing against
a local server that plays Discord's API (tests/discord_support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import discord
import pytest
from discord import app_commands

from bots.discord.voice.feature import DiscordPoster, VoiceFeature, VoiceOptions
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
