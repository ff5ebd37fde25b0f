"""Replies in Twitch chat: split at 500 characters between words, paced to 20 per 30 s.

The pacer runs on a fake clock whose sleep moves time on at once, so a burst that takes minutes
of chat time is checked in milliseconds and nothing depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from bots.twitch.pacing import (
    LIMIT,
    MAX_MESSAGE_CHARS,
    MODERATOR_LIMIT,
    WINDOW_S,
    ChatLine,
    ChatPacer,
    split_message,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def most_in_any_window(times: list[float], window: float = WINDOW_S) -> int:
    """The largest number of sends within any ``window`` seconds (half-open)."""
    return max(
        (sum(1 for other in times if start <= other < start + window) for start in times),
        default=0,
    )


async def drain(pacer: ChatPacer, sent: list[ChatLine], expected: int) -> None:
    """Run the pacer until ``expected`` lines were sent and nothing more waits."""
    task = asyncio.create_task(pacer.run(), name="test-pacer")
    try:
        async with asyncio.timeout(10):
            while len(sent) < expected or pacer.waiting:  # noqa: ASYNC110 - a fake clock
                await asyncio.sleep(0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_burst_of_100_replies_never_exceeds_20_in_any_30_s_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    sent: list[ChatLine] = []

    async def send(line: ChatLine) -> None:
        sent.append(line)

    pacer = ChatPacer(send, backlog=100, clock=clock, sleep=clock.sleep)
    for n in range(100):
        pacer.post(ChatLine(channel="1971641", text=f"reply {n}", reply_to=f"m{n}"))
    await drain(pacer, sent, 100)
    assert [line.text for line in sent] == [f"reply {n}" for n in range(100)]  # in order
    assert most_in_any_window(pacer.sent_at) == LIMIT == 20
    assert pacer.sent_at[-1] - pacer.sent_at[0] >= 4 * WINDOW_S  # it took 5 windows


async def test_a_burst_beyond_the_backlog_drops_the_oldest_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    sent: list[ChatLine] = []

    async def send(line: ChatLine) -> None:
        sent.append(line)

    pacer = ChatPacer(send, backlog=10, clock=clock, sleep=clock.sleep)
    with caplog.at_level(logging.WARNING, logger="bots.twitch.pacing"):
        for n in range(100):
            pacer.post(ChatLine(channel="c", text=f"reply {n}", reply_id=f"t{n}"))
        await drain(pacer, sent, 10)
    assert [line.text for line in sent] == [f"reply {n}" for n in range(90, 100)]  # newest
    assert pacer.dropped == 90
    assert "dropped the oldest waiting line" in caplog.text and "(t0)" in caplog.text
    assert most_in_any_window(pacer.sent_at) <= 20


async def test_a_moderator_bot_may_post_100_per_window() -> None:
    clock = FakeClock()
    sent: list[ChatLine] = []

    async def send(line: ChatLine) -> None:
        sent.append(line)

    pacer = ChatPacer(
        send, backlog=300, clock=clock, sleep=clock.sleep, limit_for=lambda _: MODERATOR_LIMIT
    )
    for n in range(250):
        pacer.post(ChatLine(channel="c", text=f"r{n}"))
    await drain(pacer, sent, 250)
    assert most_in_any_window(pacer.sent_at) == 100


async def test_refusal_notices_to_one_channel_merge_into_one_line() -> None:
    clock = FakeClock()
    sent: list[ChatLine] = []

    async def send(line: ChatLine) -> None:
        sent.append(line)

    pacer = ChatPacer(send, clock=clock, sleep=clock.sleep)
    for name in ("ada", "bob", "cy"):
        pacer.post(ChatLine(channel="c", text=f"@{name} busy", reply_to=f"m-{name}", notice=True))
    await drain(pacer, sent, 1)
    assert [line.text for line in sent] == ["@ada busy @bob busy @cy busy"]
    assert sent[0].reply_to is None and pacer.merged == 2


async def test_a_failed_post_is_logged_and_the_next_line_still_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    sent: list[ChatLine] = []

    async def send(line: ChatLine) -> None:
        if line.text == "bad":
            raise RuntimeError("https://id.twitch.tv/oauth2/token?client_secret=hunter2hunter2")
        sent.append(line)

    pacer = ChatPacer(send, clock=clock, sleep=clock.sleep)
    pacer.post(ChatLine(channel="c", text="bad"))
    pacer.post(ChatLine(channel="c", text="good"))
    with caplog.at_level(logging.WARNING):
        await drain(pacer, sent, 1)
    assert [line.text for line in sent] == ["good"]
    assert "RuntimeError" in caplog.text and "hunter2" not in caplog.text


# -- splitting -----------------------------------------------------------------------------


def test_short_text_is_one_part_with_whitespace_joined() -> None:
    assert split_message("  Hello\n  there,   chat!  ") == ["Hello there, chat!"]


def test_long_text_splits_between_words_within_500_characters() -> None:
    words = [f"word{n}" for n in range(300)]
    parts = split_message(" ".join(words))
    assert all(len(part) <= MAX_MESSAGE_CHARS for part in parts)
    assert len(parts) == 5 and " ".join(parts).split() == words  # nothing lost, no word cut
    assert len(parts[0]) > 480  # parts are filled


def test_a_word_longer_than_the_limit_is_cut_but_never_inside_a_letter_or_emoji() -> None:
    family = "👨\u200d👩\u200d👧\u200d👦"  # 7 code points joined by ZWJ
    accented = "e\u0301"  # e + combining acute
    text = "a" * 497 + family + accented * 300
    parts = split_message(text)
    assert "".join(parts) == text
    for part in parts:
        assert len(part) <= MAX_MESSAGE_CHARS
        assert not part.startswith(("\u200d", "\u0301")) and not part.endswith("\u200d")
    assert parts[0] == "a" * 497  # the family emoji did not fit: it moved whole to part 2
    assert parts[1].startswith(family)


@pytest.mark.parametrize(
    "text",
    ["مرحبا بكم في البث المباشر " * 30, "שלום לכולם " * 60, "🏳️‍🌈 " * 200],
)
def test_right_to_left_and_emoji_text_splits_on_spaces(text: str) -> None:
    parts = split_message(text)
    assert all(len(part) <= MAX_MESSAGE_CHARS for part in parts)
    assert " ".join(parts) == " ".join(text.split())
