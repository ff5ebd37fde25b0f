"""The conversation when its helpers fail or refuse: a viewer memory that SQLite cannot read or
write (another program holds the file locked), and messages refused as busy or unsafe, which
must leave no trace in the chat filter. Real SQLite, real queue and worker loop, the real
openai client against the local stub server."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline.conversation.filters import FilterRules
from pipeline.conversation.memory import ViewerMemory
from pipeline.conversation.safety import SafetyGuard
from pipeline.conversation.turns import Conversation, ConversationOptions
from pipeline.services.llm import OpenAIChatLLM, RetryPolicy
from tests.conversation_support import running_pipeline, say
from tests.openai_stub import OpenAIStub, last_user_text

LOCK_TIMEOUT_S = 0.1  # how long the memory waits for the other connection's lock


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    server = OpenAIStub(
        reply=lambda messages: f"Thanks for asking about {last_user_text(messages)}.",
        tokens_per_s=1000,
    )
    await server.start()
    yield server
    await server.close()


def llm(stub: OpenAIStub) -> OpenAIChatLLM:
    return OpenAIChatLLM(
        base_url=stub.base_url,
        model="stub-model",
        timeout_s=2.0,
        retry=RetryPolicy(retries=0),
    )


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another program in the middle of a write: the memory can read, not write."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def hold_exclusive_lock(path: Path) -> sqlite3.Connection:
    """Another program keeping the file to itself: the memory can neither open nor read it."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("COMMIT")  # the lock stays until the connection closes
    return other


async def answer(conversation: Conversation, text: str, user: str) -> None:
    """Send a message and wait until the running conversation has answered it."""
    admission = await conversation.hear(say(text, user=user))
    assert admission.accepted, admission
    async with asyncio.timeout(10):  # a conversation that stopped answering fails here
        await conversation.wait_idle()


def memory_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "pipeline.conversation.turns" and "memory" in r.msg
    ]


# -- a failing viewer memory ---------------------------------------------------------------


async def test_a_memory_locked_for_writing_never_loses_a_reply(
    stub: OpenAIStub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "memory.sqlite3"
    caplog.set_level(logging.DEBUG, logger="pipeline.conversation.turns")
    async with (
        ViewerMemory(path, lock_timeout_s=LOCK_TIMEOUT_S) as memory,
        running_pipeline(llm=llm(stub), memory=memory) as p,
    ):
        turns = asyncio.create_task(p.conversation.run(), name="test-turns")
        other = hold_write_lock(path)
        try:
            await answer(p.conversation, "the first boss", user="ada")
            await answer(p.conversation, "the second boss", user="bob")
        finally:
            other.close()
        await answer(p.conversation, "the last boss", user="cy")
        assert not turns.done(), turns
        await p.conversation.close()
        await turns
        assert [item.content for item in await memory.history(say("x", user="cy").viewer)] == [
            "the last boss",
            "Thanks for asking about the last boss.",
        ]
        assert await memory.history(say("x", user="ada").viewer) == []
    assert [report.outcome for report in p.conversation.reports] == ["completed"] * 3
    assert p.sink.texts == [
        "Thanks for asking about the first boss.",
        "Thanks for asking about the second boss.",
        "Thanks for asking about the last boss.",
    ]
    records = memory_records(caplog)
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in records]  # once per outage
    line = warnings[0].getMessage()
    assert str(path) in line and "database is locked" in line and warnings[0].exc_info is None
    assert [r.getMessage() for r in records if r.levelno == logging.INFO] == [
        "viewer memory works again"
    ]


async def test_a_memory_that_cannot_be_read_is_asked_once_per_turn(
    stub: OpenAIStub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "memory.sqlite3"
    async with ViewerMemory(path) as memory:
        await memory.remember(say("x").viewer, "my name is Ada", "Hi Ada!")
    caplog.set_level(logging.DEBUG, logger="pipeline.conversation.turns")
    other = hold_exclusive_lock(path)
    memory = ViewerMemory(path, lock_timeout_s=LOCK_TIMEOUT_S)
    try:
        async with running_pipeline(llm=llm(stub), memory=memory) as p:
            first = await p.conversation.respond(say("what is my name?"), "what is my name?")
            second = await p.conversation.respond(say("and now?"), "and now?")
    finally:
        other.close()
        await memory.close()
    assert (first.outcome, second.outcome) == ("completed", "completed")
    assert p.handler.spoken == [
        "Thanks for asking about what is my name?.",
        "Thanks for asking about and now?.",
    ]
    # Without its history: the model saw the system prompt and the message only.
    assert [[m["role"] for m in request["messages"]] for request in stub.requests] == [
        ["system", "user"],
        ["system", "user"],
    ]
    records = memory_records(caplog)
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG]  # one per turn


async def test_memory_commands_answer_even_when_the_memory_fails(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    async with ViewerMemory(path) as memory:
        await memory.remember(say("x").viewer, "hello", "hi")
    other = hold_exclusive_lock(path)
    memory = ViewerMemory(path, lock_timeout_s=LOCK_TIMEOUT_S)
    try:
        async with running_pipeline(memory=memory) as p:
            forget = await p.conversation.hear(say("!forget"))
            language = await p.conversation.hear(say("!lang en"))
    finally:
        other.close()
        await memory.close()
    assert (forget.accepted, forget.reason) == (False, "command")
    assert "could not forget" in forget.detail
    assert (language.accepted, language.reason) == (False, "command")
    assert "could not set the language" in language.detail


# -- refused messages leave no trace -------------------------------------------------------


async def test_a_message_refused_as_busy_can_be_sent_again() -> None:
    options = ConversationOptions(max_pending=1)
    async with running_pipeline(rules=FilterRules(), options=options) as p:
        conversation = p.conversation
        assert (await conversation.hear(say("first message here", user="ada"))).accepted
        busy = await conversation.hear(say("second message please", user="bob"))
        assert (busy.accepted, busy.reason) == (False, "busy")
        conversation.clear()
        again = await conversation.hear(say("second message please", user="bob"))
    assert (again.accepted, again.reason) == (True, "accepted")  # no cooldown, no duplicate


async def test_messages_refused_as_busy_use_no_rate_slot() -> None:
    rules = FilterRules(global_per_minute=2, user_cooldown_s=0)
    async with running_pipeline(rules=rules, options=ConversationOptions(max_pending=1)) as p:
        conversation = p.conversation
        assert (await conversation.hear(say("one", user="u0"))).accepted
        refused = [await conversation.hear(say(f"busy {n}", user=f"b{n}")) for n in range(5)]
        conversation.clear()
        second = await conversation.hear(say("two", user="u1"))
        conversation.clear()
        third = await conversation.hear(say("three", user="u2"))
    assert {admission.reason for admission in refused} == {"busy"}
    assert second.accepted
    assert third.reason == "rate_limited"  # the two slots went to the two messages taken


async def test_a_message_refused_as_unsafe_does_not_start_the_cooldown() -> None:
    safety = SafetyGuard.build(phrases=["badword"], secrets=[])
    async with running_pipeline(rules=FilterRules(), safety=safety) as p:
        blocked = await p.conversation.hear(say("this has badword inside"))
        clean = await p.conversation.hear(say("a clean message instead"))
    assert (blocked.accepted, blocked.reason) == (False, "blocked_phrase")
    assert (clean.accepted, clean.reason) == (True, "accepted")
