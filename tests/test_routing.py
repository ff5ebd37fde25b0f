"""The platform core: routes to personas and stages, replies back where they came from,
moderator commands, and sinks that never wait on each other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import numpy as np
import pytest

from pipeline.audio import AudioChunk
from pipeline.clips import TIMELINE_CONTENT_TYPE, Clip, TurnInfo, pcm_content_type
from pipeline.conversation.turns import ClipSink, TurnReport
from pipeline.jobs.wire import RenderJob
from pipeline.jobs.worker import ResultChunk
from pipeline.routing import Route
from pipeline.utterance import Control
from tests.conversation_support import RecordingHandler, RecordingSink
from tests.openai_stub import OpenAIStub
from tests.platform_support import (
    DiscordLike,
    TwitchLike,
    echo_reply,
    message,
    running_router,
    stub_llm,
)

STREAM = Route(platform="twitch", persona="cohost", stage="stream")
DMS = Route(
    platform="discord",
    direct=True,
    persona="teacher",
    language="de",
    stage="personal",
    per="viewer",
)
CHANNELS = Route(platform="discord", direct=False, persona="cohost", stage="personal")


async def test_each_message_takes_the_first_route_that_matches() -> None:
    only_general = Route(
        platform="discord", channel="#general", persona="teacher", stage="personal"
    )
    anywhere = Route(platform="discord", persona="cohost", stage="personal")
    general = message("discord", "111", "ada", "hi", channel_name="general")
    other = message("discord", "222", "bob", "hi", channel_name="random")
    async with running_router([only_general, anywhere], [DiscordLike()]) as p:
        assert p.router.route_for(general) == (0, only_general)
        assert p.router.route_for(other) == (1, anywhere)
        assert p.router.route_for(message("twitch", "1", "cy", "hi")) is None


async def test_messages_without_a_route_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    handler = RecordingHandler()
    caplog.set_level(logging.DEBUG, logger="pipeline.routing")
    async with running_router([STREAM], [TwitchLike()], handler=handler) as p:
        admission = await p.router.hear(message("discord", "5", "ada", "hello there"))
    assert (admission.accepted, admission.reason) == (False, "no_route")
    assert handler.spoken == [] and "no route" in caplog.text


async def test_replies_go_back_to_the_platform_and_message_they_came_from() -> None:
    twitch, discord = TwitchLike(), DiscordLike()
    model = OpenAIStub(reply=echo_reply, tokens_per_s=2000)
    await model.start()
    llm = stub_llm(model.base_url)
    asked = [
        message("twitch", "chan", "ada", "twitch things"),
        message("discord", "dm-bob", "bob", "Berliner Pfannkuchen", direct=True),
        message("discord", "ch-9", "cy", "discord channels", guild="g1"),
    ]
    try:
        async with running_router([STREAM, DMS, CHANNELS], [twitch, discord], llm=llm) as p:
            for utterance in asked:
                assert (await p.router.hear(utterance)).accepted
            await twitch.wait_replies(1)
            await discord.wait_replies(2)
    finally:
        await llm.aclose()
        await model.close()
    (to_twitch,) = twitch.replies
    assert to_twitch.utterance.message_id == asked[0].message_id
    assert "twitch things" in to_twitch.text and to_twitch.clips == ()
    by_message = {reply.utterance.message_id: reply for reply in discord.replies}
    for utterance in asked[1:]:
        reply = by_message[utterance.message_id]
        assert utterance.text is not None and utterance.text in reply.text
        # Discord posts the video: the reply carries its clips, in order, of its own turn
        assert [clip.seq for clip in reply.clips] == list(range(len(reply.clips)))
        assert {clip.turn.turn_id for clip in reply.clips} == {reply.turn_id}
    assert twitch.played == []  # Twitch takes no clips: its video goes to the overlay
    assert [clip.turn.utterance.user for clip in discord.played].count("bob") >= 1


async def test_personal_conversations_are_one_per_viewer_or_per_channel() -> None:
    async with running_router([DMS, CHANNELS], [DiscordLike()]) as p:
        for user in ("ada", "bob"):
            await p.router.hear(message("discord", f"dm-{user}", user, "hallo", direct=True))
        for user in ("cy", "dee"):
            await p.router.hear(message("discord", "ch-1", user, "hello all", guild="g"))
        await p.router.wait_idle()
        opened = [(persona.id, persona.language, stage) for persona, stage, _ in p.conversations]
    # one conversation per DM viewer (the teacher, in German), one for the shared channel
    assert sorted(opened) == [
        ("cohost", "en", "personal"),
        ("teacher", "de", "personal"),
        ("teacher", "de", "personal"),
    ]


async def test_a_moderator_switches_the_persona_of_the_route_it_is_typed_in() -> None:
    discord = DiscordLike()
    async with running_router([STREAM, CHANNELS], [TwitchLike(), discord]) as p:
        viewer = message("discord", "ch-1", "ada", "!persona teacher fr", guild="g")
        refused = await p.router.hear(viewer)
        mod = message("discord", "ch-1", "mo", "!persona teacher fr", guild="g", moderator=True)
        switched = await p.router.hear(mod)
        await p.router.hear(message("discord", "ch-1", "ada", "Bonjour tout le monde", guild="g"))
        await p.router.hear(message("discord", "ch-2", "bob", "Hello elsewhere", guild="g"))
        await p.router.hear(message("twitch", "chan", "cy", "Hello stream"))
        await p.router.wait_idle()
    assert (refused.accepted, refused.reason) == (False, "not_allowed")
    assert switched.reason == "command" and "fr" in switched.detail
    speakers = {clip.turn.utterance.channel: clip.turn.persona_id for clip in discord.played}
    assert speakers == {"ch-1": "teacher", "ch-2": "cohost"}


async def test_a_persona_switch_in_the_middle_of_a_conversation_keeps_its_place() -> None:
    discord = DiscordLike()
    async with running_router([DMS], [discord]) as p:
        await p.router.hear(message("discord", "dm", "ada", "Guten Tag", direct=True))
        await p.router.wait_idle()
        answer = await p.router.control(
            Control(
                name="persona",
                origin=message("discord", "dm", "ada", "/persona", direct=True),  # her own DM
                argument="cohost",
            )
        )
        await p.router.hear(message("discord", "dm", "ada", "Hello again", direct=True))
        await p.router.wait_idle()
        opened = len(p.conversations)
    assert "now" in answer.detail
    assert [clip.turn.persona_id for clip in discord.played] == ["teacher", "cohost"]
    assert opened == 1  # the same conversation, its history and order kept


async def test_moderator_commands_from_anyone_else_are_refused() -> None:
    async with running_router([STREAM], [TwitchLike()]) as p:
        for command in ("!skip", "!clear", "!pause", "!resume", "!persona teacher"):
            admission = await p.router.hear(message("twitch", "chan", "ada", command))
            assert admission.reason == "not_allowed", command
        paused = await p.router.hear(message("twitch", "chan", "mo", "!pause", moderator=True))
        refused = await p.router.hear(message("twitch", "chan", "ada", "are you there?"))
        await p.router.hear(message("twitch", "chan", "mo", "!resume", broadcaster=True))
        taken = await p.router.hear(message("twitch", "chan", "ada", "and now?"))
    assert paused.detail == "replies paused"
    assert (refused.accepted, refused.reason) == (False, "paused")
    assert taken.accepted


class StalledSink(ClipSink):
    """A sink that hangs on its first clip until released (or 5 s pass)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.clips: list[Clip] = []

    async def clip_ready(self, clip: Clip) -> bool:
        if not self.clips:
            async with asyncio.timeout(5.0):
                await self.release.wait()
        self.clips.append(clip)
        return True


