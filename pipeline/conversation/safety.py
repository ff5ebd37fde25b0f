"""On-air safety: what the persona would say is checked before a voice ever says it.

Three checks, each of them cheap enough to run on every sentence before text-to-speech:

* **Blocked phrases** (:class:`PhraseMatcher`), from bot.toml and the persona, matched on the
  viewer's message and on every sentence of the reply. Text and phrases are first brought to
  one form (:func:`fold`): case folded, accents, zero-width and other invisible characters
  removed, full-width and styled letters (𝐛𝐚𝐝, ｂａｄ, ⓑⓐⓓ) made plain, and look-alike letters
  of other scripts (Cyrillic "а", Greek "ο", small capitals) mapped to the Latin ones. The
  match then accepts leetspeak (``b4d``, ``$h!t``) and letters spread out by spaces or
  punctuation (``b a d``, ``b.a.d``, ``b-a-d``), but only at word boundaries, so "class" does
  not match "ass".
* **Secrets** (:class:`SecretGuard`): no run of 10 characters of an API key, token or password
  from the environment is ever spoken or posted, however it is spaced or cased.
* **Moderation** (:class:`OpenAIModeration`, optional): the openai package's moderation
  endpoint classifies the viewer's message (and, if asked, each sentence).

A sentence that fails is never rendered; :class:`SafetyGuard` says why, and the conversation
logs the event for the moderators on the ``lipcast.moderation`` logger.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.errors import BackendError
from pipeline.services.openai_client import OpenAIEndpoint

log = logging.getLogger(__name__)
moderation_log = logging.getLogger("lipcast.moderation")


def _pairs(*lines: str) -> dict[str, str]:
    """``"аa вb"`` -> ``{"а": "a", "в": "b"}``: a character and what it stands for."""
    return {item[0]: item[1:] for line in lines for item in line.split()}


# Letters of other scripts (and styled Latin ones NFKC leaves alone) that look like a Latin
# letter, and the letter they pass for. Lower case only: text is case-folded first.
CONFUSABLES: Mapping[str, str] = {
    **_pairs(
        # Cyrillic
        "аa вb гr дd еe ёe з3 иu йu кk лn мm нh оo пn рp сc тt уy хx цu ч4 шw щw ъb ьb ѕs",
        "іi їi јj ԁd ԛq ԝw үy һh ӏl ѵv ѡw ђh ћh єe ґr",
        # Greek
        "αa βb γy δd εe ζz ηn θo ιi κk λl μu νv ξe οo πn ρp σo ςc τt υu φo χx ψw ωw ϲc ϳj",
        # Armenian
        "օo սu հh ոn ցg զq քp աw",
        # small capitals and other Latin look-alikes
        "ıi ȷj ɑa ɒa ɩi ɪi ʟl ɴn ʀr ʏy ʙb ɢg ʜh ᴀa ᴄc ᴅd ᴇe ꜰf ᴊj ᴋk ᴍm ᴏo ᴘp ꜱs ᴛt ᴜu",
        "ᴠv ᴡw ᴢz ᴦr ɡg ƅb ɓb ƈc ɗd ƒf ɠg ɦh ƙk ɱm ɲn ƥp ʠq ɽr ʂs ƭt ʋv ⱳw ƴy ȥz øo đd",
        "ħh łl ŧt þp ðd æae œoe",
    ),
    # Letters that show nothing (fillers), used to split a word invisibly.
    "\u3164": "",
    "\u115f": "",
    "\u1160": "",
    "\uffa0": "",
    "\u2800": " ",
}

# What each Latin letter may be written as in leetspeak (besides itself).
LEET: Mapping[str, str] = {
    "a": "4@^",
    "b": "86ß",
    "c": "¢©",
    "e": "3€£",
    "g": "69",
    "i": "1!|l",
    "l": "1|i£",
    "o": "0°",
    "s": "5$§",
    "t": "7+",
    "z": "2",
    "x": "×",
}
# A digit or symbol in a phrase stands for the letter it most often replaces.
_LEET_TO_LETTER: Mapping[str, str] = _pairs("4a @a 8b 3e €e 6g 9g 1i !i |l 0o 5s $s 7t +t 2z")
_LEET_SYMBOLS = "".join(sorted({c for chars in LEET.values() for c in chars if not c.isalnum()}))
# Between the letters of a disguised word: anything but a letter, digit or leetspeak symbol.
_GAP = r"(?:[^\w" + re.escape(_LEET_SYMBOLS) + r"]|_)*+"
_WORD_BEFORE = r"(?<![^\W_])"
_WORD_AFTER = r"(?![^\W_])"
_LONG_RUN = re.compile(r"(\w)\1{2,}")
_SECRET_NAME = re.compile(r"(?i)(key|token|secret|passw|pwd|credential)")
_SECRET_WINDOW = 10  # this many characters of a secret in a row are a leak


_ENCLOSED_LETTERS = (
    (0x1F1E6, 0x1F1FF),  # regional indicators 🇦..🇿, used as letters outside a flag pair
    (0x1F130, 0x1F149),  # squared letters
    (0x1F150, 0x1F169),  # negative circled letters
    (0x1F170, 0x1F189),  # negative squared letters 🅰..🆉
)


def _enclosed_letter(char: str) -> str:
    code = ord(char)
    for first, last in _ENCLOSED_LETTERS:
        if first <= code <= last:
            return chr(ord("a") + code - first)
    return char


def fold(text: str) -> str:
    """``text`` in the one form blocked phrases are matched in (see the module docstring).

    Separators, digits and symbols stay, so leetspeak and spacing are left to the matcher.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for char in unicodedata.normalize("NFKD", text):
        category = unicodedata.category(char)
        if category in ("Mn", "Me", "Cf"):
            continue  # accents, combining marks, zero-width and direction characters
        if category == "Cc" and char not in "\n\t\r":
            out.append(" ")
            continue
        char = _enclosed_letter(char)
        out.append(CONFUSABLES.get(char, char))
    return "".join(out)


