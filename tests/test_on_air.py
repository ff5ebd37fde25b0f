"""Skip and clear act on what is on air, across the pipeline and the real overlay server; the
page's playback reports give each turn its "first clip shown"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from obs_overlay.events import PlaybackReport
from obs_overlay.server import OverlayServer
from obs_overlay.sink import OverlaySink
from pipeline.conversation.turns import Conversation
from pipeline.sinks.queued import QueuedSink
from pipeline.utterance import Control
from tests.conversation_support import RecordingHandler, running_pipeline, say


class Page:
    """An overlay page as the server sees it: a WebSocket that reports what it plays."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.clips: dict[str, str] = {}  # turn id -> its first clip's id
        self.events: list[dict[str, Any]] = []

    async def clip_of(self, turn_id: str) -> str:
        """The id of ``turn_id``'s first clip, waiting for it to arrive."""
        async with asyncio.timeout(10):
            while turn_id not in self.clips:
                event = await self.ws.receive_json()
                self.events.append(event)
                if event["type"] == "clip" and event["turn_id"] not in self.clips:
                    self.clips[event["turn_id"]] = event["clip_id"]
        return self.clips[turn_id]

    async def report(self, kind: str, clip_id: str) -> None:
        await self.ws.send_json({"type": kind, "clip_id": clip_id})


@pytest.fixture
async def show() -> AsyncIterator[tuple[OverlayServer, Conversation, Page]]:
    shown: list[PlaybackReport] = []
    async with (
        OverlayServer(port=0, on_playback=shown.append) as server,
        running_pipeline(handler=RecordingHandler(seconds=0.05)) as p,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.url}ws") as ws,
    ):

        def stop(turn_id: str) -> None:
            p.conversation.skip(turn_id)

        overlay = QueuedSink(OverlaySink(server), on_stop=stop)
        p.conversation.sinks.append(overlay)

        def forward(report: PlaybackReport) -> None:
            if report.kind == "started":
                p.conversation.clip_shown(report.turn_id, report.seq)

        server._on_playback = forward  # the overlay's callback, as lipcast run wires it
        run = asyncio.create_task(p.conversation.run(), name="test-conversation")
        yield server, p.conversation, Page(ws)
        await p.conversation.close()
        await asyncio.gather(run, return_exceptions=True)
        await overlay.aclose()


MOD: dict[str, Any] = {"moderator": True}


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """Wait until ``condition()`` holds (the conversation keeps no event for it)."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - polling state the code under test owns
            await asyncio.sleep(0.01)


async def answered(conversation: Conversation, count: int) -> list[str]:
    """The turn ids of the first ``count`` turns, once each has been answered."""
    await until(lambda: len(conversation.reports) >= count)
    return [report.turn_id for report in list(conversation.reports)[:count]]


async def test_skip_stops_the_reply_on_air_not_the_one_rendering_behind_it(
    show: tuple[OverlayServer, Conversation, Page],
) -> None:
    server, conversation, page = show
    await conversation.hear(say("The first question, on air soon.", user="ada"))
    (first,) = await answered(conversation, 1)
    await page.report("started", await page.clip_of(first))  # the page plays it...
    await conversation.hear(say("A second question, rendered meanwhile.", user="bob"))
    (_, second) = await answered(conversation, 2)
    await page.clip_of(second)  # ... while the next reply is rendered and waits
    await until(lambda: server.on_air == first)

    answer = await conversation.control(Control(name="skip", origin=say("!skip", **MOD)))
    assert answer.detail == "skipped"
    assert server.is_cancelled(first) and not server.is_cancelled(second)
    await page.report("started", page.clips[second])
    await until(lambda: server.on_air == second)  # the waiting reply plays next


async def test_clear_drops_the_replies_waiting_and_leaves_the_one_on_air(
    show: tuple[OverlayServer, Conversation, Page],
) -> None:
    server, conversation, page = show
    await conversation.hear(say("Playing now, please keep me.", user="ada"))
    (first,) = await answered(conversation, 1)
    await page.report("started", await page.clip_of(first))
    await until(lambda: server.on_air == first)
    for user in ("bob", "cy"):
        await conversation.hear(say(f"Waiting reply for {user}, drop me.", user=user))
    waiting = (await answered(conversation, 3))[1:]
    for turn in waiting:
        await page.clip_of(turn)

    answer = await conversation.control(Control(name="clear", origin=say("!clear", **MOD)))
    assert answer.detail == "dropped 2 waiting replies"
    assert not server.is_cancelled(first) and server.on_air == first
    assert all(server.is_cancelled(turn) for turn in waiting)


async def test_the_first_clip_shown_is_in_the_turn_timings(
    show: tuple[OverlayServer, Conversation, Page],
) -> None:
    _, conversation, page = show
    await conversation.hear(say("When did my reply start playing?", user="ada"))
    (turn,) = await answered(conversation, 1)
    await page.report("started", await page.clip_of(turn))
    report = conversation.reports[0]
    await until(lambda: report.timings.first_clip_shown is not None)
    assert report.timings.first_clip_shown >= report.timings.first_clip_ready  # type: ignore[operator]
    assert "first_clip_shown=" in report.line()
