"""The console adapter, and ``lipcast run`` end to end: a real process, real eSpeak + sprite
clips, the real openai client against the local stub server."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bots.console import ConsoleAdapter
from tests.conversation_support import running_pipeline
from tests.openai_stub import OpenAIStub, last_user_text


async def lines(*texts: str) -> AsyncIterator[str]:
    for text in texts:
        yield text + "\n"


async def test_console_lines_become_utterances_and_commands_work() -> None:
    out = io.StringIO()
    async with running_pipeline() as p:
        adapter = ConsoleAdapter(
            lines=lines(
                "hello from the console",
                "bob: hi from bob",
                "/user carol",
                "/mod",
                "/bits 500",
                "carol speaks now",
                "",
                "/clear",
                "/help",
                "/quit",
                "never read",
            ),
            out=out,
        )
        await adapter.run(p.conversation)
        waiting = sorted(p.conversation._pending)
    assert [(item.utterance.user, item.text) for item in waiting] == []  # /clear dropped them
    text = out.getvalue()
    assert "now speaking as 'carol'" in text and "moderator: on" in text
    assert "dropped 3 waiting messages" in text
    assert "never read" not in text


async def test_console_reports_why_a_message_is_not_answered() -> None:
    out = io.StringIO()
    async with running_pipeline() as p:
        from pipeline.filters import FilterRules

        p.conversation.chat_filter.rules = FilterRules(user_cooldown_s=60)
        adapter = ConsoleAdapter(lines=lines("first", "second"), out=out)
        await adapter.run(p.conversation)
    assert "(not answered: cooldown: 60.0 s left)" in out.getvalue()


async def test_console_priorities_and_flags() -> None:
    async with running_pipeline() as p:
        adapter = ConsoleAdapter(lines=lines("/sub", "a", "/bits 300", "b", "/mod", "c"))
        await adapter.run(p.conversation)
        items = sorted(p.conversation._pending)
    assert [(i.text, i.utterance.priority) for i in items] == [("c", 9), ("b", 7), ("a", 2)]
    assert items[1].utterance.bits == 300 and items[0].utterance.moderator


async def test_lipcast_run_answers_console_chat_with_clips(tmp_path: Path) -> None:
    stub = OpenAIStub(
        reply=lambda messages: (
            f"Hi there, {last_user_text(messages)} was a nice thing to say. See you!"
        ),
        tokens_per_s=400,
    )
    base_url = await stub.start()
    config = tmp_path / "bot.toml"
    config.write_text(
        f"""
[llm]
backend = "openai"
base_url = "{base_url}"
model = "stub-model"

[render]
size = 128

[output]
dir = "{tmp_path / "clips"}"

[memory]
path = "{tmp_path / "memory.sqlite3"}"

[overlay]
enabled = false
""",
        encoding="utf-8",
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-run-0123456789abcdef"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lipcast",
        "-c",
        str(config),
        "run",
        "--user",
        "ada",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(b"good evening\n/quit\n"), timeout=60
        )
    finally:
        await stub.close()
    out, err = stdout.decode(), stderr.decode()
    assert process.returncode == 0, err
    assert "answering with stub-model at" in err
    assert "in-process render worker" in err
    clips = sorted((tmp_path / "clips").glob("*.mp4"))
    assert len(clips) == 2, out
    assert all(clip.read_bytes()[4:8] == b"ftyp" for clip in clips)
    assert "Hi there, good evening was a nice thing to say." in out
    assert "Nova: Hi there, good evening was a nice thing to say. See you!" in out
    assert "lipcast.turns: turn" in err and "completed" in err
    assert stub.requests[0]["messages"][-1] == {"role": "user", "content": "good evening"}
    assert "sk-test-run" not in out + err


@pytest.mark.broker
@pytest.mark.parametrize("backend", ["memory", "rabbitmq"])
async def test_a_streamed_reply_over_either_job_queue(backend: str) -> None:
    """The conversation over the real RabbitMQ work queue and direct reply-to (and memory)."""
    from pipeline.conversation import Conversation, ConversationOptions
    from pipeline.filters import ChatFilter
    from pipeline.llm import OpenAIChatLLM
    from pipeline.safety import SafetyGuard
    from tests.conversation_support import OPEN_RULES, RecordingHandler, RecordingSink, cohost, say
    from tests.queue_support.harness import open_transport, running_worker

    reply = "First of all, hello. Second, the boss is near. Third, grab a snack. Fourth, have fun!"
    stub = OpenAIStub(reply=reply, tokens_per_s=300)
    await stub.start()
    handler = RecordingHandler(seconds=0.05)
    sink = RecordingSink()
    llm = OpenAIChatLLM(base_url=stub.base_url, model="stub", timeout_s=2.0)
    try:
        async with (
            open_transport(backend) as transport,
            running_worker(transport.worker_queue, handler, concurrency=2),
        ):
            persona = cohost()
            conversation = Conversation(
                persona=persona,
                queue=transport.requester,
                chat_filter=ChatFilter(OPEN_RULES),
                safety=SafetyGuard.build(phrases=persona.spec.safety.blocked_phrases),
                sinks=[sink],
                llm=llm,
                options=ConversationOptions(max_sentences=4),
            )
            report = await conversation.respond(say("hi"), "hi")
    finally:
        await llm.aclose()
        await stub.close()
    assert report.outcome == "completed", report.error
    assert sink.texts == [
        "First of all, hello.",
        "Second, the boss is near.",
        "Third, grab a snack.",
        "Fourth, have fun!",
    ]
    assert [clip.media for clip in sink.clips] == [b"MP4:" + t.encode() for t in sink.texts]


async def test_clips_reach_the_obs_overlay_and_a_skip_there_stops_the_turn() -> None:
    from lipcast.commands.run import OverlaySink
    from obs_overlay.server import OverlayServer
    from pipeline.conversation import ConversationOptions
    from pipeline.llm import OpenAIChatLLM
    from tests.conversation_support import RecordingHandler, cohost, say

    class StreamerSkips(OverlayServer):
        """The real overlay server; the streamer presses skip once two clips are shown."""

        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self.published: list[int] = []

        async def publish_clip(self, **clip: Any) -> str | None:
            clip_id = await super().publish_clip(**clip)
            self.published.append(clip["seq"])
            if len(self.published) == 2:
                await self.skip()
            return clip_id

    stub = OpenAIStub(
        reply="One, two, three, go now. Second sentence is here. Third sentence is here.",
        tokens_per_s=200,
    )
    await stub.start()
    overlay = StreamerSkips(host="127.0.0.1", port=0, idle_image=cohost().avatar_path)
    await overlay.start()
    llm = OpenAIChatLLM(base_url=stub.base_url, model="stub", timeout_s=2.0)
    try:
        async with running_pipeline(
            llm=llm,
            handler=RecordingHandler(seconds=0.05),
            sink=None,
            options=ConversationOptions(max_sentences=5),
        ) as p:
            p.conversation.sinks = [OverlaySink(overlay)]
            report = await p.conversation.respond(say("hi"), "hi")
    finally:
        await overlay.stop()
        await stub.close()
    assert overlay.published == [0, 1, 2]  # the third clip found its turn skipped
    assert report.outcome == "skipped"
    assert overlay.is_cancelled(report.turn_id)
