"""Checking text before it is spoken: terminal escapes, emptiness, control characters, length."""

from __future__ import annotations

import re
import unicodedata

from pipeline.errors import InputError

ALLOWED_CONTROLS = {"\n", "\t", "\r"}

# ECMA-48 sequences, 7-bit (ESC ...) and 8-bit (C1) forms. A terminal swallows each one whole,
# so a voice must too: removing only the ESC would leave "[31m" to be read out.
_TERMINAL_SEQUENCE = re.compile(
    r"""
    (?:\x1b[\]PX^_]|[\x90\x98\x9d-\x9f])  # OSC, DCS, SOS, PM, APC: a string up to its end
        (?:.*?(?:\x07|\x1b\\|\x9c)|.*\Z)        # (BEL or ST; unterminated: to the end)
    | (?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?        # CSI: parameters, intermediates, final byte
    | \x1b[ -/]*[0-~]?                         # any other escape: ESC, intermediates, final
    """,
    re.VERBOSE | re.DOTALL,
)


def strip_terminal_sequences(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves, titles, links),
    each removed whole; other characters are left as they are."""
    if "\x1b" not in text and not any("\x90" <= char <= "\x9f" for char in text):
        return text
    return _TERMINAL_SEQUENCE.sub("", text)


def check_speakable(text: str, *, max_chars: int) -> str:
    """Return ``text`` with its whitespace tidied, or raise :class:`InputError` saying why not.

    Terminal escape sequences (a colour code pasted from a terminal) are removed whole.
    Refused: empty text, other control characters (newline and tab are fine), invisible format
    characters that can hide words from filters, and text longer than ``max_chars``.
    """
    text = strip_terminal_sequences(text)
    if len(text) > max_chars:
        raise InputError(
            f"the text is {len(text):,} characters long; at most {max_chars:,} are spoken at once "
            "(split it, or raise [limits] max_text_chars in bot.toml)"
        )
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if (category == "Cc" and char not in ALLOWED_CONTROLS) or category in ("Cf", "Cs", "Co"):
            raise InputError(
                f"the text contains the control character U+{ord(char):04X} at position "
                f"{position + 1}; remove it"
            )
    tidy = " ".join(text.split())
    if not tidy or not any(char.isalnum() for char in tidy):
        raise InputError("the text is empty: give some words to say")
    return tidy
