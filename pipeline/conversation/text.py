"""Checking text before it is spoken: emptiness, control characters, length."""

from __future__ import annotations

import unicodedata

from pipeline.errors import InputError

ALLOWED_CONTROLS = {"\n", "\t", "\r"}


def check_speakable(text: str, *, max_chars: int) -> str:
    """Return ``text`` with its whitespace tidied, or raise :class:`InputError` saying why not.

    Refused: empty text, control characters (other than newline and tab), invisible format
    characters that can hide words from filters, and text longer than ``max_chars``.
    """
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
