"""The sentence splitter, table-driven: English, German and French, traps included.

Every case is fed three ways (all at once, one character at a time, and in model-like tokens)
and must come out the same each way: where a stream is cut never changes the sentences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.conversation.sentences import SentenceSplitter, speakable
from tests.openai_stub import tokenize


@dataclass(frozen=True)
class Case:
    id: str
    language: str
    text: str
    expected: list[str]
    options: dict[str, Any] = field(default_factory=dict)


CASES = [
    # -- English --------------------------------------------------------------------------
    Case("en-plain", "en", "Hello there, chat. How is everyone doing today?",
         ["Hello there, chat.", "How is everyone doing today?"]),
    Case("en-question-exclaim", "en", "Did you see that play? That was amazing! I loved it.",
         ["Did you see that play?", "That was amazing!", "I loved it."]),
    Case("en-interrobang", "en", "You did what?! Tell me everything right now.",
         ["You did what?!", "Tell me everything right now."]),
    Case("en-dr", "en", "Dr. Smith will join us later. Stay tuned for that.",
         ["Dr. Smith will join us later.", "Stay tuned for that."]),
    Case("en-mr-mrs", "en", "Mr. and Mrs. Jones sent a gift. Thank you both so much.",
         ["Mr. and Mrs. Jones sent a gift.", "Thank you both so much."]),
    Case("en-decimal", "en", "The patch raised it to 3.5 percent. That is a big change.",
         ["The patch raised it to 3.5 percent.", "That is a big change."]),
    Case("en-version", "en", "Version 2.0.1 is live now. Update your game today.",
         ["Version 2.0.1 is live now.", "Update your game today."]),
    Case("en-eg-ie", "en", "Try a support role, e.g. a healer. It is fun, i.e. relaxing.",
         ["Try a support role, e.g. a healer.", "It is fun, i.e. relaxing."]),
    Case("en-etc-end", "en", "We have swords, shields, etc. Then there are the potions.",
         ["We have swords, shields, etc.", "Then there are the potions."]),
    Case("en-etc-mid", "en", "Swords, shields, etc. are all in the shop today.",
         ["Swords, shields, etc. are all in the shop today."]),
    Case("en-ellipsis-capital", "en", "Well... I did not expect that. Who saw it coming?",
         ["Well... I did not expect that.", "Who saw it coming?"]),
    Case("en-ellipsis-lower", "en", "I was thinking... maybe we try again later tonight.",
         ["I was thinking... maybe we try again later tonight."]),
    Case("en-ellipsis-unicode", "en", "Hmm, let me think about that one… Yes, I have it now.",
         ["Hmm, let me think about that one…", "Yes, I have it now."]),
    Case("en-url", "en", "Check https://example.com/docs/v1.2?page=3. It has the details.",
         ["Check example.com.", "It has the details."]),
    Case("en-domain", "en", "The site example.org lists every boss. Go take a look.",
         ["The site example.org lists every boss.", "Go take a look."]),
    Case("en-email", "en", "Write to team@example.com for help. We answer quickly.",
         ["Write to team@example.com for help.", "We answer quickly."]),
    Case("en-emoji-end", "en", "That was a great run! 🎉 See you next time, friends.",
         ["That was a great run!", "See you next time, friends."]),
    Case("en-emoji-as-stop", "en", "What a clutch play by the team 🔥 Next round starts soon.",
         ["What a clutch play by the team", "Next round starts soon."]),
    Case("en-emoji-only", "en", "Love it so much, chat. 😀😀 👍",
         ["Love it so much, chat."]),
    Case("en-min-length-merge", "en", "Hi! I am Nova, your co-host for today.",
         ["Hi! I am Nova, your co-host for today."]),
    Case("en-initials", "en", "J. R. R. Tolkien wrote that book. It is a classic.",
         ["J. R. R. Tolkien wrote that book.", "It is a classic."]),
    Case("en-quote-closer", "en", 'She said "we won." Then everybody cheered loudly.',
         ['She said "we won."', "Then everybody cheered loudly."]),
    Case("en-paren-closer", "en", "It is the best map (by far.) Everyone agrees with me.",
         ["It is the best map (by far.)", "Everyone agrees with me."]),
    Case("en-number-ends", "en", "I counted all the way to 10. Then I stopped counting.",
         ["I counted all the way to 10.", "Then I stopped counting."]),
    Case("en-no-digit", "en", "Track No. 5 is my favourite. I said no. Then I left.",
         ["Track No. 5 is my favourite.", "I said no. Then I left."]),
    Case("en-markdown", "en", "**Great question!** The answer is `forty-two`, of course.",
         ["Great question! The answer is forty-two, of course."]),
    Case("en-list", "en", "Here are my tips:\n1. Stay calm under pressure\n2. Watch the minimap",
         ["Here are my tips:", "Stay calm under pressure", "Watch the minimap"]),
    Case("en-newline", "en", "First line of the answer\nSecond line of the answer",
         ["First line of the answer", "Second line of the answer"]),
    Case("en-soft-split", "en",
         "This reply keeps going and going, with a clause here, another clause there, and "
         "still more words after that, until it finally stops.",
         ["This reply keeps going and going, with a clause here, another clause there,",
          "and still more words after that, until it finally stops."],
         {"soft_max_chars": 80, "hard_max_chars": 140}),
    Case("en-hard-split", "en",
         "Thisisonelongwordthatneverends and then a few more plain words without any pause "
         "at all.",
         ["Thisisonelongwordthatneverends and then a few more plain words",
          "without any pause at all."],
         {"soft_max_chars": 50, "hard_max_chars": 70}),
    Case("en-thousands", "en", "We reached 1,000 followers today. Thank you all so much!",
         ["We reached 1,000 followers today.", "Thank you all so much!"]),
    Case("en-time", "en", "The stream starts at 8 p.m. sharp. Set your alarms now.",
         ["The stream starts at 8 p.m. sharp.", "Set your alarms now."]),
    Case("en-unfinished", "en", "This last sentence has no full stop",
         ["This last sentence has no full stop"]),
    # -- German ---------------------------------------------------------------------------
    Case("de-plain", "de", "Hallo zusammen! Wie geht es euch heute?",
         ["Hallo zusammen!", "Wie geht es euch heute?"]),
    Case("de-zb", "de", "Nimm z.B. einen Heiler. Das macht das Spiel leichter.",
         ["Nimm z.B. einen Heiler.", "Das macht das Spiel leichter."]),
    Case("de-zb-capital", "de", "Es gibt viele Tiere, z.B. Katzen und Hunde. Ich mag beide.",
         ["Es gibt viele Tiere, z.B. Katzen und Hunde.", "Ich mag beide."]),
    Case("de-ordinal-month", "de", "Am 3. Oktober ist ein Feiertag. Dann streamen wir nicht.",
         ["Am 3. Oktober ist ein Feiertag.", "Dann streamen wir nicht."]),
    Case("de-ordinal-rank", "de", "Wir haben den 2. Platz gemacht. Das ist super!",
         ["Wir haben den 2. Platz gemacht.", "Das ist super!"]),
    Case("de-decimal-comma", "de", "Das kostet 3,50 Euro im Laden. Ziemlich günstig, oder?",
         ["Das kostet 3,50 Euro im Laden.", "Ziemlich günstig, oder?"]),
    Case("de-usw-end", "de", "Wir brauchen Holz, Steine usw. Danach bauen wir das Haus.",
         ["Wir brauchen Holz, Steine usw.", "Danach bauen wir das Haus."]),
    Case("de-bzw", "de", "Das gilt für Anfänger bzw. Fortgeschrittene. Alle sind willkommen.",
         ["Das gilt für Anfänger bzw. Fortgeschrittene.", "Alle sind willkommen."]),
    Case("de-dh", "de", "Der Boss ist stark, d.h. wir brauchen mehr Leute. Wer hilft mit?",
         ["Der Boss ist stark, d.h. wir brauchen mehr Leute.", "Wer hilft mit?"]),
    Case("de-nr", "de", "Das ist Nr. 7 auf meiner Liste. Sie ist ziemlich lang.",
         ["Das ist Nr. 7 auf meiner Liste.", "Sie ist ziemlich lang."]),
    Case("de-dr-prof", "de", "Prof. Dr. Müller erklärt das gleich. Hört gut zu!",
         ["Prof. Dr. Müller erklärt das gleich.", "Hört gut zu!"]),
    Case("de-quotes", "de", "Er sagte: „Das war knapp.“ Dann lachten alle im Chat.",
         ["Er sagte: „Das war knapp.“", "Dann lachten alle im Chat."]),
    Case("de-ellipsis", "de", "Tja… das hätte ich nicht gedacht. Weiter geht's!",
         ["Tja… das hätte ich nicht gedacht.", "Weiter geht's!"]),
    Case("de-ca", "de", "Das dauert ca. 5 Minuten. Holt euch schnell einen Kaffee.",
         ["Das dauert ca. 5 Minuten.", "Holt euch schnell einen Kaffee."]),
    Case("de-year-ends", "de", "Das Spiel erschien im Jahr 2020. Danach kam ein Update.",
         ["Das Spiel erschien im Jahr 2020.", "Danach kam ein Update."]),
    # -- French ---------------------------------------------------------------------------
    Case("fr-plain", "fr", "Bonjour tout le monde. Comment allez-vous aujourd'hui ?",
         ["Bonjour tout le monde.", "Comment allez-vous aujourd'hui ?"]),
    Case("fr-space-before-bang", "fr", "C'est incroyable ! On recommence tout de suite ?",
         ["C'est incroyable !", "On recommence tout de suite ?"]),
    Case("fr-nbsp", "fr", "Vraiment\u202f? Je n'y crois pas du tout\u202f!",
         ["Vraiment ? Je n'y crois pas du tout !"]),
    Case("fr-monsieur", "fr", "M. Dupont arrive bientôt sur le stream. Soyez gentils avec lui.",
         ["M. Dupont arrive bientôt sur le stream.", "Soyez gentils avec lui."]),
    Case("fr-mme", "fr", "Mme Martin a gagné la partie. Bravo à elle !",
         ["Mme Martin a gagné la partie.", "Bravo à elle !"]),
    Case("fr-guillemets", "fr", "Il a dit « c'est fini. » Puis il est parti en riant.",
         ["Il a dit « c'est fini. »", "Puis il est parti en riant."]),
    Case("fr-etc", "fr", "Des épées, des boucliers, etc. Tout est en vente ce soir.",
         ["Des épées, des boucliers, etc.", "Tout est en vente ce soir."]),
    Case("fr-decimal", "fr", "La mise à jour pèse 2,5 Go en tout. Téléchargez-la vite.",
         ["La mise à jour pèse 2,5 Go en tout.", "Téléchargez-la vite."]),
    Case("fr-ellipsis", "fr", "Bon... on verra bien demain soir. À plus tard, le chat !",
         ["Bon... on verra bien demain soir.", "À plus tard, le chat !"]),
    Case("fr-accented-capital", "fr", "Le boss est tombé. À nous la victoire maintenant !",
         ["Le boss est tombé.", "À nous la victoire maintenant !"]),
]  # fmt: skip


def split(case: Case, pieces: list[str]) -> list[str]:
    options = {"min_chars": 12, "soft_max_chars": 160, "hard_max_chars": 260, **case.options}
    splitter = SentenceSplitter(language=case.language, **options)
    out: list[str] = []
    for piece in pieces:
        out.extend(sentence.text for sentence in splitter.feed(piece))
    out.extend(sentence.text for sentence in splitter.flush())
    return out


def test_the_table_is_big_enough() -> None:
    languages = {case.language for case in CASES}
    assert len(CASES) >= 40
    assert languages == {"en", "de", "fr"}
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_split(case: Case) -> None:
    assert split(case, [case.text]) == case.expected
    assert split(case, list(case.text)) == case.expected, "fed one character at a time"
    assert split(case, tokenize(case.text)) == case.expected, "fed in model-like tokens"


def test_a_sentence_is_released_with_the_token_after_it() -> None:
    splitter = SentenceSplitter(min_chars=5)
    assert splitter.feed("That was close") == []
    assert splitter.feed("!") == []  # "!" might be followed by a closing quote
    released = splitter.feed(" Next")
    assert [s.text for s in released] == ["That was close!"]
    assert released[0].end == len("That was close!")
    assert splitter.pending == "Next"


def test_sentence_end_offsets_point_into_the_stream() -> None:
    splitter = SentenceSplitter(min_chars=5)
    text = "  First one here.   Second one here. Third"
    sentences = splitter.feed(text) + splitter.flush()
    for sentence in sentences:
        assert text[: sentence.end].rstrip().endswith(sentence.raw)


def test_speakable_cleans_what_a_voice_should_not_read() -> None:
    assert speakable("**Bold** and `code` 😀 [docs](https://x.io/a)") == "Bold and code docs"
    assert speakable("Visit https://www.example.com/path?q=1 now") == "Visit example.com now"
    assert speakable("Hello\x00\u200b world") == "Hello world"
    assert speakable("😀 🎉 ...") == ""


def test_the_first_sentence_is_cut_sooner() -> None:
    text = (
        "Hey Ada, welcome back to the stream, it is great to see you in chat again tonight. "
        "We are about to start the final boss, so grab a snack and settle in right now."
    )
    for pieces in ([text], tokenize(text)):
        splitter = SentenceSplitter(min_chars=12, soft_max_chars=160, first_soft_max_chars=60)
        out = [s.text for piece in pieces for s in splitter.feed(piece)]
        out += [s.text for s in splitter.flush()]
        assert out == [
            "Hey Ada, welcome back to the stream,",
            "it is great to see you in chat again tonight.",
            "We are about to start the final boss, so grab a snack and settle in right now.",
        ]


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError):
        SentenceSplitter(min_chars=100, soft_max_chars=50)


def test_speakable_removes_terminal_escapes_whole() -> None:
    assert speakable("Sure\x1b[31m, here\x1b[0m it is.") == "Sure, here it is."
    assert speakable("\x1b]0;title\x07Hi \u202etxet\u202c there") == "Hi txet there"


def test_a_models_escape_sequences_are_not_spoken() -> None:
    splitter = SentenceSplitter(language="en", min_chars=1)
    pieces = ["\x1b[1", ";31mAlert", "\x1b[0m! All good", " here."]
    sentences = [s for piece in pieces for s in splitter.feed(piece)] + splitter.flush()
    assert [s.text for s in sentences] == ["Alert!", "All good here."]


def test_say_text_loses_its_escapes_whole() -> None:
    from pipeline.conversation.text import check_speakable

    assert check_speakable("\x1b[31mHello\x1b[0m chat", max_chars=100) == "Hello chat"


def test_the_first_clause_is_released_with_the_token_after_its_comma() -> None:
    # It used to wait until the text passed first_soft_max_chars (seven tokens, 0.23 s at 30
    # tokens a second) before cutting at the comma that had long arrived.
    text = "Hey Ada, welcome back to the stream, it is great to see you in chat again tonight."
    tokens = tokenize(text)
    splitter = SentenceSplitter(min_chars=12, soft_max_chars=160, first_soft_max_chars=60)
    received = ""
    for index, token in enumerate(tokens):
        received += token
        released = splitter.feed(token)
        if released:
            assert [s.text for s in released] == ["Hey Ada, welcome back to the stream,"]
            assert received[: released[0].end].endswith("stream,")
            assert "".join(tokens[:index]).endswith("stream,"), "released one token later"
            break
    else:
        pytest.fail("the first clause was not released while the text streamed")
    # later sentences are not cut at their commas
    rest = [s.text for token in tokens[index + 1 :] for s in splitter.feed(token)]
    rest += [s.text for s in splitter.feed(" Then, we play.") + splitter.flush()]
    assert rest == ["it is great to see you in chat again tonight.", "Then, we play."]
