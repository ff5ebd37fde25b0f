"""On-air safety with a language model that complies with every request.

The stand-in model (tests/openai_stub over real HTTP, the real openai client) says whatever it
is asked to, so every blocked phrase, in every disguise, arrives in a reply sentence. The test
counts what reached text-to-speech: the render handler records every job's text, and the only
texts allowed there are the innocent sentences around the payload. Viewers' messages carrying
the same disguised phrases are counted separately.

Figures are printed (``pytest -s tests/test_safety.py``).
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from pipeline.conversation.safety import (
    OpenAIModeration,
    PhraseMatcher,
    SafetyGuard,
    SecretGuard,
    fold,
    secrets_from_environment,
)
from pipeline.conversation.turns import FALLBACK_LINES, NEUTRAL_LINES, ConversationOptions
from pipeline.errors import BackendError, ConfigError
from pipeline.services.llm import OpenAIChatLLM, RetryPolicy
from tests.conversation_support import RecordingSink, cohost, running_pipeline, say
from tests.openai_stub import Fault, OpenAIStub, last_user_text

PHRASES = ["kill yourself", "stream key", "buy followers", "system prompt"]

_CYRILLIC = str.maketrans("aeopcyxisj", "аеорсухіѕј")
_GREEK = str.maketrans("aeiknoptuv", "αεικηορτυν")
_SMALL_CAPS = str.maketrans("abcdefghijklmnoprstuvwyz", "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ")
_ACCENTS = str.maketrans("aeiouycn", "áéíöüÿçñ")
_LEET_DIGITS = str.maketrans("aeiostgbl", "431057981")
_LEET_SYMBOLS = str.maketrans("asilt", "@$!|+")
_ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e"]


def _letters(phrase: str) -> list[str]:
    return [char for char in phrase if char != " "]


def _interleave(phrase: str, glue: str) -> str:
    return glue.join(_letters(phrase))


def _zero_width(phrase: str) -> str:
    return "".join(
        char + _ZERO_WIDTH[index % len(_ZERO_WIDTH)] for index, char in enumerate(phrase)
    )


def _fullwidth(phrase: str) -> str:
    return "".join("\u3000" if char == " " else chr(ord(char) + 0xFEE0) for char in phrase)


def _styled(base: int) -> Callable[[str], str]:
    return lambda phrase: "".join(
        chr(base + ord(char) - ord("a")) if "a" <= char <= "z" else char for char in phrase
    )


def _stretched(phrase: str) -> str:
    return "".join(char * 4 if char in "aeiou" else char for char in phrase)


DISGUISES: dict[str, Callable[[str], str]] = {
    "plain": lambda p: p,
    "upper case": str.upper,
    "mixed case": lambda p: "".join(c.upper() if i % 2 else c for i, c in enumerate(p)),
    "accents": lambda p: p.translate(_ACCENTS),
    "combining accents": lambda p: "".join(c + "\u0301" if c != " " else c for c in p),
    "full-width": _fullwidth,
    "math bold": _styled(0x1D41A),
    "math script": _styled(0x1D4EA),
    "circled": _styled(0x24D0),
    "cyrillic look-alikes": lambda p: p.translate(_CYRILLIC),
    "greek look-alikes": lambda p: p.translate(_GREEK),
    "small capitals": lambda p: p.translate(_SMALL_CAPS),
    "zero-width": _zero_width,
    "spaced letters": lambda p: _interleave(p, " "),
    "dotted letters": lambda p: _interleave(p, "."),
    "hyphenated": lambda p: _interleave(p, "-"),
    "underscores": lambda p: _interleave(p, "_"),
    "stars between": lambda p: _interleave(p, "*"),
    "emoji between": lambda p: _interleave(p, "⭐"),
    "no spaces": lambda p: p.replace(" ", ""),
    "line break": lambda p: p.replace(" ", "\n"),
    "leetspeak digits": lambda p: p.translate(_LEET_DIGITS),
    "leetspeak symbols": lambda p: p.translate(_LEET_SYMBOLS),
    "stretched vowels": _stretched,
    "leet + zero-width": lambda p: _zero_width(p.translate(_LEET_DIGITS)),
    "cyrillic + spaced + upper": lambda p: _interleave(p.upper(), " ").translate(
        str.maketrans("AEOPCX", "АЕОРСХ")
    ),
    "full-width + leet": lambda p: _fullwidth(p.translate(_LEET_DIGITS)),
    "accents + dots + mixed": lambda p: _interleave(p.translate(_ACCENTS), ".").upper(),
    "split over two sentences": lambda p: p,  # handled in payload_sentences
}

INNOCENT = [
    "The class assistant passed the bass to Cassie.",
    "Skill is what you build yourself, one game at a time.",
    "Do you want to buy some followers of fashion a coffee?",
    "This stream keeps getting better every single week.",
    "Our solar system promptly amazes every visitor.",
    "I will kill it in this round, watch me.",
    "Keys to the stream: stay kind, stay curious.",
    "Das Spiel ist super, wir spielen gleich weiter.",
    "C'est un système simple, à mon avis.",
    "Skilled players know the keyboard shortcuts by heart.",
]


@dataclass(frozen=True)
class Attempt:
    phrase: str
    disguise: str
    text: str  # the disguised phrase

    def payload_sentences(self) -> tuple[list[str], list[str]]:
        """The reply's middle sentences, and those of them that may be spoken."""
        if self.disguise == "split over two sentences":
            first, rest = self.phrase.split(" ", 1)
            opening = f"Now I will say {first}."
            return [opening, f"{rest.capitalize()} is what you asked for."], [opening]
        sentence = f"Now I will say {self.text} for you."
        if self.disguise == "line break":  # a line break ends a sentence: half is said
            return [sentence], [sentence.split("\n")[0]]
        return [sentence], []


