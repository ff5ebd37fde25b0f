"""The default list, how a streamer extends and reduces it, and the rules of the matcher.

The red-team suite (tests/test_safety_redteam.py) runs the disguises through the pipeline;
these tests pin down the pieces one by one.
"""

from __future__ import annotations

import pytest

from lipcast.config import Secrets, parse_settings
from lipcast.wiring import build_safety
from personas import Persona
from pipeline.conversation.safety import PhraseMatcher, SafetyGuard, SecretGuard, fold
from pipeline.conversation.safety.lexicon import _glin_words, default_phrases
from pipeline.errors import ConfigError
from tests.conversation_support import cohost


@pytest.fixture(scope="module")
def default_guard() -> SafetyGuard:
    return SafetyGuard.build(phrases=[])


def blocked(guard: SafetyGuard, text: str) -> bool:
    return not guard.check_text(text).ok


# -- the default list -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "you stupid fuck",  # en
        "du Hurensohn",  # de
        "quel connard",  # fr
        "eres un gilipollas",  # es
        "f u c k",
        "ꓝꓴꓚꓗ",  # Lisu
        "ΡUΤΑ",  # Greek capitals, before case folding
        "kcuf",
        "sh!tty",
        "$h!t",
        "a$$hole!",
        "motherfuckers",
    ],
)
def test_the_default_list_is_on_without_any_configuration(
    default_guard: SafetyGuard, text: str
) -> None:
    assert blocked(default_guard, text)


def test_everyday_words_of_another_language_leave_the_default_list() -> None:
    """French "con" is Spanish "with", "bitte" is German "please": glin lists them, the
    default list does not, so ordinary sentences in those languages are spoken."""
    assert "con" in _glin_words("fr") and "bitte" in _glin_words("fr")
    defaults = {phrase.lower() for phrase in default_phrases()}
    assert "con" not in defaults and "bitte" not in defaults
    assert "connard" in defaults and "salope" in defaults


def test_a_phrase_of_everyday_words_alone_leaves_the_default_list() -> None:
    assert "girl on" in _glin_words("en")
    assert "girl on" not in default_phrases()
    assert "date rape" in default_phrases()  # "rape" is blocked itself


def test_a_default_list_can_be_chosen_or_switched_off() -> None:
    german_only = SafetyGuard.build(phrases=[], default_lists=["de"])
    assert blocked(german_only, "Hurensohn") and not blocked(german_only, "connard")
    none = SafetyGuard.build(phrases=[], default_lists=[])
    assert len(none.phrases) == 0
    with pytest.raises(ConfigError, match=r"\[safety\] default_lists.*'xx'"):
        SafetyGuard.build(phrases=[], default_lists=["xx"])


def test_bot_toml_names_a_missing_default_list() -> None:
    expected = r"safety.default_lists.*no default list for \['klingon'\]"
    with pytest.raises(ConfigError, match=expected):
        parse_settings({"safety": {"default_lists": ["en", "klingon"]}}, source="bot.toml")


# -- inside words, across words ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "cunts",  # an ending
        "dumbass",  # a compound
        "fuckfuckfuck",  # run together
        "fuck420",  # digits stuck on
        "a shitload of it",
        "k i l l y o u r s e l f",
    ],
)
def test_a_blocked_word_inside_a_longer_one_counts(text: str) -> None:
    guard = SafetyGuard.build(phrases=["kill yourself"])
    assert blocked(guard, text)


@pytest.mark.parametrize(
    "text",
    [
        "The class assistant passed the bass.",
        "I assume so.",
        "Scunthorpe and Penistone are in England.",
        "The title of the analysis.",
        "Look at it!",
        "The pen is mightier.",
        "The therapist helped.",
        "Niger is a country.",
        "Un café con leche, por favor.",
        "Kannst du mir bitte helfen?",
        "El perro negro duerme.",
        "Sussex and Essex.",
    ],
)
def test_ordinary_words_and_places_around_blocked_ones_are_spoken(
    default_guard: SafetyGuard, text: str
) -> None:
    assert not blocked(default_guard, text)


def test_a_streamer_allows_a_word_and_unblocks_an_entry() -> None:
    """glin's own lists hold everyday words ("bosser" is French for "to work") and names
    ("Concha"); a compound such as "cocktail" counts too. The streamer decides."""
    strict = SafetyGuard.build(phrases=[])
    for text in ("Je dois bosser demain.", "Cena con Concha.", "A cocktail, please."):
        assert blocked(strict, text)
    relaxed = SafetyGuard.build(
        phrases=[], unblocked=["bosser", "concha"], allowed_words=["cocktail"]
    )
    for text in ("Je dois bosser demain.", "Cena con Concha.", "A cocktail, please."):
        assert not blocked(relaxed, text)
    assert blocked(relaxed, "cock")  # only the word "cocktail" is allowed


