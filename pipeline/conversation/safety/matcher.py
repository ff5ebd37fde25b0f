"""Find blocked phrases the way a listener (or a reader of the captions) would find them.

Text is folded and cut into words (:mod:`.folding`), and the words are read as one stream of
sounds, forwards and backwards, with separators, symbols and spacing ignored: ``k.i.l.l``,
``k+i+l+l``, ``k i l l y o u r s e l f``, ``flesruoy llik``, ``|<1|_|_ y0ur$elf`` and
``killyourselfkillyourself`` all read "kill yourself". Stretched letters count once
(``fuuuuck``), except in short phrases whose doubled letter makes the word (``ass``, not "as").
Letter names and the NATO alphabet spelled out (``kilo india lima lima``) are read as letters.

Where a phrase is found decides whether it counts:

* **inside one word**: it counts, unless that word is ordinary (:class:`~.lexicon.Lexicon`:
  "class", "assume", "Scunthorpe", "cocktail" is not: see below) or on the streamer's allow
  list. An ordinary word that is only the phrase with an ending ("asses", "fucking") or glued to
  another word ("dumbass", "cocktail") still counts;
* **across words**: it counts, unless every word it touches is a real word and the phrase is a
  single word ("look at it" holds no "tit"; "the pen is here" no "penis"). A phrase of several
  words counts whenever it starts and ends on word edges ("kill your self").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.conversation.safety.folding import (
    Word,
    cap_runs,
    collapse,
    fold,
    has_symbols,
    sound,
    words,
)
from pipeline.conversation.safety.lexicon import INFLECTIONS, Lexicon, glin_whitelist, lexicon

COLLAPSE_MIN = 5  # a phrase this long (once stretched letters count once) may be stretched
COMPOUND_MIN = 4  # a word glued before a blocked one makes a compound ("dumb|ass", not "the")

# Letter names and the NATO alphabet, as their plain letters (see folding.plain_letters).
SPOKEN_LETTERS: dict[str, str] = {
    **{letter: letter for letter in "abcdefghijklmnopqrstuvwxyz"},
    **{
        name: letter
        for letter, names in {
            "a": "ay alfa alpha",
            "b": "bee bravo",
            "c": "cee see charlie",
            "d": "dee delta",
            "e": "ee echo",
            "f": "ef eff foxtrot",
            "g": "gee golf",
            "h": "aitch haitch hotel",
            "i": "eye india",
            "j": "jay juliet juliett",
            "k": "kay kilo",
            "l": "el ell lima",
            "m": "em mike",
            "n": "en november",
            "o": "oh oscar",
            "p": "pee papa",
            "q": "cue queue quebec",
            "r": "ar romeo",
            "s": "es ess sierra",
            "t": "tee tango",
            "u": "you uniform",
            "v": "vee victor",
            "w": "whiskey whisky",
            "x": "ex xray",
            "y": "why wye yankee",
            "z": "zed zee zulu",
        }.items()
        for name in names.split()
    },
}
_SPELLED_RUN = 3
_ESZETT_WORD = re.compile(r"\w*[ßẞ]\w*")  # this many letter names in a row spell a word


@dataclass(frozen=True, slots=True)
class _Phrase:
    text: str  # as configured, for the moderators' log
    plain: str  # its letters, words run together
    words: int
    key: str  # what is looked for in the stream of sounds
    collapsed: bool  # looked for with stretched letters counted once
    open_start: bool  # "*word": anything before it is part of it
    open_end: bool  # "word*": anything after it is part of it


class _Node:
    """A trie node: the sounds that may follow, and the phrases that end here."""

    __slots__ = ("ends", "next")

    def __init__(self) -> None:
        self.next: dict[str, _Node] = {}
        self.ends: list[_Phrase] = []


@dataclass(frozen=True, slots=True)
class _Stream:
    """The sounds of a list of words run together, and the word each sound came from."""

    sounds: str
    word_of: list[int]
    first: list[int]  # where each word's sounds start
    last: list[int]  # where they end (exclusive)


def _stream(items: Sequence[Word], *, backwards: bool, collapsed: bool) -> _Stream:
    chars: list[str] = []
    word_of: list[int] = []
    first: list[int] = []
    last: list[int] = []
    for index, word in enumerate(items):
        first.append(len(chars))
        heard = sound(word.plain[::-1]) if backwards else word.sound
        for char in heard:
            repeated = bool(chars) and chars[-1] == char
            if repeated and (collapsed or (len(chars) > 1 and chars[-2] == char)):
                continue
            chars.append(char)
            word_of.append(index)
        if len(chars) == first[-1]:  # every sound of it ran into the word before
            first[-1] = max(0, len(chars) - 1)
        last.append(len(chars))
    return _Stream("".join(chars), word_of, first, last)


def _plain_eszett_words(text: str) -> list[str]:
    return [word.plain for token in _ESZETT_WORD.findall(text) for word in words(fold(token))]


def spelled_out(items: Sequence[Word]) -> list[Word] | None:
    """``items`` with runs of spelled letters ("kilo india lima lima") read as letters, or
    None when nothing is spelled out."""
    out: list[Word] = []
    run: list[Word] = []
    changed = False

    def flush() -> None:
        nonlocal changed
        if len(run) >= _SPELLED_RUN and any(len(w.plain) > 1 for w in run):
            changed = True
            for word in run:
                letter = SPOKEN_LETTERS[word.plain]
                out.append(Word(folded=letter, plain=letter, sound=sound(letter), has_letter=True))
        else:
            out.extend(run)
        run.clear()

    index = 0
    while index < len(items):
        word = items[index]
        following = items[index + 1].plain if index + 1 < len(items) else ""
        if word.plain == "double" and following in ("u", "you"):  # "double-u"
            run.append(Word(folded="w", plain="w", sound="w", has_letter=True))
            index += 2
            continue
        if word.plain in SPOKEN_LETTERS:
            run.append(word)
        else:
            flush()
            out.append(word)
        index += 1
    flush()
    return out if changed else None


class PhraseMatcher:
    """Find blocked phrases in text, in every disguise this module's docstring lists.

    ``allowed_words`` are words never blocked (the streamer's allow list); a ``*`` at the end
    (or start) of a phrase makes every word that starts (or ends) with it count, ordinary or not.
    """

    def __init__(
        self,
        phrases: Iterable[str],
        *,
        allowed_words: Iterable[str] = (),
        words_known: Lexicon | None = None,
    ) -> None:
        self._lexicon = words_known if words_known is not None else lexicon()
        self._allowed = (
            frozenset(word.plain for entry in allowed_words for word in words(fold(entry)))
            | glin_whitelist()
        )
        self._phrases: list[_Phrase] = []
        self._tries: dict[bool, _Node] = {True: _Node(), False: _Node()}
        seen: set[tuple[str, str, bool, bool]] = set()
        for text in phrases:
            phrase = self._compile(text)
            if phrase is None:
                continue
            identity = (phrase.key, phrase.plain, phrase.open_start, phrase.open_end)
            if identity in seen:
                continue
            seen.add(identity)
            self._phrases.append(phrase)
            node = self._tries[phrase.collapsed]
            for char in phrase.key:
                node = node.next.setdefault(char, _Node())
            node.ends.append(phrase)

    def __len__(self) -> int:
        return len(self._phrases)

    @staticmethod
    def _compile(text: str) -> _Phrase | None:
        stripped = text.strip()
        parts = words(fold(stripped.strip("*")))
        if not parts:
            return None
        heard = "".join(part.sound for part in parts)
        short = collapse(heard)
        collapsed = short == cap_runs(heard) or len(short) >= COLLAPSE_MIN
        return _Phrase(
            text=stripped,
            plain="".join(part.plain for part in parts),
            words=len(parts),
            key=short if collapsed else cap_runs(heard),
            collapsed=collapsed,
            open_start=stripped.startswith("*"),
            open_end=stripped.endswith("*"),
        )

    def find(self, text: str) -> str | None:
        """The first blocked phrase found in ``text``, or None."""
        if not self._phrases or not text:
            return None
        folded = fold(text)
        found = words(folded)
        # German spellings with "ß" ("aß") are German words, whatever they fold to ("ass").
        eszett = frozenset(_plain_eszett_words(text)) if _ESZETT_WORD.search(text) else frozenset()
        if not found:
            return None
        variants = [found]
        if has_symbols(folded):
            variants.append(words(folded, symbols_are_gaps=True))
        spelled = spelled_out(found)
        if spelled is not None:
            variants.append(spelled)
        for items in variants:
            for backwards in (False, True):
                ordered = items[::-1] if backwards else items
                for collapsed, trie in self._tries.items():
                    if not trie.next:
                        continue
                    stream = _stream(ordered, backwards=backwards, collapsed=collapsed)
                    hit = self._scan(stream, trie, ordered, backwards, eszett)
                    if hit is not None:
                        return hit.text
        return None

    def _scan(
        self,
        stream: _Stream,
        trie: _Node,
        items: Sequence[Word],
        backwards: bool,
        eszett: frozenset[str],
    ) -> _Phrase | None:
        sounds = stream.sounds
        size = len(sounds)
        for start in range(size):
            node = trie.next.get(sounds[start])
            end = start + 1
            while node is not None:
                for phrase in node.ends:
                    if self._counts(stream, start, end, phrase, items, backwards, eszett):
                        return phrase
                if end >= size:
                    break
                node = node.next.get(sounds[end])
                end += 1
        return None

    def _counts(
        self,
        stream: _Stream,
        start: int,
        end: int,
        phrase: _Phrase,
        items: Sequence[Word],
        backwards: bool,
        eszett: frozenset[str] = frozenset(),
    ) -> bool:
        """Whether a phrase found at ``start:end`` of the stream is really there."""
        first_word, last_word = stream.word_of[start], stream.word_of[end - 1]
        aligned = start == stream.first[first_word] and end == stream.last[last_word]
        if first_word == last_word:
            word = items[first_word]
            if not word.has_letter:
                return False
            if not aligned and (len(phrase.key) <= 2 or (backwards and len(phrase.key) <= 3)):
                return False  # two letters inside a longer word are no word at all
            if word.plain in eszett and "ß" not in phrase.text and self._lexicon.known(word.plain):
                return False
            return not self._allowed_word(word, phrase, backwards)
        if phrase.words > 1 and aligned:
            return True
        # A word that lends the match only the number at its edge ("Ninja30. He ...") is a
        # name with a number, heard as "thirty", not letters: no "hoe" in "30 He".
        for index, at_end in ((first_word, not backwards), (last_word, backwards)):
            lent = stream.last[index] - start if index == first_word else end - stream.first[index]
            if 0 < lent <= _edge_digits(items[index].folded, at_end=at_end):
                return False
        touched = items[first_word : last_word + 1]
        return not all(
            self._lexicon.real(word.plain) or self._lexicon.real(word.bare) for word in touched
        )

    def _allowed_word(self, word: Word, phrase: _Phrase, backwards: bool) -> bool:
        candidates = {word.plain}
        if phrase.plain in word.bare:  # "class!" is "class", but "a$$" is not "a"
            candidates.add(word.bare)
        for plain in candidates:
            if plain in self._allowed or plain in self._lexicon.places:
                return True
            if self._lexicon.known(plain) and (backwards or not self._derived(plain, phrase)):
                return True
        return False

    def _derived(self, plain: str, phrase: _Phrase) -> bool:
        """Whether an ordinary word is the phrase with an ending or glued to another word."""
        target = phrase.plain
        at = plain.find(target)
        while at >= 0:
            before, after = plain[:at], plain[at + len(target) :]
            if (phrase.open_end and not before) or (phrase.open_start and not after):
                return True
            if (not before or self._lexicon.real(before, min_len=COMPOUND_MIN)) and (
                after in INFLECTIONS or not after or self._lexicon.real(after, min_len=3)
            ):
                return True
            at = plain.find(target, at + 1)
        return False


def _edge_digits(folded: str, *, at_end: bool) -> int:
    """How many digits a word that also has letters ends (or starts) with: 2 for "ninja30"
    at its end; 0 for a word of letters, and for a number alone (read as leetspeak)."""
    core = "".join(char for char in folded if char.isalnum())
    edge = core[::-1] if at_end else core
    digits = len(edge) - len(edge.lstrip("0123456789"))
    return digits if digits < len(core) else 0
