"""The console adapter, and ``lipcast run`` end to end: a real process, real eSpeak + sprite
clips, the real openai client against the local stub server."""

from __future__ import annotations

import asyncio
import io
import logging
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
    assert "dropped 3 waiting replies" in text
    assert "never read" not in text


async def test_console_reports_why_a_message_is_not_answered() -> None:
    out = io.StringIO()
    async with running_pipeline() as p:
        from pipeline.conversation.filters import FilterRules

        p.conversation.chat_filter.rules = FilterRules(user_cooldown_s=60)
        adapter = ConsoleAdapter(lines=lines("first", "second"), out=out)
        await adapter.run(p.conversation)
    assert "(not answered: cooldown: 60.0 s left)" in out.getvalue()


async def test_console_priorities_and_flags() -> None:
    async with running_pipeline() as p:
        adapter = ConsoleAdapter(lines=lines("/sub", "a", "/bits 300", "b", "/mod", "c"))
        await adapter.run(p.conversation)
        items = sorted(p.conversation._pending)
    assert [(i.text, i.utterance.priority) for i in items] == [
        ("c", 9),
        ("b", 8),
        ("a", 2),
    ]  # [priority] defaults
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
    from pipeline.conversation.filters import ChatFilter
    from pipeline.conversation.safety import SafetyGuard
    from pipeline.conversation.turns import Conversation, ConversationOptions
    from pipeline.services.llm import OpenAIChatLLM
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
    from obs_overlay.server import OverlayServer
    from obs_overlay.sink import OverlaySink
    from pipeline.conversation.turns import ConversationOptions
    from pipeline.services.llm import OpenAIChatLLM
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
                # No page is open to put it on air: the skip names the reply, as the
                # control endpoint's ?turn_id= does.
                await self.skip(clip["turn_id"])
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


# -- lipcast run when something is wrong -----------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unwritable_output_dir_stops_lipcast_run_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lipcast.cli import main

    not_a_folder = tmp_path / "clips.txt"
    not_a_folder.write_text("a file where the clips' folder should go\n", encoding="utf-8")
    memory = tmp_path / "memory.sqlite3"
    config = tmp_path / "bot.toml"
    config.write_text(
        f"""
[output]
dir = "{not_a_folder / "clips"}"

[memory]
path = "{memory}"

[queue]
backend = "rabbitmq"
url = "amqp://guest@127.0.0.1:{_free_port()}/"

[overlay]
enabled = false
""",
        encoding="utf-8",
    )
    monkeypatch.delenv("LIPCAST_AMQP_URL", raising=False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root.handlers[:])  # main() sets up its own logging
    monkeypatch.setattr(root, "level", root.level)
    assert main(["-c", str(config), "run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    assert err.startswith("lipcast: error: [output] dir = ")
    assert str(not_a_folder / "clips") in err and "Not a directory" in err
    assert not memory.exists()  # checked before the memory file was created (or the broker)


async def test_a_clip_that_cannot_be_written_is_one_log_line_and_the_turn_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from lipcast.commands.run import FolderSink
    from pipeline.clips import Clip, TurnInfo
    from tests.conversation_support import say

    blocker = tmp_path / "disk"
    blocker.write_text("a file where a folder should be\n", encoding="utf-8")
    folder = blocker / "clips"
    out = io.StringIO()
    sink = FolderSink(folder, out=out)
    turn = TurnInfo(
        turn_id="t1", utterance=say("hi"), viewer_name="ada", language="en", mode="reply"
    )
    clip = Clip(
        turn=turn, seq=0, text="Hello!", media=b"MP4", content_type="video/mp4", duration_s=1.0,
        timings={},
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="lipcast.commands.run"):
        assert await sink.clip_ready(clip) is True  # the overlay and the chat still get it
        assert await sink.clip_ready(clip) is True
    records = [r for r in caplog.records if r.name == "lipcast.commands.run"]
    assert len(records) == 2  # one line per failure
    assert all(r.exc_info is None for r in records)
    line = records[0].getMessage()
    assert "t1-00.mp4" in line and str(folder) in line and "Not a directory" in line
    assert sink.written == [] and out.getvalue() == ""


_BROKEN_TURNS = """
import sys

import pipeline.conversation.turns


async def run(self):
    raise RuntimeError("the turn loop broke")


pipeline.conversation.turns.Conversation.run = run
from lipcast.cli import main

sys.exit(main(sys.argv[1:]))
"""


async def test_lipcast_run_exits_with_one_line_when_the_conversation_stops(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(
        f"""
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
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _BROKEN_TURNS,
        "-c",
        str(config),
        "run",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write(b"hello, anyone there?\n")  # and the chat stays open
    try:
        stderr = await asyncio.wait_for(process.stderr.read(), timeout=30)
        await asyncio.wait_for(process.wait(), timeout=10)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("lipcast run kept taking chat nobody answers")
    err = stderr.decode()
    assert process.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lipcast: error: the conversation stopped answering chat")
    assert "RuntimeError: the turn loop broke" in last
    assert "Traceback" not in err


def test_bench_turn_builds_its_parts_in_the_composition_root() -> None:
    import subprocess

    code = "import sys, lipcast.benchmarks.turn; print([m for m in sys.modules if 'commands' in m])"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"  # no command module behind the benchmark


async def test_lipcast_run_stops_when_the_overlays_port_is_taken(tmp_path: Path) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = tmp_path / "bot.toml"
    config.write_text(
        f'[output]\ndir = "{tmp_path / "clips"}"\n\n[memory]\npath = "{tmp_path / "m.sqlite3"}"\n'
        f'\n[overlay]\nhost = "127.0.0.1"\nport = {port}\n',
        encoding="utf-8",
    )
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lipcast",
            "run",
            "-c",
            str(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp_path,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(b"hello\n/quit\n"), 60)
    finally:
        taken.close()
    err = stderr.decode()
    assert process.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lipcast: error: the OBS overlay did not start")
    assert f"127.0.0.1:{port}" in lines[0] and "[overlay] port" in lines[0]
    assert "--no-overlay" in lines[0]
    assert stdout.decode() == ""  # nothing was answered
