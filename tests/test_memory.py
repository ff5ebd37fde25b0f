"""Viewer memory in SQLite: survives a restart, stays within budget, forgets on request."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lipcast.cli import main
from pipeline.conversation.memory import ViewerMemory
from pipeline.errors import BackendError, ConfigError
from pipeline.utterance import ViewerKey

ADA = ViewerKey(platform="twitch", channel="stream", user="ada")
ADA_ELSEWHERE = ViewerKey(platform="discord", channel="stream", user="ada")
BOB = ViewerKey(platform="twitch", channel="stream", user="bob")


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    async with ViewerMemory(path) as memory:
        await memory.remember(ADA, "Hi, I'm Ada!", "Welcome, Ada!")
        await memory.set_language(ADA, "de")
    async with ViewerMemory(path) as memory:
        history = await memory.history(ADA)
        assert [(item.role, item.content) for item in history] == [
            ("user", "Hi, I'm Ada!"),
            ("assistant", "Welcome, Ada!"),
        ]
        assert await memory.language(ADA) == "de"


async def test_viewers_are_kept_apart_by_platform_channel_and_user(tmp_path: Path) -> None:
    async with ViewerMemory(tmp_path / "m.db") as memory:
        await memory.remember(ADA, "twitch ada", "ok")
        await memory.remember(ADA_ELSEWHERE, "discord ada", "ok")
        await memory.remember(BOB, "bob", "ok")
        assert [item.content for item in await memory.history(ADA)] == ["twitch ada", "ok"]
        assert [item.content for item in await memory.history(ADA_ELSEWHERE)] == [
            "discord ada",
            "ok",
        ]


async def test_history_stays_within_its_budget(tmp_path: Path) -> None:
    async with ViewerMemory(tmp_path / "m.db", budget_chars=300) as memory:
        for number in range(50):
            await memory.remember(ADA, f"message number {number} " + "x" * 40, f"reply {number}")
            assert await memory.stored_chars(ADA) <= 300
        history = await memory.history(ADA)
        assert history[0].role == "user"
        assert history[-1].content == "reply 49"  # the newest are kept
        assert sum(len(item.content) for item in history) <= 300
        # a single message longer than the whole budget is kept only in part
        await memory.remember(BOB, "y" * 1000, "")
        assert await memory.stored_chars(BOB) == 300


async def test_forget_erases_one_viewer_and_nobody_else(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    async with ViewerMemory(path) as memory:
        await memory.remember(ADA, "secret plans", "noted")
        await memory.set_language(ADA, "fr")
        await memory.remember(BOB, "hello", "hi bob")
        removed = await memory.forget(ADA)
        assert removed == 3  # two messages and the viewer record
        assert await memory.history(ADA) == []
        assert await memory.language(ADA) is None
        assert len(await memory.history(BOB)) == 2
    with sqlite3.connect(path) as db:  # really gone from the file
        rows = db.execute("SELECT content FROM messages WHERE user = 'ada'").fetchall()
    assert rows == []


async def test_the_longest_unseen_viewers_go_first(tmp_path: Path) -> None:
    clock = iter(range(1000))
    async with ViewerMemory(tmp_path / "m.db", max_viewers=2, clock=lambda: next(clock)) as memory:
        await memory.remember(ADA, "a", "a")
        await memory.remember(BOB, "b", "b")
        await memory.remember(ADA, "a again", "a")  # ada seen again: bob is now the oldest
        await memory.remember(ADA_ELSEWHERE, "c", "c")
        assert await memory.history(BOB) == []
        assert len(await memory.history(ADA)) == 4


async def test_a_file_that_is_not_a_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not sqlite" * 100)
    memory = ViewerMemory(path)
    with pytest.raises(ConfigError, match=r"\[memory\] path"):
        await memory.open()
    await memory.close()


def test_lipcast_forget_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.db"
    config = tmp_path / "bot.toml"
    config.write_text(f'[memory]\npath = "{path}"\n', encoding="utf-8")

    async def seed() -> None:
        async with ViewerMemory(path) as memory:
            await memory.remember(ADA, "hello", "hi")

    import asyncio

    asyncio.run(seed())
    args = ["-c", str(config), "forget", "--platform", "twitch", "--channel", "stream"]
    assert main([*args, "--user", "ada"]) == 0
    assert "forgot ada" in capsys.readouterr().out
    assert main([*args, "--user", "ada"]) == 0
    assert "nothing stored" in capsys.readouterr().out

    async def check() -> None:
        async with ViewerMemory(path) as memory:
            assert await memory.history(ADA) == []

    asyncio.run(check())


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection in the middle of a write: others can read but not write."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def _hold_exclusive_lock(path: Path) -> sqlite3.Connection:
    """Another connection that keeps the file to itself: nobody else can open or read it."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("COMMIT")  # the lock stays until the connection closes
    return other


async def test_a_locked_database_is_a_transient_backend_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    async with ViewerMemory(path, lock_timeout_s=0.05) as memory:
        await memory.remember(ADA, "hello", "hi")
        other = _hold_write_lock(path)
        try:
            with pytest.raises(BackendError) as caught:
                await memory.remember(ADA, "again", "hi again")
            assert [item.content for item in await memory.history(ADA)] == ["hello", "hi"]
        finally:
            other.close()
        await memory.remember(ADA, "again", "hi again")  # the lock is gone: it works again
    error = caught.value
    assert error.transient
    assert str(path) in str(error) and "[memory] path" in str(error)
    assert "database is locked" in str(error) and "locked" in str(error).split("(")[-1]
    assert isinstance(error.__cause__, sqlite3.OperationalError)


async def test_a_database_locked_at_open_is_reported_as_locked_not_as_damaged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "memory.sqlite3"
    async with ViewerMemory(path) as memory:
        await memory.remember(ADA, "hello", "hi")
    other = _hold_exclusive_lock(path)
    memory = ViewerMemory(path, lock_timeout_s=0.05)
    try:
        with pytest.raises(BackendError, match="database is locked") as caught:
            await memory.open()
        assert caught.value.transient and "move it away" not in str(caught.value)
        with pytest.raises(BackendError):
            await memory.history(ADA)
        other.close()
        assert [item.content for item in await memory.history(ADA)] == ["hello", "hi"]
    finally:
        other.close()
        await memory.close()
