"""Replies in Twitch chat: split at its 500-character limit and paced to its rate limits.

Twitch allows a chatter 20 messages in any 30 seconds (100 where it is the broadcaster or a
moderator); a bot that sends more is blocked from chat for 30 minutes. :class:`ChatPacer` never
sends more than its limit in any window: lines wait in a bounded outbox, notices to one channel
are merged into one line, and when the outbox is full the oldest waiting reply is dropped (with
a log line) so that what is posted stays current.

Time comes from an injectable clock and sleep, so the pace can be tested without waiting.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 500  # Twitch's limit, counted by twitchio after joining whitespace
WINDOW_S = 30.0
LIMIT = 20  # messages per window for an ordinary chatter
MODERATOR_LIMIT = 100  # ... for the broadcaster or a moderator of the channel
_JOINERS = {"\u200d", "\u034f", "\u2060"}  # joiners: never end a part just before or after one


def _glued(char: str) -> bool:
    """A character that belongs to the one before it (a mark, joiner or variation selector)."""
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or char in _JOINERS
        or 0xFE00 <= ord(char) <= 0xFE0F
        or 0xE0100 <= ord(char) <= 0xE01EF
        or 0x1F3FB <= ord(char) <= 0x1F3FF  # skin tones
    )


def split_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, cut between words.

    Whitespace runs become one space (as Twitch shows them). A word longer than ``limit`` is cut
    inside, but never between a letter and its marks or inside an emoji joined by ZWJ.
    """
    words = text.split()
    parts: list[str] = []
    current = ""
    for word in words:
        while len(word) > limit:
            if current:
                parts.append(current)
                current = ""
            cut = limit
            while cut > 1 and (_glued(word[cut]) or word[cut - 1] in _JOINERS):
                cut -= 1
            parts.append(word[:cut])
            word = word[cut:]
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= limit:
            current = f"{current} {word}"
        else:
            parts.append(current)
            current = word
    if current:
        parts.append(current)
    return parts


@dataclass(kw_only=True)
class ChatLine:
    """One message waiting to be posted."""

    channel: str  # the broadcaster's user id
    text: str
    reply_to: str | None = None  # the message it answers
    notice: bool = False  # a short notice ("@ada wait a moment"); notices merge
    reply_id: str = ""  # which reply it is part of, for the log


Send = Callable[[ChatLine], Awaitable[None]]


class ChatPacer:
    """Posts lines through ``send`` no faster than Twitch allows, oldest first.

    ``limit_for(channel)`` says how many lines may go out in any ``window_s`` where the bot
    posts to that channel (:data:`LIMIT`, or :data:`MODERATOR_LIMIT` once the bot is seen to be
    a moderator or the broadcaster there); every line sent anywhere counts against it, which
    keeps the bot within the stricter of its limits.
    """

    def __init__(
        self,
        send: Send,
        *,
        backlog: int = 10,
        window_s: float = WINDOW_S,
        limit_for: Callable[[str], int] = lambda channel: LIMIT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._send = send
        self.backlog = backlog
        self.window_s = window_s
        self._limit_for = limit_for
        self._clock = clock
        self._sleep = sleep
        self._outbox: collections.deque[ChatLine] = collections.deque()
        self._sent: collections.deque[float] = collections.deque()  # when each line went out
        self._wakeup = asyncio.Event()
        self.sent_at: list[float] = []  # every send time, for reports and tests
        self.dropped = 0
        self.merged = 0

    @property
    def waiting(self) -> int:
        return len(self._outbox)

    def post(self, line: ChatLine) -> None:
        """Queue ``line``; merge it into a waiting notice, or drop the oldest if full."""
        if line.notice:
            for waiting in self._outbox:
                joined = f"{waiting.text} {line.text}"
                if waiting.notice and waiting.channel == line.channel and len(joined) <= 500:
                    waiting.text = joined
                    waiting.reply_to = None  # it answers several viewers now
                    self.merged += 1
                    return
        self._outbox.append(line)
        while len(self._outbox) > self.backlog:
            dropped = self._outbox.popleft()
            self.dropped += 1
            log.warning(
                "chat pace: dropped the oldest waiting line to channel %s (%s): %d lines wait, "
                "at most %d posts per %.0f s",
                dropped.channel,
                dropped.reply_id or ("notice" if dropped.notice else "reply"),
                len(self._outbox),
                self._limit_for(dropped.channel),
                self.window_s,
            )
        self._wakeup.set()

    def _room(self, channel: str) -> float:
        """0 when a line to ``channel`` may go now, else how long until it may."""
        now = self._clock()
        while self._sent and self._sent[0] <= now - self.window_s:
            self._sent.popleft()
        limit = self._limit_for(channel)
        if len(self._sent) < limit:
            return 0.0
        # The line may go when enough of the sends in the window have aged out of it.
        return self._sent[len(self._sent) - limit] + self.window_s - now

    async def run(self) -> None:
        """Post waiting lines as the pace allows, until cancelled."""
        while True:
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            line = self._outbox[0]
            wait = self._room(line.channel)
            if wait > 0:
                await self._sleep(wait)
                continue
            self._outbox.popleft()
            now = self._clock()
            self._sent.append(now)
            self.sent_at.append(now)
            try:
                await self._send(line)
            except Exception as err:  # noqa: BLE001 - one failed post never stops the chat
                # The type only: a client library's message may hold a URL with credentials.
                log.warning(
                    "could not post to Twitch channel %s (%s)", line.channel, type(err).__name__
                )
