"""``/join`` through discord.py's own voice connection, offline, then a viewer heard under DAVE.

Nothing of discord.py is replaced: it logs in over REST and connects to the gateway (the local
server of tests/discord_support.py), takes the ``/join`` interaction from the gateway, sends its
voice state update (op 4), and connects to the voice server that the gateway names — played on
127.0.0.1 by tests/discord_voice_server.py: the voice gateway over TLS, IP discovery over UDP,
the session description, then DAVE's MLS handshake, in which discord.py's own DAVE session
commits a viewer's client into the group. That client encrypts the viewer's speech (eSpeak,
Opus, RTP, the transport cipher) and the voice server relays it to the bot's socket; lipcast
must hear the words. Then the persona answers aloud: discord.py's player sends lipcast's audio
source, DAVE-encrypted by discord.py's session, and the viewer's client must hear those words.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import davey
import discord
import discord.opus
import pytest
from discord import app_commands

from bots.discord.voice.feature import VoiceFeature, VoiceOptions
from pipeline.audio import AudioChunk
from pipeline.services.stt.faster_whisper import FasterWhisperSTT
from pipeline.speech.resample import from_stereo_pcm16
from pipeline.speech.segmenter import SegmenterOptions
from pipeline.speech.vad import SileroVAD
from pipeline.speech.wer import word_error_rate
from tests.discord_support import (
    ADA_ID,
    APP_ID,
    GUILD_ID,
    MOD_ID,
    TOKEN,
    FakeDiscord,
    FakeGateway,
    RecordingListener,
    guild_payload,
    interaction_payload,
)
from tests.discord_voice_server import BOT_SSRC, FakeVoiceServer
from tests.voice_support import (
    SENTENCES,
    Talker,
    open_packet,
    opus_frames,
    reply_clip,
    speak,
)

VOICE_ID = 920000000000000050  # "Lounge"
ADA_SSRC = 4242


def lounge_with_ada() -> dict[str, Any]:
    """The test server's GUILD_CREATE with a voice channel, Ada in it."""
    payload = guild_payload()
    payload["channels"].append(
        {"id": str(VOICE_ID), "type": 2, "name": "Lounge", "position": 1}
        | {"permission_overwrites": [], "bitrate": 64000, "user_limit": 0, "parent_id": None}
    )
    payload["voice_states"] = [
        {
            "user_id": str(ADA_ID),
            "channel_id": str(VOICE_ID),
            "session_id": "ada-session",
            "deaf": False,
            "mute": False,
            "self_deaf": False,
            "self_mute": False,
            "self_video": False,
            "suppress": False,
            "request_to_speak_timestamp": None,
        }
    ]
    return payload


@dataclass
class Joined:
    client: discord.Client
    feature: VoiceFeature
    listener: RecordingListener
    voice: FakeVoiceServer