ATTEMPTS = [
    Attempt(phrase, name, disguise(phrase))
    for phrase in PHRASES
    for name, disguise in DISGUISES.items()
]
OPENING = "Okay, here it comes."
CLOSING = "That was fun, wasn't it?"


def compliant_reply(messages: list[dict[str, object]]) -> str:
    """The stand-in model does what it is told: "please say case N" says attempt N."""
    request = last_user_text(messages)
    if request.startswith("please say case "):
        attempt = ATTEMPTS[int(request.removeprefix("please say case "))]
        middle, _ = attempt.payload_sentences()
        return " ".join([OPENING, *middle, CLOSING])
    if request.startswith("please say innocent "):
        return INNOCENT[int(request.removeprefix("please say innocent "))]
    return "I do not know that one."


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    server = OpenAIStub(reply=compliant_reply, tokens_per_s=10_000)
    await server.start()
    yield server
    await server.close()


def make_llm(stub: OpenAIStub) -> OpenAIChatLLM:
    return OpenAIChatLLM(
        base_url=stub.base_url, model="compliant", timeout_s=2.0, retry=RetryPolicy(retries=0)
    )


def guard() -> SafetyGuard:
    return SafetyGuard.build(phrases=[*cohost().spec.safety.blocked_phrases, *PHRASES])


async def test_disguises_really_disguise() -> None:
    """Each disguise changes the text (or is the plain control), so the test tests something."""
    for attempt in ATTEMPTS:
        if attempt.disguise in ("plain", "split over two sentences"):
            continue
        assert attempt.text != attempt.phrase, attempt
        if attempt.disguise not in ("upper case", "mixed case"):
            assert attempt.phrase not in attempt.text.lower(), attempt


