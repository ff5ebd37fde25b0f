"""Which chat messages the persona answers: the gate between adapters and the conversation.

:class:`ChatFilter` cleans and bounds a viewer's text (control and invisible characters out,
whitespace tidied, at most ``max_chars``) and then applies, in order: blocked users,
blocked words (matched in every disguise, see :mod:`pipeline.conversation.safety`), duplicate
suppression, a per-viewer cooldown and a global rate. Every rejection is logged with its reason
on the ``pipeline.conversation.filters`` logger and returned as a :class:`FilterResult`, so an
adapter can tell the viewer why (or stay silent). Moderators may skip the cooldown, rate and
duplicate checks.

Judging a message (:meth:`ChatFilter.judge`) changes nothing; only :meth:`ChatFilter.commit`,
called once the message is really taken, starts the cooldown and uses a rate slot.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pipeline.conversation.safety import PhraseMatcher, fold
from pipeline.conversation.text import strip_terminal_sequences
from pipeline.utterance import Utterance, ViewerKey

log = logging.getLogger(__name__)

Reason = Literal[
    "accepted",
    "no_text",
    "empty",
    "too_long",
    "blocked_user",
    "blocked_word",
    "duplicate",
    "cooldown",
    "rate_limited",
]

_MAX_COMBINING = 2  # accents per letter kept; "Zalgo" text stacks hundreds


@dataclass(frozen=True, kw_only=True)
class FilterRules:
    """What :class:`ChatFilter` lets through; ``[chat]`` in bot.toml documents each field."""

    max_chars: int = 300
    too_long: Literal["truncate", "reject"] = "truncate"
    user_cooldown_s: float = 10.0
    global_per_minute: int = 20
    duplicate_window_s: float = 60.0
    blocked_users: tuple[str, ...] = ()
    blocked_words: tuple[str, ...] = ()
    moderators_exempt: bool = True


@dataclass(frozen=True, kw_only=True)
class FilterResult:
    """The filter's answer: ``accepted`` with the cleaned text, or the reason why not."""

    accepted: bool
    reason: Reason
    text: str = ""  # the cleaned, bounded text (also when rejected, for the log)
    detail: str = ""  # e.g. the blocked word, or seconds left of a cooldown
    truncated: bool = False


def clean_chat_text(text: str, *, max_chars: int) -> tuple[str, bool]:
    """``text`` with terminal escape sequences removed whole, control and invisible characters
    (bidi overrides included) removed, whitespace collapsed, at most
    ``max_chars`` long (cut at a word where possible); and whether it was cut.

    Work is bounded by ``max_chars``, not by the length of what a viewer pasted.
    """
    bounded = len(text) <= max_chars * 4 + 64
    head = strip_terminal_sequences(text[: max_chars * 4 + 64])
    out: list[str] = []
    combining = 0
    for char in head:
        category = unicodedata.category(char)
        if category == "Cc" or category in ("Zl", "Zp"):
            out.append(" ")
            combining = 0
        elif category in ("Cf", "Co", "Cs", "Cn"):
            continue
        elif category in ("Mn", "Me"):
            combining += 1
            if combining <= _MAX_COMBINING:
                out.append(char)
        else:
            combining = 0
            out.append(char)
    cleaned = " ".join("".join(out).split())
    cut = not bounded or len(cleaned) > max_chars
    if len(cleaned) > max_chars:
        cleaned = cleaned[:max_chars]
        space = cleaned.rfind(" ")
        if space > max_chars * 2 // 3:
            cleaned = cleaned[:space]
        cleaned = cleaned.rstrip(" ,;:-") + "…"
    return cleaned, cut


@dataclass(kw_only=True)
class _State:
    last_by_user: dict[ViewerKey, float] = field(default_factory=dict)
    recent_texts: collections.OrderedDict[str, float] = field(
        default_factory=collections.OrderedDict
    )
    accepted_times: collections.deque[float] = field(default_factory=collections.deque)