def _letter_pattern(char: str) -> str:
    letter = _LEET_TO_LETTER.get(char, char)
    options = letter + LEET.get(letter, "")
    if char not in options:
        options += char
    if len(options) == 1:
        return re.escape(options)
    return "[" + "".join(re.escape(option) for option in options) + "]"


@dataclass(frozen=True)
class _CompiledPhrase:
    phrase: str
    pattern: re.Pattern[str]


class PhraseMatcher:
    """Find blocked phrases in text, in all the disguises :func:`fold` and leetspeak allow.

    A phrase matches whole words only; a ``*`` at its end (or start) lets the last (or first)
    word run on: ``"idiot*"`` also blocks "idiots" and "idiotic".
    """

    def __init__(self, phrases: Iterable[str]) -> None:
        self._phrases: list[_CompiledPhrase] = []
        seen: set[str] = set()
        for phrase in phrases:
            compiled = self._compile(phrase)
            if compiled is not None and compiled.pattern.pattern not in seen:
                seen.add(compiled.pattern.pattern)
                self._phrases.append(compiled)

    def __len__(self) -> int:
        return len(self._phrases)

    @staticmethod
    def _compile(phrase: str) -> _CompiledPhrase | None:
        stripped = phrase.strip()
        open_start, open_end = stripped.startswith("*"), stripped.endswith("*")
        letters = [
            char for char in fold(stripped.strip("*")) if char.isalnum() or char in _LEET_SYMBOLS
        ]
        if not letters:
            return None
        body = _GAP.join(_letter_pattern(char) for char in letters)
        pattern = ("" if open_start else _WORD_BEFORE) + body + ("" if open_end else _WORD_AFTER)
        return _CompiledPhrase(phrase=stripped, pattern=re.compile(pattern))

    def find(self, text: str) -> str | None:
        """The first blocked phrase found in ``text``, or None."""
        if not self._phrases or not text:
            return None
        folded = fold(text)
        variants = [folded]
        if _LONG_RUN.search(folded):  # stretched letters: "baaaad"
            variants.append(_LONG_RUN.sub(r"\1", folded))
            variants.append(_LONG_RUN.sub(r"\1\1", folded))
        for compiled in self._phrases:
            for variant in variants:
                if compiled.pattern.search(variant):
                    return compiled.phrase
        return None


