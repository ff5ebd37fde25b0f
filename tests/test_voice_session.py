"""A joined voice channel end to end, offline: discord.py's own voice client state, its socket
reader thread receiving real UDP packets, its voice-gateway message handling for SPEAKING and
CLIENT_DISCONNECT; then VAD, tiny.en, the listener; replies played as 20 ms frames with
barge-in. Only what would go out to Discord's servers (the UDP send of our own speech) is
replaced: a player thread reads the source every 20 ms as discord.py's ``AudioPlayer`` does."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import discord
import numpy as np
import pytest
from discord.gateway import DiscordVoiceWebSocket

from bots.discord.voice.client import ListeningVoiceClient
from bots.discord.voice.feature import (
    VoiceOptions,
    VoiceSession,
    receive_report,
    write_live_report,
)
from bots.discord.voice.playback import FRAME_BYTES, SpeechSource
from pipeline.audio import AudioChunk
from pipeline.clips import Clip
from pipeline.services.stt.faster_whisper import FasterWhisperSTT
from pipeline.speech.segmenter import SegmenterOptions
from pipeline.speech.vad import SileroVAD
from pipeline.speech.wer import word_error_rate
from pipeline.utterance import Admission, Control, Utterance
from tests.voice_dave import Group, form_group
from tests.voice_support import SENTENCES, Talker, opus_frames, reply_clip, speak

GUILD, VOICE_CHANNEL, TEXT_CHANNEL = 500, 600, 601
ADA, BEN = 2002, 3003
SSRC_ADA, SSRC_BEN = 4242, 4343
SECRET = os.urandom(32)
VAD = SileroVAD()


def member(user_id: int, name: str) -> dict[str, Any]:
    user: dict[str, Any] = {"id": str(user_id), "username": name.lower(), "global_name": name}
    user |= {"discriminator": "0", "avatar": None}
    return {"user": user, "roles": [], "joined_at": "2026-01-01T00:00:00+00:00"} | {
        "deaf": False,
        "mute": False,
        "flags": 0,
        "nick": None,
    }


GUILD_PAYLOAD = {
    "id": str(GUILD),
    "name": "Lab",
    "owner_id": str(ADA),
    "roles": [
        {"id": str(GUILD), "name": "@everyone", "permissions": "0", "position": 0}
        | {"color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
    ],
    "channels": [
        {"id": str(VOICE_CHANNEL), "type": 2, "name": "Talk", "position": 0}
        | {"permission_overwrites": [], "bitrate": 64000, "user_limit": 0, "parent_id": None}
    ],
    "members": [member(ADA, "Ada"), member(BEN, "Ben")],
    "member_count": 2,
    "voice_states": [],
    "presences": [],
    "threads": [],
    "stage_instances": [],
    "guild_scheduled_events": [],
    "emojis": [],
    "stickers": [],
    "features": [],
}


class OfflineVoiceClient(ListeningVoiceClient):
    """discord.py's voice client, connected to nothing: our speech is read as discord.py's
    player reads it (a thread, one frame every 20 ms) and recorded instead of sent."""

    played: list[tuple[float, bytes]]
    ended_at: float | None

    def play(
        self, source: Any, *, after: Callable[[Exception | None], Any] | None = None, **_: Any
    ) -> None:
        self.played = getattr(self, "played", [])
        self.ended_at = None

        def run() -> None:
            while True:
                frame = source.read()
                if not frame:
                    self.ended_at = time.monotonic()
                    source.cleanup()
                    if after is not None:
                        after(None)
                    return
                self.played.append((time.monotonic(), frame))
                time.sleep(0.02)

        self._player_thread = threading.Thread(target=run, name="test-audio-player", daemon=True)
        self._player_thread.start()

    async def disconnect(self, *, force: bool = False) -> None:
        self._connection._socket_reader.stop()


@dataclass
class Listening:
    """A recording listener (the pipeline's router is tested elsewhere)."""

    heard: list[Utterance] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def hear(self, utterance: Utterance) -> Admission:
        self.heard.append(utterance)
        self.arrived.set()
        return Admission(accepted=True, reason="accepted")

    async def control(self, command: Control) -> Admission:
        return Admission(accepted=False, reason="command")


@dataclass
class Poster:
    posts: list[tuple[int, str, Any]] = field(default_factory=list)
    edits: list[str] = field(default_factory=list)

    async def post(self, channel_id: int, text: str, media: tuple[bytes, str] | None) -> Any:
        self.posts.append((channel_id, text, media))
        return len(self.posts)

    async def edit(self, message: Any, text: str) -> None:
        self.edits.append(text)


@dataclass
class Rig:
    client: discord.Client
    link: OfflineVoiceClient
    session: VoiceSession
    listener: Listening
    poster: Poster
    ws: DiscordVoiceWebSocket
    sender: socket.socket
    address: tuple[str, int]
    group: Group
    rejoins: list[int]

    async def gateway(self, op: int, data: dict[str, Any]) -> None:
        """A voice-gateway message, handled by discord.py's own voice websocket."""
        await self.ws.received_message({"op": op, "d": data})

    async def send(self, packets: list[bytes], *, pace_s: float = 0.0) -> None:
        for packet in packets:
            self.sender.sendto(packet, self.address)
            await asyncio.sleep(pace_s)

    def talker(self, user: int, ssrc: int) -> Talker:
        return Talker(secret_key=SECRET, ssrc=ssrc, dave=self.group.viewers[user])


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperSTT:
    return FasterWhisperSTT()


@pytest.fixture
async def rig(whisper: FasterWhisperSTT) -> AsyncIterator[Rig]:
    client = discord.Client(intents=discord.Intents.all())
    guild = client._connection._add_guild_from_data(GUILD_PAYLOAD)  # type: ignore[arg-type]
    channel = guild.get_channel(VOICE_CHANNEL)
    link = OfflineVoiceClient(client, channel)  # type: ignore[arg-type]
    group = form_group((ADA, BEN))
    # what discord.py's voice gateway sets on SESSION_DESCRIPTION and the DAVE opcodes
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    link._connection.socket = udp
    link._connection.secret_key = list(SECRET)
    link._connection.mode = "aead_xchacha20_poly1305_rtpsize"
    link._connection.dave_session = group.bot
    link._connection.dave_protocol_version = 1
    ws = DiscordVoiceWebSocket(None, asyncio.get_running_loop(), hook=link._connection.hook)  # type: ignore[arg-type]
    ws._connection = link._connection
    listener, poster, rejoins = Listening(), Poster(), []

    def rejoin() -> None:
        rejoins.append(1)

    session = VoiceSession(
        link=link,
        guild_id=GUILD,
        channel_id=VOICE_CHANNEL,
        listener=listener,
        stt=whisper,
        vad=VAD,
        options=VoiceOptions(
            segmenter=SegmenterOptions(end_silence_ms=400),
            text_channel=TEXT_CHANNEL,
            rejoin_after_failures=36,
            language="en",
        ),
        name_of=lambda user: m.display_name if (m := guild.get_member(user)) else str(user),
        poster=poster,
        on_rejoin=rejoin,
    )
    link.on_speaker_left = session.forget
    session.start()
    link._connection._socket_reader.resume()  # as discord.py does once connected
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield Rig(
        client, link, session, listener, poster, ws, sender, udp.getsockname(), group, rejoins
    )
    await session.close()
    await link.disconnect()
    sender.close()
    udp.close()
    await client.close()


async def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_speech_in_the_channel_becomes_an_utterance_and_a_chat_line(rig: Rig) -> None:
    frames = opus_frames(await speak(SENTENCES[1]))
    await rig.gateway(5, {"user_id": str(ADA), "ssrc": SSRC_ADA, "speaking": 1})
    await rig.send(rig.talker(ADA, SSRC_ADA).packets(frames))
    await wait_for(lambda: bool(rig.listener.heard))
    [utterance] = rig.listener.heard
    assert (utterance.platform, utterance.channel, utterance.guild) == (
        "discord",
        str(VOICE_CHANNEL),
        str(GUILD),
    )
    assert (utterance.user, utterance.user_name, utterance.trigger) == (str(ADA), "Ada", "voice")
    assert utterance.viewer.channel == str(GUILD)  # remembered with Ada's text messages
    assert word_error_rate([(SENTENCES[1], utterance.text or "")]) == 0.0
    assert rig.poster.posts == [(TEXT_CHANNEL, f"🎙 Ada: {utterance.text}", None)]
    stats = rig.session.stats()[ADA]
    assert stats.decoded == len(frames) and stats.dave_failures == 0


async def test_speaking_event_after_the_first_packets_and_a_disconnect(rig: Rig) -> None:
    frames = opus_frames(await speak(SENTENCES[3]))
    packets = rig.talker(BEN, SSRC_BEN).packets(frames)
    await rig.send(packets[:15])
    await asyncio.sleep(0.1)  # the socket thread has them: held, as the SSRC is unknown
    await rig.gateway(5, {"user_id": str(BEN), "ssrc": SSRC_BEN, "speaking": 1})
    await rig.send(packets[15:])
    await wait_for(lambda: bool(rig.listener.heard))
    assert word_error_rate([(SENTENCES[3], rig.listener.heard[0].text or "")]) <= 0.2
    assert rig.listener.heard[0].user_name == "Ben"
    await rig.gateway(13, {"user_id": str(BEN)})
    assert rig.session.receiver.user_of(SSRC_BEN) is None


def clip(turn: str, seq: int, audio: AudioChunk, text: str) -> Clip:
    origin = Utterance(
        platform="discord", channel=str(VOICE_CHANNEL), guild=str(GUILD), user=str(ADA), text="hi"
    )
    return reply_clip(origin, audio, text, turn=turn, seq=seq)


def tone(seconds: float, level: float, rate: int = 22_050) -> AudioChunk:
    t = np.arange(int(seconds * rate)) / rate
    return AudioChunk(
        samples=(level * np.sin(2 * np.pi * 300 * t)).astype(np.float32), sample_rate=rate
    )


async def test_reply_plays_sentence_by_sentence_in_order(rig: Rig) -> None:
    levels = (0.1, 0.3, 0.6)
    for seq, level in enumerate(levels):
        await rig.session.play(clip("t1", seq, tone(0.4, level), f"Sentence {seq}."))
        await asyncio.sleep(0.05)  # the next sentence is ready a little later
    await wait_for(lambda: rig.link.ended_at is not None, 10)
    frames = [np.frombuffer(frame, dtype="<i2") for _, frame in rig.link.played]
    assert all(len(frame) * 2 == FRAME_BYTES for frame in frames)
    loud = [int(np.abs(frame).max()) for frame in frames if np.abs(frame).max() > 500]
    assert len(loud) >= 3 * 19  # 0.4 s each, resampled to 48 kHz stereo
    # the sentences come out whole and in their order: levels only rise
    assert loud == sorted(loud)
    assert rig.poster.posts == [(TEXT_CHANNEL, "Cohost: Sentence 0.", None)]
    assert rig.poster.edits == [
        "Cohost: Sentence 0. Sentence 1.",
        "Cohost: Sentence 0. Sentence 1. Sentence 2.",
    ]


def received(rig: Rig, user: int) -> int:
    stats = rig.session.receiver.stats().get(user)
    return stats.packets if stats is not None else 0


async def test_barge_in_stops_the_reply_and_drops_the_rest_of_it(rig: Rig) -> None:
    await rig.session.play(clip("t2", 0, tone(5.0, 0.5), "A long sentence."))
    await wait_for(lambda: len(getattr(rig.link, "played", [])) > 10)
    source = rig.session._source
    assert isinstance(source, SpeechSource)
    await rig.gateway(5, {"user_id": str(ADA), "ssrc": SSRC_ADA, "speaking": 1})
    packets = rig.talker(ADA, SSRC_ADA).packets(opus_frames(await speak("Hello, can you hear me?")))
    sent = 0
    while not source.ended:
        await rig.send(packets[sent : sent + 1])
        sent += 1
        await wait_for(lambda n=sent: received(rig, ADA) >= n, 5)  # type: ignore[misc]
    assert sent <= 10  # stopped within 200 ms of the viewer's audio
    await wait_for(lambda: rig.link.ended_at is not None, 2)
    played_before = len(rig.link.played)
    await rig.session.play(clip("t2", 1, tone(1.0, 0.5), "More of the old reply."))
    await asyncio.sleep(0.2)
    assert len(rig.link.played) == played_before  # the interrupted reply stays silent
    await rig.session.play(clip("t3", 0, tone(0.3, 0.5), "A new reply."))
    await wait_for(lambda: len(rig.link.played) > played_before, 5)


async def test_sustained_decrypt_failures_rejoin_and_show_in_doctor(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.session.report_every_s = 0.2
    stranger = form_group((ADA,))  # a client still on an old group's keys
    packets = Talker(secret_key=SECRET, ssrc=SSRC_ADA, dave=stranger.viewers[ADA]).packets(
        opus_frames(await speak("Hello there, how are you doing?"))
    )
    await rig.gateway(5, {"user_id": str(ADA), "ssrc": SSRC_ADA, "speaking": 1})
    await rig.send(packets[:40])
    await wait_for(lambda: bool(rig.rejoins) and received(rig, ADA) == 40)
    assert rig.rejoins == [1]
    [line] = receive_report([rig.session])
    assert "40 not decryptable (DAVE)" in line.detail and "failing now" in line.detail
    assert not line.ok
    await wait_for(lambda: "40 packets not decryptable (DAVE)" in caplog.text, 5)
    assert "Ada: 40 DAVE, 0 corrupt" in caplog.text

    # `lipcast doctor`, another process, reads what the running feature writes every 5 s
    from lipcast.cli import Context
    from lipcast.commands import doctor
    from lipcast.config import Secrets, Settings
    from lipcast.wiring import voice_live_report

    write_live_report(voice_live_report(), [line])
    context = Context(settings=Settings(), secrets=Secrets(), config_path=None)
    checks = await asyncio.to_thread(doctor.checks, context)  # it runs its own event loop
    [live] = [check for check in checks if check.topic == "voice.live"]
    assert live.status == "FAIL" and "40 not decryptable (DAVE)" in live.detail
    stale = json.loads(voice_live_report().read_text())
    stale["written_at"] -= 120  # that lipcast stopped two minutes ago
    voice_live_report().write_text(json.dumps(stale))
    checks = await asyncio.to_thread(doctor.checks, context)
    assert not [check for check in checks if check.topic == "voice.live"]
    voice_live_report().unlink()


async def test_feature_registers_join_and_leave_and_plays_only_its_channels(
    whisper: FasterWhisperSTT,
) -> None:
    from discord import app_commands

    from bots.discord.voice.feature import VoiceFeature

    client = discord.Client(intents=discord.Intents.all())
    tree = app_commands.CommandTree(client)
    feature = VoiceFeature(stt=whisper, options=VoiceOptions(), vad=VAD)
    await feature.setup(client, tree, Listening())
    assert {command.name for command in tree.get_commands()} == {"join", "leave"}
    elsewhere = clip("t9", 0, tone(0.2, 0.5), "Not for voice.")
    await feature.play(elsewhere)  # no channel joined: nothing happens, nothing fails
    assert await feature.leave(GUILD) is False
    checks = await feature.check()
    assert checks[0].ok and "DAVE v1" in checks[0].detail
    await client.close()
