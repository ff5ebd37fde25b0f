"""Text brought to the one form blocked phrases are matched in, and cut into words.

:func:`fold` undoes what changes how text looks but not how it reads: invisible and bidi-control
characters go, NFKC makes full-width and styled letters plain, and look-alike letters of other
scripts (Greek and Cyrillic capitals, Lisu, Cherokee, small capitals ...) become Latin ones
through decancer-py, *before* anything is lower-cased, so a Greek capital Kappa is a "k" and not
a Greek small kappa. What decancer leaves is looked up in Unicode's own confusables data
(UTS #39, through confusable-homoglyphs). Accents and other combining marks are stripped.

:func:`words` then cuts folded text into :class:`Word` s, reading leetspeak on the way
(``|\\|`` is an "n", ``$`` an "s", ``1`` an "i"), in two spellings: ``plain`` (the letters, for
looking a word up in a dictionary) and ``sound`` (how it is heard: "ph" is "f", "c" and "q" are
"k", "x" is "ks", "l" and "i" one letter, since ``1`` and ``|`` stand for either).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

# Letters that show nothing (fillers) but are not format characters.
_INVISIBLE_LETTERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u17b4", "\u17b5"}
_SHARP_S = str.maketrans({"ß": "ss", "ẞ": "SS"})

# Several characters drawn as one letter, longest first.
MULTI_CHARACTER_LEET: Mapping[str, str] = {
    "|\\/|": "m",
    "/\\/\\": "m",
    "|\\|": "n",
    "/\\/": "n",
    "|-|": "h",
    "]-[": "h",
    "}{": "h",
    "\\/\\/": "w",
    "|_|": "u",
    "(_)": "u",
    "/\\": "a",
    "\\/": "v",
    "|<": "k",
    "|{": "k",
    "|)": "d",
    "|]": "d",
    "|>": "p",
    "|2": "r",
    "|3": "b",
    "|_": "l",
    "()": "o",
    "[]": "o",
    "><": "x",
}
_MULTI = re.compile("|".join(re.escape(key) for key in MULTI_CHARACTER_LEET))

# One digit or symbol for one letter (the letter it most often stands for).
LEET: Mapping[str, str] = {
    "4": "a",
    "@": "a",
    "^": "a",
    "8": "b",
    "ß": "b",
    "¢": "c",
    "©": "c",
    "3": "e",
    "€": "e",
    "6": "g",
    "9": "g",
    "1": "i",
    "!": "i",
    "|": "l",
    "£": "l",
    "0": "o",
    "°": "o",
    "5": "s",
    "$": "s",
    "§": "s",
    "7": "t",
    "+": "t",
    "2": "z",
    "×": "x",
}
_LEET_TABLE = str.maketrans(dict(LEET))
# Characters that are part of a word: letters, digits and leetspeak symbols.
_WORD = re.compile(r"[a-z0-9" + re.escape("".join(c for c in LEET if not c.isalnum())) + r"']+")
_SYMBOLS = "".join(c for c in LEET if not c.isalnum())
_SYMBOL = re.compile("[" + re.escape(_SYMBOLS) + "]")
_SYMBOL_ENDS = re.compile("^[" + re.escape(_SYMBOLS) + "]+|[" + re.escape(_SYMBOLS) + "]+$")
_APOSTROPHE = str.maketrans({"'": None, "’": "'", "ʼ": "'", "`": "'"})
_NUMBER = re.compile(r"[0-9]{2,}")  # a number of two digits or more is a number, not leetspeak

# How a letter sequence sounds: applied in this order to plain letters.
_SOUNDS = (("ph", "f"), ("ck", "k"), ("c", "k"), ("q", "k"), ("x", "ks"), ("l", "i"))


@functools.cache
def _confusables() -> dict[str, str]:
    """Characters that Unicode's confusables data says pass for one ASCII letter or digit."""
    from confusable_homoglyphs import utils

    table: dict[str, str] = {}
    for char, entries in utils.load("confusables.json").items():
        if len(char) != 1 or char.isascii():
            continue
        for entry in entries:
            target = entry["c"]
            if len(target) == 1 and target.isascii() and target.isalnum():
                table[char] = target.lower()
                break
    return table


