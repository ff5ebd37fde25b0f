"""Secrets and private details are never spoken, in any of the forms they could be spoken in.

A secret (an API key, a token, a password from the environment) or a configured private detail
(an e-mail address, a name, a street address) leaks when 10 of its characters in a row (all of
it, if shorter) appear in what is said: however cased or spaced, in leetspeak, backwards, spelled
out letter by letter with letter names or the NATO alphabet, with digits said as words, or with
"dash", "dot", "at", "underscore" said for the symbols.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from pipeline.conversation.safety.folding import LEET, fold
from pipeline.conversation.safety.matcher import SPOKEN_LETTERS

_SECRET_NAME = re.compile(r"(?i)(key|token|secret|passw|pwd|credential)")
SECRET_WINDOW = 10  # this many characters of a secret in a row are a leak
MIN_SECRET = 6  # shorter values are not looked for (they would match ordinary words)

# Digits said as words (English, German, French, Spanish).
_DIGIT_WORDS = {
    digit: str(value)
    for value, names in enumerate(
        (
            "zero null zéro cero oh",
            "one eins un une uno",
            "two zwei deux dos",
            "three drei trois tres",
            "four vier quatre cuatro",
            "five fünf fuenf cinq cinco",
            "six sechs seis",
            "seven sieben sept siete",
            "eight acht huit ocho",
            "nine neun neuf nueve",
        )
    )
    for digit in fold(names).split()
}
# Symbols said as words: they are left out, as the symbols are.
_SYMBOL_WORDS = frozenset(
    fold(
        "dash hyphen minus underscore under score dot point period punkt punto point at "
        "arobase arroba klammeraffe slash colon plus tilde hash"
    ).split()
)
_TOKEN = re.compile(r"[^\W_]+")
# The same words spelled letter by letter ("d o t"): taken out of the squashed text.
_SPELLED_SYMBOL = re.compile(
    "|".join(re.escape(word) for word in sorted(_SYMBOL_WORDS, key=len, reverse=True))
)
_LEET_DIGITS = str.maketrans({k: v for k, v in LEET.items() if k.isdigit()})


def _squash(text: str) -> str:
    """Letters and digits of folded text, leetspeak digits read as letters."""
    return "".join(char for char in fold(text) if char.isalnum()).translate(_LEET_DIGITS)


def _spoken(text: str) -> str:
    """Like :func:`_squash`, with spoken letters, digits and symbols read back."""
    out: list[str] = []
    for token in _TOKEN.findall(fold(text)):
        if token in _SYMBOL_WORDS:
            continue
        out.append(_DIGIT_WORDS.get(token) or SPOKEN_LETTERS.get(token) or token)
    return "".join(out).translate(_LEET_DIGITS)


def secrets_from_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say they hold a secret (API keys, tokens,
    passwords): at least 8 characters and no spaces."""
    environ = os.environ if environ is None else environ
    return [
        value
        for name, value in environ.items()
        if _SECRET_NAME.search(name) and len(value) >= 8 and not any(c.isspace() for c in value)
    ]


class SecretGuard:
    """Tell whether text gives away any part of a secret or private detail."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._windows: dict[int, set[str]] = {}
        self.count = 0
        for secret in secrets:
            squashed = _squash(secret)
            if len(squashed) < MIN_SECRET:
                continue
            self.count += 1
            size = min(len(squashed), SECRET_WINDOW)
            windows = self._windows.setdefault(size, set())
            for start in range(len(squashed) - size + 1):
                window = squashed[start : start + size]
                windows.add(window)
                windows.add(window[::-1])  # said backwards

    def __repr__(self) -> str:
        return f"SecretGuard({self.count} secrets)"  # never the secrets themselves

    def leaks(self, text: str) -> bool:
        """True when ``text`` contains part of a secret, in any of the forms listed above."""
        if not self._windows:
            return False
        spoken = _spoken(text)
        for squashed in {_squash(text), spoken, _SPELLED_SYMBOL.sub("", spoken)}:
            for size, windows in self._windows.items():
                for start in range(len(squashed) - size + 1):
                    if squashed[start : start + size] in windows:
                        return True
        return False