class BrokenSink(ClipSink):
    async def turn_started(self, turn: TurnInfo) -> None:
        raise RuntimeError("this sink is broken")

    async def clip_ready(self, clip: Clip) -> bool:
        raise RuntimeError("this sink is broken")

    async def turn_ended(self, turn: TurnInfo, report: TurnReport) -> None:
        raise RuntimeError("this sink is broken")


async def test_a_stalled_sink_delays_no_other_sink_and_no_later_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pipeline.sinks.queued import QueuedSink

    stalled, healthy = StalledSink(), RecordingSink()
    sinks: list[ClipSink] = [QueuedSink(stalled), QueuedSink(BrokenSink()), QueuedSink(healthy)]
    async with running_router([STREAM], [TwitchLike()], stream_sinks=lambda: sinks) as p:
        for n, text in enumerate(["First message here.", "Second one, later.", "Third."]):
            await p.router.hear(message("twitch", "chan", f"v{n}", text))
        async with asyncio.timeout(4.0):
            await p.router.wait_idle()  # every turn finished while one sink hangs
        assert not stalled.release.is_set() and stalled.clips == []
        assert len(healthy.clips) == 3  # the healthy sink got all three turns' clips
        stalled.release.set()
        for sink in sinks:
            await sink.aclose()
    assert len(stalled.clips) == 3  # and the stalled one caught up, in order
    assert [c.turn.utterance.user for c in stalled.clips] == ["v0", "v1", "v2"]
    assert "this sink is broken" in caplog.text  # the broken one was logged, nothing else


