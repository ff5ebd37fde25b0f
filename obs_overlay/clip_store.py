"""The overlay's clip store: reply clips (MP4, or speech as PCM) held in memory, bounded.

Clips live in memory, never on disk, so serving a clip by id can never read a file: an id is
only a key in a dict, and it is checked against :data:`CLIP_ID_PATTERN` before it is even
looked up. The store evicts the oldest clips first when a bound is exceeded; clips older than
``max_age_s`` are dropped by :meth:`ClipStore.prune`, which the server calls periodically.
A page fetches a clip as soon as it is announced, so an eviction only bites a page that
connects late.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import InputError

# Ids the store hands out are 16 URL-safe characters; anything outside this pattern
# (dots, slashes, percent signs, NUL, non-ASCII, empty, too long) is not an id.
CLIP_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")


def is_valid_clip_id(clip_id: str) -> bool:
    """Whether ``clip_id`` has the form of a clip id (whether or not the clip exists)."""
    return CLIP_ID_PATTERN.fullmatch(clip_id) is not None


def new_clip_id() -> str:
    """A fresh, unguessable clip id (96 random bits, URL-safe)."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True, kw_only=True)
class StoredClip:
    """One clip's bytes and when it was stored (on the store's clock)."""

    clip_id: str
    data: bytes
    stored_at: float
    content_type: str = "video/mp4"


class ClipStore:
    """In-memory clips by id (an MP4, or a sprite clip's speech), oldest evicted first.

    ``max_clips``: most clips held; ``max_bytes``: most bytes held in total (one clip larger
    than that is refused); ``max_age_s``: clips older than this are dropped by :meth:`prune`.
    ``clock`` is injectable for tests (monotonic seconds).
    """

    def __init__(
        self,
        *,
        max_clips: int = 64,
        max_bytes: int = 256 * 1024 * 1024,
        max_age_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_clips < 1 or max_bytes < 1 or max_age_s <= 0:
            raise ValueError("clip store bounds must be positive")
        self.max_clips = max_clips
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._clips: OrderedDict[str, StoredClip] = OrderedDict()
        self._total_bytes = 0

    def __len__(self) -> int:
        return len(self._clips)

    def __contains__(self, clip_id: object) -> bool:
        return isinstance(clip_id, str) and clip_id in self._clips

    @property
    def total_bytes(self) -> int:
        return self._total_bytes

    def put(
        self, data: bytes, *, clip_id: str | None = None, content_type: str = "video/mp4"
    ) -> tuple[str, list[str]]:
        """Store ``data`` (an MP4, or a clip's speech as PCM); returns its id and the ids
        evicted to make room.

        Raises :class:`InputError` for an empty clip, a clip larger than ``max_bytes`` or a
        malformed ``clip_id``.
        """
        clip_id = new_clip_id() if clip_id is None else clip_id
        if not is_valid_clip_id(clip_id):
            raise InputError(f"clip id {clip_id[:80]!r} is not 8-64 characters of A-Z a-z 0-9 _ -")
        if not data:
            raise InputError("an empty clip cannot be shown")
        if len(data) > self.max_bytes:
            raise InputError(
                f"a clip of {len(data)} bytes exceeds the clip store's size bound of "
                f"{self.max_bytes} bytes (overlay.store_max_mb in bot.toml)"
            )
        self._remove(clip_id)
        self._clips[clip_id] = StoredClip(
            clip_id=clip_id, data=data, stored_at=self._clock(), content_type=content_type
        )
        self._total_bytes += len(data)
        evicted: list[str] = []
        while len(self._clips) > self.max_clips or self._total_bytes > self.max_bytes:
            oldest = next(iter(self._clips))
            self._remove(oldest)
            evicted.append(oldest)
        return clip_id, evicted

    def get(self, clip_id: str) -> bytes | None:
        """The clip's bytes, or None when the id is malformed, unknown, evicted or expired."""
        entry = self.entry(clip_id)
        return entry.data if entry is not None else None

    def entry(self, clip_id: str) -> StoredClip | None:
        """The stored clip with its content type, or None (as :meth:`get`)."""
        if not is_valid_clip_id(clip_id):
            return None
        clip = self._clips.get(clip_id)
        if clip is None or self._clock() - clip.stored_at > self.max_age_s:
            return None
        return clip

    def discard(self, clip_id: str) -> None:
        """Forget a clip (no error when it is not there)."""
        self._remove(clip_id)

    def clear(self) -> None:
        self._clips.clear()
        self._total_bytes = 0

    def prune(self) -> list[str]:
        """Drop the clips older than ``max_age_s``; returns their ids."""
        limit = self._clock() - self.max_age_s
        expired = [cid for cid, clip in self._clips.items() if clip.stored_at < limit]
        for clip_id in expired:
            self._remove(clip_id)
        return expired

    def _remove(self, clip_id: str) -> None:
        clip = self._clips.pop(clip_id, None)
        if clip is not None:
            self._total_bytes -= len(clip.data)