async def until(condition: Callable[[], bool], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def bot_with_voice(
    gateway: FakeGateway, folder: Path, **options: Any
) -> AsyncIterator[Joined]:
    """A bot connected to the gateway with the voice feature (``options``) set up; the voice
    server running."""
    voice = FakeVoiceServer(channel_id=VOICE_ID, viewer_id=ADA_ID)
    trusted = await voice.start(folder)
    gateway.voice_endpoint = voice.endpoint
    gateway.guild = lounge_with_ada()
    client = discord.Client(
        intents=discord.Intents.all(),
        application_id=APP_ID,
        connector=aiohttp.TCPConnector(ssl=trusted),  # trusts the voice server's certificate
    )
    listener = RecordingListener()
    segmenter = SegmenterOptions(end_silence_ms=400)
    settings = VoiceOptions(segmenter=segmenter, language="en", **options)
    feature = VoiceFeature(stt=FasterWhisperSTT(), options=settings, vad=SileroVAD())
    await client.login(TOKEN)
    await feature.setup(client, app_commands.CommandTree(client), listener)
    running = asyncio.create_task(client.connect(reconnect=False), name="test-discord-client")
    await asyncio.wait_for(client.wait_until_ready(), 30)
    try:
        yield Joined(client, feature, listener, voice)
    finally:
        await feature.close()
        await client.close()
        await asyncio.gather(running, return_exceptions=True)
        await voice.close()


@pytest.fixture
async def connected(
    fake_discord: FakeDiscord, gateway: FakeGateway, tmp_path: Path
) -> AsyncIterator[Joined]:
    async with bot_with_voice(gateway, tmp_path) as joined:
        yield joined


async def interact(fake: FakeDiscord, gateway: FakeGateway, name: str) -> str:
    """``/name`` typed by Ada, through the gateway; the bot's answer to her."""
    payload = interaction_payload(name)
    fake.allow_interaction(payload)
    answered = len(fake.callbacks) + len(fake.sent)
    await gateway.dispatch("INTERACTION_CREATE", payload)
    await fake.wait_for(lambda: len(fake.callbacks) + len(fake.sent) > answered, 30)
    if name == "join":  # deferred, then a follow-up once connected
        await fake.wait_for(lambda: any(s.where.startswith("followup:") for s in fake.sent), 30)
        return [s for s in fake.sent if s.where.startswith("followup:")][-1].content
    return str(fake.callbacks[-1]["data"]["content"])


async def test_join_connects_through_discord_py_hears_a_viewer_and_answers_aloud_under_dave(
    fake_discord: FakeDiscord, gateway: FakeGateway, connected: Joined
) -> None:
    voice, feature = connected.voice, connected.feature
    answer = await interact(fake_discord, gateway, "join")
    assert answer == f"Listening in <#{VOICE_ID}>. Talk to me!"
    join = gateway.voice_updates[0]
    assert (int(join["guild_id"]), int(join["channel_id"])) == (GUILD_ID, VOICE_ID)
    assert join["self_deaf"] is False  # it must hear the viewers
    assert voice.identify is not None
    assert int(voice.identify["server_id"]) == GUILD_ID
    assert voice.identify["session_id"] == "voice-session-1"
    assert voice.identify["token"] == "voice-token-1"
    assert voice.identify["max_dave_protocol_version"] >= 1

    # DAVE: discord.py's own session committed the viewer's client into the group
    await asyncio.wait_for(voice.dave_ready.wait(), 30)
    session = feature._sessions[GUILD_ID]
    await until(lambda: bool((dave := session.link.keys().dave) and dave.ready))
    assert voice.viewer is not None and voice.viewer.ready

    await voice.speaking(ADA_ID, ADA_SSRC)
    frames = opus_frames(await speak(SENTENCES[3]))
    talker = Talker(secret_key=voice.secret_key, ssrc=ADA_SSRC, dave=voice.viewer)
    for packet in talker.packets(frames):
        voice.send_media([packet])
        await asyncio.sleep(0.002)
    await asyncio.wait_for(connected.listener.arrived.wait(), 60)
    [heard] = connected.listener.heard
    assert (heard.user, heard.user_name, heard.trigger) == (str(ADA_ID), "Ada", "voice")
    assert (heard.guild, heard.channel) == (str(GUILD_ID), str(VOICE_ID))
    assert word_error_rate([(SENTENCES[3], heard.text or "")]) <= 0.2
    stats = session.stats()[ADA_ID]
    assert stats.decoded == len(frames) and stats.dave_failures == 0
    assert stats.transport_failures == 0

    # The answer, aloud: discord.py's player sends lipcast's audio source, which its own DAVE
    # session encrypts; the viewer's client opens the packets and hears the words.
    said = SENTENCES[4]
    spoken = await speak(said)
    await feature.play(reply_clip(heard, spoken, said))
    await until(lambda: len(voice.received) >= spoken.duration_s / 0.02, 30)
    await until(lambda: not session.link.is_playing(), 30)
    assert voice.viewer is not None and connected.client.user is not None
    decoder = discord.opus.Decoder()  # type: ignore[no-untyped-call]
    pcm = bytearray()
    encrypted = 0
    for packet in voice.received:
        ssrc, frame = open_packet(packet, voice.secret_key)
        assert ssrc == BOT_SSRC
        opus = voice.viewer.decrypt(connected.client.user.id, davey.MediaType.audio, frame)
        encrypted += frame != opus
        pcm += decoder.decode(opus, fec=False)
    assert encrypted >= 0.9 * len(voice.received)  # end to end: DAVE frames, not plain Opus
    heard_back = AudioChunk(samples=from_stereo_pcm16(bytes(pcm)), sample_rate=48_000)
    transcript = await FasterWhisperSTT().transcribe(heard_back, language="en")
    assert word_error_rate([(said, transcript.text)]) <= 0.2

    assert await interact(fake_discord, gateway, "leave") == "Left the voice channel."
    await until(lambda: gateway.voice_updates[-1]["channel_id"] is None)


async def test_a_routes_voice_channel_is_joined_through_discord_py_when_the_bot_is_ready(
    fake_discord: FakeDiscord, gateway: FakeGateway, tmp_path: Path
) -> None:
    async with bot_with_voice(gateway, tmp_path, auto_join=(VOICE_ID,)) as joined:
        await asyncio.wait_for(joined.voice.dave_ready.wait(), 30)
        await until(lambda: joined.feature.auto_joined.get(VOICE_ID) == "joined")
        assert [int(update["channel_id"]) for update in gateway.voice_updates] == [VOICE_ID]
        assert joined.voice.identify is not None
        assert fake_discord.sent == []  # nobody typed /join


async def test_a_viewer_joining_mid_call_is_heard_after_the_dave_transition(
    fake_discord: FakeDiscord, gateway: FakeGateway, connected: Joined
) -> None:
    voice, feature, listener = connected.voice, connected.feature, connected.listener
    assert (
        await interact(fake_discord, gateway, "join") == f"Listening in <#{VOICE_ID}>. Talk to me!"
    )
    await asyncio.wait_for(voice.dave_ready.wait(), 30)
    session = feature._sessions[GUILD_ID]
    await until(lambda: bool((dave := session.link.keys().dave) and dave.ready))

    # Mona joins the call: a new member, a new epoch, new keys for everyone
    await voice.join_call(MOD_ID)
    await asyncio.wait_for(voice.transition_done.wait(), 30)
    assert voice.transitions == [2]  # announced with opcode 29, readied (23), executed (22)
    assert set(voice.viewers) == {ADA_ID, MOD_ID}

    for user, ssrc, sentence in ((ADA_ID, ADA_SSRC, SENTENCES[1]), (MOD_ID, 4343, SENTENCES[5])):
        await voice.speaking(user, ssrc)
        talker = Talker(secret_key=voice.secret_key, ssrc=ssrc, dave=voice.viewers[user])
        for packet in talker.packets(opus_frames(await speak(sentence))):
            voice.send_media([packet])
            await asyncio.sleep(0.002)
    await until(lambda: len(listener.heard) == 2, 60)
    said = {heard.user_name: heard.text or "" for heard in listener.heard}
    assert set(said) == {"Ada", "Mona"}
    assert word_error_rate([(SENTENCES[1], said["Ada"]), (SENTENCES[5], said["Mona"])]) <= 0.2
    stats = session.stats()
    assert stats[ADA_ID].dave_failures == stats[MOD_ID].dave_failures == 0