def _visible(text: str) -> str:
    """NFKD without combining marks and invisible characters; control characters are spaces."""
    out: list[str] = []
    for char in unicodedata.normalize("NFKD", text):
        if char.isascii():
            out.append(char)
            continue
        category = unicodedata.category(char)
        if category in ("Cf", "Mn", "Me") or char in _INVISIBLE_LETTERS:
            continue  # zero-width, soft hyphen, bidi controls, fillers, accents
        if category in ("Cc", "Zl", "Zp") or char == "\u2800":
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def fold(text: str) -> str:
    """``text`` in the form blocked phrases are matched in: lower-case Latin letters, digits,
    symbols and separators, with look-alikes, styles, accents and invisible characters undone.
    Separators, digits and symbols stay: leetspeak and spacing are read by :func:`words`."""
    import decancer_py

    text = unicodedata.normalize("NFKC", _visible(text.translate(_SHARP_S)))
    if text.isascii():
        return text.lower()
    # decancer cures look-alikes before it lower-cases (Greek capitals are Latin capitals).
    text = str(decancer_py.parse(text, disable_bidi=True))
    if text.isascii():
        return text
    confusables = _confusables()
    out: list[str] = []
    for char in unicodedata.normalize("NFKD", text):
        if char.isascii():
            out.append(char)
            continue
        if unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        out.append(confusables.get(char, char).lower())
    return "".join(out)


def plain_letters(folded: str) -> str:
    """A folded word's letters with leetspeak read (``$h1t`` -> ``shit``)."""
    return _MULTI.sub(lambda m: MULTI_CHARACTER_LEET[m.group()], folded).translate(_LEET_TABLE)


def sound(plain: str) -> str:
    """How plain letters are heard: ``phuck`` and ``fuk`` sound alike (``fuk``)."""
    for written, heard in _SOUNDS:
        plain = plain.replace(written, heard)
    return plain


def collapse(letters: str) -> str:
    """Runs of one letter made one: ``fuuuck`` -> ``fuck``."""
    return re.sub(r"(.)\1+", r"\1", letters)


def cap_runs(letters: str) -> str:
    """Runs of one letter cut to two: ``asssss`` -> ``ass``."""
    return re.sub(r"(.)\1\1+", r"\1\1", letters)


@dataclass(frozen=True, slots=True)
class Word:
    """One word of folded text: as written, its letters, and how it sounds."""

    folded: str
    plain: str
    sound: str
    has_letter: bool
    bare: str = ""  # plain, without leetspeak symbols at its ends ("it!" -> "it")


def has_symbols(folded: str) -> bool:
    """Whether folded text holds symbols that leetspeak reads as letters (``$``, ``!``, ``|``)."""
    return _SYMBOL.search(folded) is not None


def words(folded: str, *, symbols_are_gaps: bool = False) -> list[Word]:
    """The words of folded text, in order; separators (spaces, punctuation) between them.

    With ``symbols_are_gaps``, leetspeak symbols separate letters instead of standing for one
    (``f!u!c!k`` is four letters, not "fiuicik")."""
    folded = _MULTI.sub(lambda m: MULTI_CHARACTER_LEET[m.group()], folded)
    if symbols_are_gaps:
        folded = _SYMBOL.sub(" ", folded)
    out: list[Word] = []
    for match in _WORD.finditer(folded.translate(_APOSTROPHE)):
        token = match.group().replace("'", "")
        if not token or _NUMBER.fullmatch(token):
            continue  # "1945" is a year, not leetspeak
        plain = token.translate(_LEET_TABLE)
        out.append(
            Word(
                folded=token,
                plain=plain,
                sound=sound(plain),
                has_letter=any(c.isalpha() for c in token),
                bare=_SYMBOL_ENDS.sub("", token).translate(_LEET_TABLE),
            )
        )
    return out