class SlowMP4Handler:
    """A render worker's handler whose MP4 comes well after the speech and timeline (as the
    real one does: the page's parts first, then frames drawn and encoded)."""

    def __init__(self) -> None:
        self.mp4_may_come = asyncio.Event()

    async def handle(self, job: RenderJob) -> AsyncIterator[ResultChunk]:
        speech = AudioChunk(samples=np.zeros(8000, dtype=np.float32), sample_rate=16000)
        yield ResultChunk(
            media=speech.to_pcm16(), content_type=pcm_content_type(16000), duration_s=0.5
        )
        yield ResultChunk(media=b'{"frames": []}', content_type=TIMELINE_CONTENT_TYPE)
        async with asyncio.timeout(10):
            await self.mp4_may_come.wait()
        yield ResultChunk(
            media=b"MP4:" + job.text.encode(),
            duration_s=0.5,
            timings={"tts": 0.01, "render": 0.2, "encode": 0.3},
            last=True,
        )

    async def aclose(self) -> None:
        return None


class DrawingSink(RecordingSink):
    """Draws from speech and timeline, like the overlay: needs no MP4."""

    @property
    def needs_mp4(self) -> bool:
        return False


async def test_sinks_that_draw_get_the_clip_before_its_mp4_is_made() -> None:
    handler = SlowMP4Handler()
    drawing, filing = DrawingSink(), RecordingSink()
    async with running_router(
        [STREAM], [TwitchLike()], handler=handler, stream_sinks=lambda: [drawing, filing]
    ) as p:
        await p.router.hear(message("twitch", "chan", "ada", "Draw me before the file exists."))
        async with asyncio.timeout(10):
            await drawing.clip_arrived.wait()
        assert filing.clips == []  # the file is not made yet, the drawing has begun
        (early,) = drawing.clips
        assert early.media == b"" and early.timeline and early.audio is not None
        handler.mp4_may_come.set()
        await p.router.wait_idle()
        assert p.router.stream is not None
        (report,) = p.router.stream.reports
        assert report.outcome == "completed"
        # the worker's timings came with the MP4, after the clip was first handed on
        assert (report.timings.render, report.timings.encode) == (0.2, 0.3)
    (filed,) = filing.clips
    assert filed.media.startswith(b"MP4:") and filed.seq == early.seq == 0


async def test_by_default_each_speaker_in_a_voice_channel_has_a_conversation_of_their_own() -> None:
    from lipcast.config import Settings
    from lipcast.wiring import routes_from_settings

    routes = routes_from_settings(Settings())
    async with running_router(routes, [DiscordLike()]) as p:
        for user in ("ada", "bob"):
            spoken = message("discord", "voice-1", user, "hello there", guild="g", trigger="voice")
            assert (await p.router.hear(spoken)).accepted
        await p.router.hear(message("discord", "text-1", "cy", "hi all", guild="g"))
        await p.router.hear(message("discord", "text-1", "dee", "hi too", guild="g"))
        await p.router.wait_idle()
        keys = list(p.router._places)
    assert len(keys) == 3  # ada's and bob's voice conversations, and the text channel's


async def test_a_discord_viewer_speaking_in_voice_is_remembered_from_their_text_messages() -> None:
    from lipcast.config import Settings
    from lipcast.wiring import routes_from_settings
    from pipeline.conversation.memory import ViewerMemory

    model = OpenAIStub(reply=echo_reply, tokens_per_s=2000)
    await model.start()
    memory = ViewerMemory(":memory:")
    await memory.open()
    routes = routes_from_settings(Settings())  # voice: per viewer; text channels: per channel
    try:
        async with running_router(
            routes, [DiscordLike()], llm=stub_llm(model.base_url), memory=memory
        ) as p:
            written = message(
                "discord", "text-1", "ada", "my cat is called Miso", guild="g", viewer_scope="g"
            )
            await p.router.hear(written)
            await p.router.wait_idle()
            elsewhere = message(
                "discord", "text-9", "ada", "and my dog?", guild="h", viewer_scope="h"
            )
            await p.router.hear(elsewhere)  # another server: another history
            await p.router.wait_idle()
            spoken = message(
                "discord",
                "voice-1",
                "ada",
                "what is my cat called",
                guild="g",
                viewer_scope="g",
                trigger="voice",
            )
            await p.router.hear(spoken)
            await p.router.wait_idle()
    finally:
        await memory.close()
        await model.close()
    *_, other_server, voice = model.requests
    said = [str(m["content"]) for m in voice["messages"]]
    assert any("my cat is called Miso" in text for text in said)  # the text channel's exchange
    assert any("You asked about my cat is called Miso" in text for text in said)
    assert not any("and my dog" in text for text in said)
    assert not any("Miso" in str(m["content"]) for m in other_server["messages"])
