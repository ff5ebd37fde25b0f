"""Word error rate: how far a transcript is from what was said (benchmarks and tests)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped."""
    return _WORD.findall(text.lower())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edit distance, words in the reference)."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i]
        for j, hyp_word in enumerate(hyp, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
            )
        previous = current
    return previous[-1], len(ref)


def word_error_rate(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus word error rate of (reference, hypothesis) pairs: all errors over all words."""
    errors = total = 0
    for reference, hypothesis in pairs:
        found, count = word_errors(reference, hypothesis)
        errors += found
        total += count
    return errors / max(total, 1)