def test_a_german_word_spelled_with_eszett_is_german() -> None:
    """ "aß" (ate) folds to the letters of "ass"; spelled with "ß" it is the German word."""
    guard = SafetyGuard.build(phrases=[])
    assert not blocked(guard, "Er aß einen Apfel.") and not blocked(guard, "ER Aẞ")
    assert blocked(guard, "you ass") and blocked(guard, "a$$")
    assert blocked(guard, "Das ist Scheiße") and blocked(guard, "SCHEISSE")


def test_a_star_makes_every_word_that_starts_with_the_phrase_count() -> None:
    guard = SafetyGuard.build(phrases=["idiot*"], default_lists=[])
    assert blocked(guard, "how idiotic") and blocked(guard, "idiots")
    plain = SafetyGuard.build(phrases=["idiot"], default_lists=[])
    assert not blocked(plain, "how idiotic")  # an ordinary word, not a form of "idiot"
    assert blocked(plain, "idiots")


# -- per persona and per channel --------------------------------------------------------------


def _persona(**safety: object) -> Persona:
    persona = cohost()
    spec = persona.spec.model_copy(update={"safety": persona.spec.safety.model_copy(update=safety)})
    return persona.model_copy(update={"spec": spec})


def test_persona_and_channel_extend_and_reduce_the_list() -> None:
    settings = parse_settings(
        {
            "safety": {
                "blocked_phrases": ["pineapple pizza"],
                "channels": [
                    {
                        "platform": "twitch",
                        "channel": "cozy",
                        "blocked_phrases": ["spoiler"],
                        "unblocked": ["bosser"],
                    }
                ],
            }
        },
        source="bot.toml",
    )
    persona = _persona(blocked_phrases=["my instructions"], allowed_words=["cocktail"])
    guard = build_safety(settings, Secrets(), persona)
    assert blocked(guard, "p.i.n.e.a.p.p.l.e pizza") and blocked(guard, "my instructions")
    assert not blocked(guard, "a cocktail") and blocked(guard, "bosser")
    assert not blocked(guard, "no spoiler")
    cozy = build_safety(settings, Secrets(), persona, platform="twitch", channel="cozy")
    assert blocked(cozy, "no sp0iler") and not blocked(cozy, "bosser")
    assert blocked(cozy, "fuck")  # the rest of the default list still holds
    german = build_safety(settings, Secrets(), _persona(default_lists=["de"]))
    assert blocked(german, "Hurensohn") and not blocked(german, "connard")


# -- folding, secrets and private details -----------------------------------------------------


def test_fold_reads_capitals_of_other_scripts_before_lower_casing() -> None:
    assert fold("ΡΗΟΝΕ") == "phone"  # Greek capitals: Rho, Eta, Omicron, Nu, Epsilon
    assert fold("ꓚꓳꓠꓢ") == "cons"  # Lisu
    assert fold("ᏚᎢᎬᎪᎷ") == "steam"  # Cherokee
    assert fold("\u202emaerts\u202c") == "maerts"  # the override goes, the letters stay
    assert fold("Straße") == "strasse"


def test_matching_is_bounded_on_hostile_input() -> None:
    matcher = PhraseMatcher(["kill yourself"])
    assert matcher.find("$" * 5000 + "k!1l " * 2000 + "\u200b" * 5000 + "!|" * 3000) is None


@pytest.mark.parametrize(
    "text",
    [
        "it is ada dot lovelace at example dot com",
        "moc.elpmaxe@ecalevol.ada",
        "a d a . l o v e l a c e @ e x a m p l e . c o m",
        "4d4.l0v3l4c3@3x4mpl3.c0m",
        "She is called A-d-a L-o-v-e-l-a-c-e.",
        "She lives at one two Marchmont Street.",
    ],
)
def test_private_details_are_not_said_in_any_spoken_form(text: str) -> None:
    guard = SafetyGuard.build(
        phrases=[], private=["ada.lovelace@example.com", "Ada Lovelace", "12 Marchmont Street"]
    )
    verdict = guard.check_text(text)
    assert verdict.reason == "secret" and "lovelace" not in verdict.detail.lower()


@pytest.mark.parametrize(
    "spoken",
    [
        "s k dash l i v e dash four f nine a eight b seven c",
        "sierra kilo live four foxtrot nine alfa eight bravo seven charlie",
        "c7b8a9f4-evil-ks",
        "SK-L1V3-4F9A8B7C",
    ],
)
def test_secrets_are_not_said_in_any_spoken_form(spoken: str) -> None:
    guard = SecretGuard(["sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a"])
    assert guard.leaks(spoken)
    assert "sk-live" not in repr(guard)
    assert not guard.leaks("We go live at four, see you there, friends.")
