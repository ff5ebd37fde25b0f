"""What the persona remembers of each viewer, kept in SQLite so it survives a restart.

A viewer is a :class:`~pipeline.utterance.ViewerKey` (platform + channel + user). For each one
the store keeps the recent exchanges (the viewer's message and the persona's reply), trimmed
to a budget of characters so a prompt never grows without bound, and the viewer's preferred
language. :meth:`ViewerMemory.forget` erases everything about one viewer (``lipcast forget``).

SQLite is the standard library's; every statement runs on one dedicated thread, off the event
loop, so a slow disk never stalls a stream. A failing statement (a lock held too long by another
program, a full or read-only disk) raises :class:`~pipeline.errors.BackendError` naming the
database; the caller decides whether to go on without memory.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pipeline.errors import BackendError, ConfigError
from pipeline.utterance import ViewerKey

_T = TypeVar("_T")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS viewers (
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    user TEXT NOT NULL,
    language TEXT,
    seen_at REAL NOT NULL,
    PRIMARY KEY (platform, channel, user)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    user TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_viewer ON messages (platform, channel, user, id);
"""


# What to do about a failing statement, by SQLite's primary result code.
_HINTS = {
    "SQLITE_BUSY": "another program holds it locked: a database browser, a backup?",
    "SQLITE_LOCKED": "another connection holds it locked",
    "SQLITE_FULL": "its disk is full",
    "SQLITE_READONLY": "it or its folder is read-only",
    "SQLITE_IOERR": "its disk failed to read or write",
    "SQLITE_CANTOPEN": "the file cannot be opened; check the path and its permissions",
    "SQLITE_CORRUPT": "the file is damaged; move it away to start a new one",
    "SQLITE_NOTADB": "the file is not a SQLite database; move it away to start a new one",
}


@dataclass(frozen=True, kw_only=True)
class Remembered:
    """One remembered message of a conversation with a viewer."""

    role: Literal["user", "assistant"]
    content: str
    created_at: float


