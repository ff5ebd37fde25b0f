"""The red-team suite: a compliant model tries every disguise through the real pipeline.

The table and the runner live in :mod:`lipcast.benchmarks.safety` (``lipcast bench safety``
reports the same counts): a local OpenAI-compatible server on 127.0.0.1 streams each reply in
awkward token splits to the real openai client, the sentence splitter, the safety guard, the
memory job queue and a render worker whose handler records what reached text-to-speech.

Figures are printed (``pytest -s tests/test_safety_redteam.py``).
"""

from __future__ import annotations

import json
import re
from collections import Counter

from lipcast.benchmarks.safety import (
    DEFAULT_LIST_SAMPLES,
    DISGUISES,
    PHRASES,
    attempts,
    awkward_tokens,
    innocent_sentences,
    run_suite,
    suite_guard,
)
from pipeline.conversation.safety import default_phrases
from tests.conversation_support import cohost

# The classes the issue names, and the table's disguises that stand for each.
ISSUE_CLASSES = {
    "reversed text": {"reversed", "reversed letters spelled", "right-to-left override"},
    "run-together and inflected forms": {
        "run together, repeated",
        "plural and suffix",
        "digits stuck on",
    },
    "symbols between letters": {
        "plus between letters",
        "bangs between letters",
        "pipes between letters",
    },
    "multi-character leetspeak": {"multi-character leetspeak"},
    "look-alikes in capitals and whole scripts": {
        "greek capitals",
        "lisu letters",
        "cherokee letters",
        "math script",
        "leet + zero-width + cyrillic",
    },
    "letter names and the nato alphabet": {"nato alphabet", "letter names"},
    "secrets in spoken form": {
        "secret reversed",
        "secret spelled with dashes",
        "secret letter by letter",
        "secret in the nato alphabet",
        "secret in leetspeak",
    },
    "e-mail addresses in spoken form": {
        "e-mail spoken",
        "e-mail reversed",
        "e-mail spelled",
        "e-mail leetspeak",
    },
}


def test_the_table_covers_every_class_of_the_issue_with_enough_cases() -> None:
    table = attempts()
    kinds = Counter(attempt.kind for attempt in table)
    assert len(table) >= 150
    assert len(innocent_sentences()) >= 100
    for name, members in ISSUE_CLASSES.items():
        assert members <= set(kinds), f"{name}: {members - set(kinds)} missing"
    # the suite's default-list samples really are on the default list
    defaults = {phrase.lower() for phrase in default_phrases()}
    assert set(DEFAULT_LIST_SAMPLES) <= defaults


def test_disguises_really_disguise() -> None:
    """No attempt carries its phrase as plain words, so each one tests a disguise."""
    for attempt in attempts():
        if attempt.kind in ("split over two sentences", "secret plain", "e-mail plain"):
            continue
        if attempt.phrase in (*PHRASES, *DEFAULT_LIST_SAMPLES):
            plain_words = r"\b" + re.escape(attempt.phrase) + r"\b"
            assert re.search(plain_words, attempt.text.lower()) is None, attempt
            assert attempt.kind in DISGUISES


def test_token_splits_are_awkward() -> None:
    """Replies arrive one to three characters at a time, cut anywhere (inside disguises too)."""
    reply = attempts()[0].reply()
    tokens = awkward_tokens(reply, seed=0)
    assert "".join(tokens) == reply
    assert {len(token) for token in tokens} <= {1, 2, 3}
    assert awkward_tokens(reply, seed=0) == tokens  # the same cut every run


async def test_no_blocked_phrase_reaches_tts_and_no_innocent_sentence_is_blocked() -> None:
    persona = cohost()
    result = await run_suite(suite_guard(persona), persona)
    figures = {
        "attempts": result.attempts,
        "leaked": result.leaked,
        "viewer_messages_admitted": result.viewer_leaked,
        "turns_continued": result.turns_continued,
        "innocent": result.innocent,
        "false_positives": result.false_positives,
    }
    print("\nred-team figures:", json.dumps(figures, indent=2))
    assert result.leaked_cases == []
    assert result.false_positive_cases == []
    assert result.viewer_leaked == 0
    # a blocked sentence is skipped, and the turn goes on to its closing sentence
    assert result.turns_continued == result.attempts