def _squash(text: str) -> str:
    return "".join(char for char in fold(text) if char.isalnum())


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
    """Tell whether text gives away any part of a secret (10 characters of it in a row)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._windows: dict[int, set[str]] = {}
        self.count = 0
        for secret in secrets:
            squashed = _squash(secret)
            if len(squashed) < 6:
                continue
            self.count += 1
            size = min(len(squashed), _SECRET_WINDOW)
            windows = self._windows.setdefault(size, set())
            for start in range(len(squashed) - size + 1):
                windows.add(squashed[start : start + size])

    def leaks(self, text: str) -> bool:
        """True when ``text`` contains part of a secret, however cased or spaced."""
        if not self._windows:
            return False
        squashed = _squash(text)
        for size, windows in self._windows.items():
            for start in range(len(squashed) - size + 1):
                if squashed[start : start + size] in windows:
                    return True
        return False


@dataclass(frozen=True, kw_only=True)
class ModerationResult:
    flagged: bool
    categories: tuple[str, ...] = ()


class Moderator(Protocol):
    """A moderation backend: classifies text as acceptable on air or not."""

    async def classify(self, text: str) -> ModerationResult: ...

    async def aclose(self) -> None: ...


class OpenAIModeration:
    """The moderation endpoint of OpenAI (or a compatible server), through the openai package."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str = "omni-moderation-latest",
        timeout_s: float = 5.0,
    ) -> None:
        self._endpoint = OpenAIEndpoint(
            base_url=base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=1,
            label="moderation",
            needed_by="[safety] moderation = true",
            base_url_key="[safety] moderation_base_url",
            timeout_key="[safety] moderation_timeout_s",
        )
        self._model = model

    def __repr__(self) -> str:
        return f"OpenAIModeration(base_url={self._endpoint.base_url!r}, model={self._model!r})"

    async def classify(self, text: str) -> ModerationResult:
        client = await self._endpoint.client()
        import openai  # loaded by client()

        try:
            response = await client.moderations.create(input=text, model=self._model)
        except openai.OpenAIError as err:
            raise self._endpoint.error(
                err,
                not_found=(
                    f"check [safety] moderation_model {self._model!r} and moderation_base_url "
                    "(the server needs a moderations endpoint)"
                ),
                rejected=f"check [safety] moderation_model {self._model!r}",
            ) from err
        flagged = False
        categories: list[str] = []
        for result in response.results:
            if result.flagged:
                flagged = True
                raw = result.categories.model_dump(by_alias=True)
                categories.extend(name for name, value in raw.items() if value)
        return ModerationResult(flagged=flagged, categories=tuple(sorted(set(categories))))

    async def aclose(self) -> None:
        await self._endpoint.aclose()


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The outcome of a safety check: ``ok``, or why not."""

    ok: bool
    reason: str = ""  # "blocked_phrase", "secret", "moderation", "moderation_unavailable"
    detail: str = ""  # the phrase or categories, for the moderators' log (never a secret)


ALLOWED = Verdict(ok=True)


@dataclass(kw_only=True)
class SafetyGuard:
    """Every on-air check in one place, configured once per persona and channel."""

    phrases: PhraseMatcher
    secrets: SecretGuard = field(default_factory=lambda: SecretGuard(()))
    moderator: Moderator | None = None
    moderate_replies: bool = False  # also send each reply sentence to the moderator
    fail_closed: bool = True  # a moderator that cannot be reached blocks the text
    context_chars: int = 200  # how much of the reply so far a sentence is checked with

    @classmethod
    def build(
        cls,
        *,
        phrases: Sequence[str],
        secrets: Iterable[str] = (),
        moderator: Moderator | None = None,
        moderate_replies: bool = False,
        fail_closed: bool = True,
    ) -> SafetyGuard:
        return cls(
            phrases=PhraseMatcher(phrases),
            secrets=SecretGuard(secrets),
            moderator=moderator,
            moderate_replies=moderate_replies,
            fail_closed=fail_closed,
        )

    def check_text(self, text: str) -> Verdict:
        """Blocked phrases and secrets, without the (networked) moderator."""
        if self.secrets.leaks(text):
            return Verdict(ok=False, reason="secret", detail="part of a secret")
        phrase = self.phrases.find(text)
        if phrase is not None:
            return Verdict(ok=False, reason="blocked_phrase", detail=phrase)
        return ALLOWED

    async def check_viewer(self, text: str) -> Verdict:
        """A viewer's message, before it reaches the language model."""
        verdict = self.check_text(text)
        if verdict.ok and self.moderator is not None:
            verdict = await self._moderate(text)
        return verdict

    async def check_reply(self, sentence: str, *, said_before: str = "") -> Verdict:
        """One sentence of the reply, before text-to-speech.

        ``said_before`` is the reply approved so far: a phrase split over two sentences
        ("... b. A d ...") is caught in the sentence that completes it.
        """
        tail = said_before[-self.context_chars :]
        verdict = self.check_text(f"{tail} {sentence}" if tail else sentence)
        if verdict.ok and self.moderator is not None and self.moderate_replies:
            verdict = await self._moderate(sentence)
        return verdict

    async def _moderate(self, text: str) -> Verdict:
        assert self.moderator is not None
        try:
            result = await self.moderator.classify(text)
        except (BackendError, TimeoutError) as err:
            log.warning("moderation unavailable: %s", err)
            if self.fail_closed:
                return Verdict(ok=False, reason="moderation_unavailable", detail=str(err))
            return ALLOWED
        if result.flagged:
            return Verdict(ok=False, reason="moderation", detail=", ".join(result.categories))
        return ALLOWED

    async def aclose(self) -> None:
        if self.moderator is not None:
            await self.moderator.aclose()