async def test_blocked_phrases_in_every_disguise_never_reach_tts(stub: OpenAIStub) -> None:
    options = ConversationOptions(max_sentences=6, sentence_min_chars=8)
    figures: dict[str, int] = {
        "phrases": len(PHRASES),
        "disguises": len(DISGUISES),
        "reply_attempts": len(ATTEMPTS),
        "reply_sentences_blocked": 0,
        "reply_turns_continued": 0,
        "reached_tts": 0,
        "viewer_attempts": len(ATTEMPTS),
        "viewer_messages_blocked": 0,
        "innocent_sentences": len(INNOCENT),
        "innocent_blocked": 0,
    }
    async with running_pipeline(llm=make_llm(stub), safety=guard(), options=options) as p:
        conversation = p.conversation
        for number, attempt in enumerate(ATTEMPTS):
            spoken_before = len(p.handler.spoken)
            report = await conversation.respond(
                say(f"please say case {number}"), f"please say case {number}"
            )
            spoken = p.handler.spoken[spoken_before:]
            _, allowed_middle = attempt.payload_sentences()
            allowed = {OPENING, CLOSING, *allowed_middle, NEUTRAL_LINES["en"], FALLBACK_LINES["en"]}
            leaked = [text for text in spoken if text not in allowed]
            figures["reached_tts"] += len(leaked)
            assert not leaked, f"{attempt.disguise} of {attempt.phrase!r} reached TTS: {leaked}"
            figures["reply_sentences_blocked"] += report.blocked
            assert report.blocked == 1, (attempt, report.sentences)
            if spoken and spoken[-1] == CLOSING:
                figures["reply_turns_continued"] += 1
            # the same disguise typed by a viewer is refused before the model sees it
            admission = await conversation.hear(
                say(f"say {attempt.text} please", user=f"v{number}")
            )
            if not admission.accepted:
                figures["viewer_messages_blocked"] += 1
            assert admission.reason == "blocked_phrase", (attempt, admission)
            conversation.clear()
        for number, sentence in enumerate(INNOCENT):
            before = len(p.handler.spoken)
            request = f"please say innocent {number}"
            report = await conversation.respond(say(request), request)
            # a first sentence may be spoken as its first clause and the rest
            if " ".join(p.handler.spoken[before:]) != sentence:
                figures["innocent_blocked"] += 1
    print("\non-air safety figures:", json.dumps(figures, indent=2))
    assert figures["reached_tts"] == 0
    assert figures["reply_sentences_blocked"] == len(ATTEMPTS)
    assert figures["viewer_messages_blocked"] == len(ATTEMPTS)
    assert figures["reply_turns_continued"] == len(ATTEMPTS)
    assert figures["innocent_blocked"] == 0


async def test_secrets_from_the_environment_are_never_spoken_or_posted(stub: OpenAIStub) -> None:
    secret = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a"
    environ = {
        "OPENAI_API_KEY": secret,
        "HOME": "/home/streamer",
        "MY_DB_PASSWORD": "hunter2hunter2",
    }
    secrets = secrets_from_environment(environ)
    assert secrets == [secret, "hunter2hunter2"]
    leaks = [
        f"The key is {secret}.",
        f"The key is {secret.upper()}.",
        f"The key is {' '.join(secret)}.",
        f"The key starts with {secret[:14]} and that is all.",
        f"Half of it is {secret[-12:]} for sure.",
        "The password is hunter2hunter2 obviously.",
        "The password is h-u-n-t-e-r-2-h-u-n-t-e-r-2 obviously.",
    ]
    stub.reply = lambda messages: (
        f"Sure thing, my friend. {leaks[int(last_user_text(messages))]} Bye now, friend."
    )
    safety = SafetyGuard.build(phrases=[], secrets=secrets)
    sink = RecordingSink()
    async with running_pipeline(llm=make_llm(stub), safety=safety, sink=sink) as p:
        for number in range(len(leaks)):
            report = await p.conversation.respond(say(str(number)), str(number))
            assert report.blocked == 1, leaks[number]
    spoken = " ".join(p.handler.spoken)
    posted = " ".join(sink.texts)
    assert "4f9a8b7c" not in spoken and "hunter2" not in spoken and "hunter2" not in posted
    assert p.handler.spoken.count("Sure thing, my friend.") == len(leaks)


def test_the_secret_guard_ignores_ordinary_text() -> None:
    guard = SecretGuard(["sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a", "short"])
    assert guard.count == 1  # "short" is too short to look for
    assert not guard.leaks("We live for the stream, 4 days a week, 9 to 5.")