class ChatFilter:
    """Decide, message by message, what the persona answers."""

    def __init__(self, rules: FilterRules, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self._clock = clock
        self._blocked_users = {user.strip().lower().lstrip("@") for user in rules.blocked_users}
        self._blocked_words = PhraseMatcher(rules.blocked_words)
        self._state = _State()

    def update_blocked(self, *, users: Iterable[str] = (), words: Iterable[str] = ()) -> None:
        """Block more users or words from now on (a moderator command)."""
        self._blocked_users.update(user.strip().lower().lstrip("@") for user in users)
        words = tuple(words)
        if words:
            self.rules = dataclasses.replace(
                self.rules, blocked_words=(*self.rules.blocked_words, *words)
            )
            self._blocked_words = PhraseMatcher(self.rules.blocked_words)

    def judge(self, utterance: Utterance) -> FilterResult:
        """Judge one message without recording anything (a rejection is logged).

        Call :meth:`commit` once the message is really taken: only then does it start the
        viewer's cooldown, use a slot of the global rate and become a duplicate to refuse.
        A message refused later (busy, unsafe) leaves no trace, so the viewer can send it again.
        """
        result = self._judge(utterance)
        if not result.accepted:
            log.info(
                "not answering %s (%s): %s%s",
                utterance.viewer,
                utterance.id,
                result.reason,
                f" ({result.detail})" if result.detail else "",
            )
        return result

    def commit(self, utterance: Utterance, result: FilterResult) -> None:
        """Record a message :meth:`judge` accepted and the caller took (cooldown, rate, dups)."""
        if not result.accepted:
            raise ValueError(f"only an accepted message is committed, not a {result.reason!r} one")
        self._record(utterance, result.text)

    def check(self, utterance: Utterance) -> FilterResult:
        """:meth:`judge` and, when accepted, :meth:`commit` at once: for a caller that takes
        every message the filter accepts."""
        result = self.judge(utterance)
        if result.accepted:
            self.commit(utterance, result)
        return result

    def _judge(self, utterance: Utterance) -> FilterResult:
        rules = self.rules
        names = {utterance.user.lower(), utterance.display_name.lower()}
        if names & self._blocked_users:
            return FilterResult(accepted=False, reason="blocked_user")
        if utterance.text is None:
            return FilterResult(accepted=False, reason="no_text", detail="speech not transcribed")
        text, cut = clean_chat_text(utterance.text, max_chars=rules.max_chars)
        if not any(char.isalnum() for char in text):
            return FilterResult(accepted=False, reason="empty")
        if cut and rules.too_long == "reject":
            return FilterResult(
                accepted=False,
                reason="too_long",
                text=text,
                detail=f"{len(utterance.text):,} characters, at most {rules.max_chars:,}",
            )
        word = self._blocked_words.find(text)
        if word is not None:
            return FilterResult(accepted=False, reason="blocked_word", text=text, detail=word)
        exempt = utterance.moderator and rules.moderators_exempt
        now = self._clock()
        if not exempt:
            rejection = self._limits(utterance, text, now)
            if rejection is not None:
                return rejection
        return FilterResult(accepted=True, reason="accepted", text=text, truncated=cut)

    def _limits(self, utterance: Utterance, text: str, now: float) -> FilterResult | None:
        rules, state = self.rules, self._state
        key = _duplicate_key(text)
        seen = state.recent_texts.get(key)
        if seen is not None and now - seen < rules.duplicate_window_s:
            return FilterResult(
                accepted=False, reason="duplicate", text=text, detail=f"{now - seen:.0f} s ago"
            )
        last = state.last_by_user.get(utterance.viewer)
        if last is not None and now - last < rules.user_cooldown_s:
            left = rules.user_cooldown_s - (now - last)
            return FilterResult(
                accepted=False, reason="cooldown", text=text, detail=f"{left:.1f} s left"
            )
        while state.accepted_times and now - state.accepted_times[0] >= 60.0:
            state.accepted_times.popleft()
        if len(state.accepted_times) >= rules.global_per_minute:
            return FilterResult(
                accepted=False,
                reason="rate_limited",
                text=text,
                detail=f"{rules.global_per_minute} messages a minute",
            )
        return None

    def _record(self, utterance: Utterance, text: str) -> None:
        now = self._clock()
        state = self._state
        state.last_by_user[utterance.viewer] = now
        state.accepted_times.append(now)
        key = _duplicate_key(text)
        state.recent_texts[key] = now
        state.recent_texts.move_to_end(key)
        while state.recent_texts:
            oldest_key, at = next(iter(state.recent_texts.items()))
            if now - at < self.rules.duplicate_window_s and len(state.recent_texts) <= 10_000:
                break
            del state.recent_texts[oldest_key]
        if len(state.last_by_user) > 10_000:
            expired = [
                viewer
                for viewer, at in state.last_by_user.items()
                if now - at >= self.rules.user_cooldown_s
            ]
            for viewer in expired:
                del state.last_by_user[viewer]


def _duplicate_key(text: str) -> str:
    """Messages equal after folding case, accents, look-alikes and punctuation are one."""
    return "".join(char for char in fold(text) if char.isalnum())