class ViewerMemory:
    """Per-viewer history and preferences in one SQLite file (``":memory:"`` for none)."""

    def __init__(
        self,
        path: Path | str,
        *,
        budget_chars: int = 2000,
        max_viewers: int = 10_000,
        lock_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``lock_timeout_s``: how long a statement waits for another connection's lock
        before it fails."""
        if budget_chars < 1 or max_viewers < 1:
            raise ValueError("budget_chars and max_viewers must be at least 1")
        self.path = path
        self.budget_chars = budget_chars
        self.max_viewers = max_viewers
        self.lock_timeout_s = lock_timeout_s
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipcast-memory")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Open (creating if needed) the database; idempotent."""
        await self._run(self._open_sync)

    async def close(self) -> None:
        """Close the database and its thread."""
        try:
            await self._run(self._close_sync)
        finally:
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> ViewerMemory:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the public, async side ---------------------------------------------------------

    async def history(self, viewer: ViewerKey) -> list[Remembered]:
        """The viewer's remembered messages, oldest first, starting with one of theirs."""
        return await self._run(self._history_sync, viewer)

    async def remember(self, viewer: ViewerKey, message: str, reply: str) -> None:
        """Add one exchange and trim the viewer's history back to the budget."""
        await self._run(self._remember_sync, viewer, message, reply)

    async def language(self, viewer: ViewerKey) -> str | None:
        """The language the viewer asked to be answered in, or None."""
        return await self._run(self._language_sync, viewer)

    async def set_language(self, viewer: ViewerKey, language: str | None) -> None:
        await self._run(self._set_language_sync, viewer, language)

    async def forget(self, viewer: ViewerKey) -> int:
        """Erase everything about the viewer; returns how many records went."""
        return await self._run(self._forget_sync, viewer)

    async def stored_chars(self, viewer: ViewerKey) -> int:
        """Characters of history kept for the viewer (for tests and the budget)."""
        return await self._run(self._stored_chars_sync, viewer)

    # -- the database thread ------------------------------------------------------------

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except sqlite3.Error as err:
            raise self._failure(err) from err

    def _failure(self, err: sqlite3.Error) -> BackendError:
        """``err`` as a lipcast error naming the database and what may help."""
        primary = "_".join(getattr(err, "sqlite_errorname", "").split("_")[:2])  # SQLITE_IOERR
        hint = _HINTS.get(primary, "check the file and its disk")
        # OperationalError covers what may pass: a lock, a full or read-only disk, I/O.
        transient = isinstance(err, sqlite3.OperationalError)
        return BackendError(
            f"viewer memory {str(self.path)!r} ([memory] path): SQLite failed: {err} ({hint})",
            transient=transient,
        )

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._open_sync()
        assert self._db is not None
        return self._db

    def _open_sync(self) -> None:
        if self._db is not None:
            return
        target = str(self.path)
        if target != ":memory:":
            target = str(Path(target).expanduser())
            folder = Path(target).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ConfigError(
                    f"[memory] path = {target!r}: cannot create its folder: {err.strerror or err}"
                ) from err
        db = sqlite3.connect(target, timeout=self.lock_timeout_s, isolation_level=None)
        try:
            self._prepare(db, target)
        except BaseException:
            db.close()
            raise
        self._db = db

    @staticmethod
    def _prepare(db: sqlite3.Connection, target: str) -> None:
        """WAL mode, the tables, and a check that the file is this version's."""
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.OperationalError:
            raise  # a lock or the disk, not the file's content: reported by _run
        except sqlite3.DatabaseError as err:
            raise ConfigError(
                f"[memory] path = {target!r}: not a usable SQLite database ({err}); move it "
                "away to start a new one"
            ) from err
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise ConfigError(
                f"[memory] path = {target!r}: written by another lipcast version (schema "
                f"{row[0]}, this one reads {SCHEMA_VERSION}); move it away to start a new one"
            )

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _history_sync(self, viewer: ViewerKey) -> list[Remembered]:
        rows = self._connection().execute(
            "SELECT role, content, created_at FROM messages "
            "WHERE platform = ? AND channel = ? AND user = ? ORDER BY id",
            (viewer.platform, viewer.channel, viewer.user),
        )
        found = [
            Remembered(role=role, content=content, created_at=at) for role, content, at in rows
        ]
        while found and found[0].role != "user":
            found.pop(0)
        return found

    def _remember_sync(self, viewer: ViewerKey, message: str, reply: str) -> None:
        db = self._connection()
        now = self._clock()
        key = (viewer.platform, viewer.channel, viewer.user)
        with _transaction(db):
            self._touch(db, viewer, now)
            # A message longer than the whole budget is kept only in part.
            for role, content in (("user", message), ("assistant", reply)):
                if content:
                    db.execute(
                        "INSERT INTO messages (platform, channel, user, role, content, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (*key, role, content[: self.budget_chars], now),
                    )
            self._trim(db, viewer)
            self._evict(db)

    def _trim(self, db: sqlite3.Connection, viewer: ViewerKey) -> None:
        """Drop the viewer's oldest messages until the rest fit the budget."""
        rows = db.execute(
            "SELECT id, length(content) FROM messages "
            "WHERE platform = ? AND channel = ? AND user = ? ORDER BY id DESC",
            (viewer.platform, viewer.channel, viewer.user),
        ).fetchall()
        total = 0
        for row_id, size in rows:
            total += size
            if total > self.budget_chars:
                db.execute(
                    "DELETE FROM messages WHERE platform = ? AND channel = ? AND user = ? "
                    "AND id <= ?",
                    (viewer.platform, viewer.channel, viewer.user, row_id),
                )
                return

    def _evict(self, db: sqlite3.Connection) -> None:
        """Forget the longest-unseen viewers beyond ``max_viewers``."""
        (count,) = db.execute("SELECT count(*) FROM viewers").fetchone()
        excess = count - self.max_viewers
        if excess <= 0:
            return
        stale = db.execute(
            "SELECT platform, channel, user FROM viewers ORDER BY seen_at LIMIT ?", (excess,)
        ).fetchall()
        for key in stale:
            self._delete(db, key)

    def _touch(self, db: sqlite3.Connection, viewer: ViewerKey, now: float) -> None:
        db.execute(
            "INSERT INTO viewers (platform, channel, user, language, seen_at) "
            "VALUES (?, ?, ?, NULL, ?) "
            "ON CONFLICT (platform, channel, user) DO UPDATE SET seen_at = excluded.seen_at",
            (viewer.platform, viewer.channel, viewer.user, now),
        )

    def _language_sync(self, viewer: ViewerKey) -> str | None:
        row = (
            self._connection()
            .execute(
                "SELECT language FROM viewers WHERE platform = ? AND channel = ? AND user = ?",
                (viewer.platform, viewer.channel, viewer.user),
            )
            .fetchone()
        )
        return None if row is None else row[0]

    def _set_language_sync(self, viewer: ViewerKey, language: str | None) -> None:
        db = self._connection()
        with _transaction(db):
            self._touch(db, viewer, self._clock())
            db.execute(
                "UPDATE viewers SET language = ? WHERE platform = ? AND channel = ? AND user = ?",
                (language, viewer.platform, viewer.channel, viewer.user),
            )
            self._evict(db)

    def _forget_sync(self, viewer: ViewerKey) -> int:
        db = self._connection()
        with _transaction(db):
            return self._delete(db, (viewer.platform, viewer.channel, viewer.user))

    @staticmethod
    def _delete(db: sqlite3.Connection, key: tuple[str, str, str]) -> int:
        where = "WHERE platform = ? AND channel = ? AND user = ?"
        removed = db.execute(f"DELETE FROM messages {where}", key).rowcount
        removed += db.execute(f"DELETE FROM viewers {where}", key).rowcount
        return removed

    def _stored_chars_sync(self, viewer: ViewerKey) -> int:
        (total,) = (
            self._connection()
            .execute(
                "SELECT coalesce(sum(length(content)), 0) FROM messages "
                "WHERE platform = ? AND channel = ? AND user = ?",
                (viewer.platform, viewer.channel, viewer.user),
            )
            .fetchone()
        )
        return int(total)


class _transaction:
    """BEGIN ... COMMIT (ROLLBACK on error) on a connection in autocommit mode."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