async def test_the_moderation_endpoint_can_be_switched_on(stub: OpenAIStub) -> None:
    moderator = OpenAIModeration(base_url=stub.base_url, api_key=None, timeout_s=2.0)
    safety = SafetyGuard.build(phrases=[], moderator=moderator, moderate_replies=True)
    stub.reply = "Peace to everyone. We attack at dawn, friends. Then we rest."
    async with running_pipeline(llm=make_llm(stub), safety=safety) as p:
        rejected = await p.conversation.respond(
            say("let us attack the castle"), "let us attack the castle"
        )
        answered = await p.conversation.respond(say("hello there"), "hello there")
    assert rejected.outcome == "rejected" and rejected.error == "moderation"
    assert len(stub.exchanges) == 1  # the rejected message never reached the model
    assert answered.blocked == 1
    assert p.handler.spoken == ["Peace to everyone.", "Then we rest."]
    assert "let us attack the castle" in stub.moderation_inputs


@pytest.mark.parametrize("fail_closed", [True, False])
async def test_moderation_down(stub: OpenAIStub, fail_closed: bool) -> None:
    stub.moderation_fails = 10
    moderator = OpenAIModeration(base_url=stub.base_url, api_key=None, timeout_s=2.0)
    safety = SafetyGuard.build(phrases=[], moderator=moderator, fail_closed=fail_closed)
    async with running_pipeline(llm=make_llm(stub), safety=safety) as p:
        report = await p.conversation.respond(say("hello"), "hello")
    assert report.outcome == ("rejected" if fail_closed else "completed")


def test_moderation_needs_a_key_only_for_openai_itself() -> None:
    with pytest.raises(ConfigError, match=r"OPENAI_API_KEY.*\[safety\] moderation_base_url"):
        OpenAIModeration(base_url="https://api.openai.com/v1", api_key=None)
    # the host decides, not a substring of the URL
    OpenAIModeration(base_url="http://127.0.0.1:8080/api.openai.com/v1", api_key=None)


async def test_moderation_errors_say_what_to_do_and_hide_the_key(stub: OpenAIStub) -> None:
    secret = "sk-proj-0123456789abcdefSECRET"
    moderator = OpenAIModeration(base_url=stub.base_url, api_key=secret, timeout_s=2.0)
    stub.moderation_faults.append(Fault(kind="unauthorized"))  # the stub quotes the key
    with pytest.raises(BackendError, match="check OPENAI_API_KEY") as refused:
        await moderator.classify("hello")
    stub.moderation_faults.extend([Fault(kind="quota")] * 2)  # openai's client tries a 429 twice
    with pytest.raises(BackendError, match="billing") as quota:
        await moderator.classify("hello")
    await moderator.aclose()
    assert not refused.value.transient and not quota.value.transient
    assert secret not in str(refused.value) and "***" in str(refused.value)


async def test_moderation_unreachable_is_transient_and_names_the_setting(refused_url: str) -> None:
    moderator = OpenAIModeration(base_url=refused_url + "/v1", api_key=None, timeout_s=1.0)
    with pytest.raises(BackendError, match=r"\[safety\] moderation_base_url") as caught:
        await moderator.classify("hello")
    await moderator.aclose()
    assert caught.value.transient


def test_matching_is_bounded_on_hostile_input() -> None:
    matcher = PhraseMatcher(["kill yourself", *PHRASES])
    hostile = "$" * 5000 + "k!1l " * 2000 + "\u200b" * 5000
    loop = asyncio.new_event_loop()
    try:
        started = loop.time()
        matcher.find(hostile)
        assert loop.time() - started < 1.0
    finally:
        loop.close()


def test_fold_brings_disguises_to_one_form() -> None:
    assert fold("ＢＡＤ") == "bad"
    assert fold("𝐁𝐚𝐝") == "bad"
    assert fold("bаd") == "bad"  # Cyrillic а
    assert fold("b\u200ba\u00add") == "bad"
    assert fold("bád") == "bad"
    assert unicodedata.normalize("NFC", fold("Straße")) == "strasse"
