"""Which Twitch messages the persona answers: EventSub payloads as Twitch documents them, parsed
by twitchio's own ``create_event_instance``, read by the channel's triggers."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("twitchio")

from bots.twitch.triggers import Decision, Triggers
from lipcast.config import TwitchSettings, TwitchTriggers
from tests.twitch_support import (
    BOT_ID,
    BOT_LOGIN,
    CHANNEL_ID,
    badge,
    chat_message_event,
    cheermote_fragment,
    emote_fragment,
    mention_fragment,
    parse,
    redemption_event,
    text_fragment,
)

CHAT = "channel.chat.message"
REDEEM = "channel.channel_points_custom_reward_redemption.add"


def read(event: dict[str, Any], **rules: Any) -> Decision:
    triggers = Triggers(rules=TwitchTriggers(**rules), bot_id=BOT_ID, bot_login=BOT_LOGIN)
    return triggers.read(parse(CHAT, event))


def test_the_prefix_command_is_the_prompt_without_the_prefix() -> None:
    event = chat_message_event("!ASK   how tall is Everest?")
    decision = read(event)
    assert decision.utterance is not None
    utterance = decision.utterance
    assert utterance.text == "how tall is Everest?" and utterance.trigger == "command"
    assert utterance.message_id == event["message_id"]
    assert utterance.channel == CHANNEL_ID and utterance.channel_name == "streamer"
    assert utterance.user == "4145994" and utterance.user_name == "viewer32"
    assert read(chat_message_event("!asking for a friend")).ignored == "no_trigger"
    assert read(chat_message_event("!ask")).ignored == "empty"
    assert read(chat_message_event("!ask hi"), prefix="").ignored == "no_trigger"


def test_an_at_mention_of_the_bot_is_the_prompt_without_the_mention() -> None:
    event = chat_message_event(fragments=[mention_fragment(), text_fragment(" what game is this?")])
    decision = read(event)
    assert decision.utterance is not None and decision.utterance.trigger == "mention"
    assert decision.utterance.text == "what game is this?"
    other = chat_message_event(
        fragments=[mention_fragment("5", "someone"), text_fragment(" hi there")]
    )
    assert read(other).ignored == "no_trigger"
    assert read(event, mention=False).ignored == "no_trigger"


def test_a_reply_to_the_bots_message_is_a_prompt() -> None:
    event = chat_message_event(
        fragments=[mention_fragment(), text_fragment(" and what about tomorrow?")],
        reply_to=("parent-1", BOT_ID, BOT_LOGIN),
    )
    decision = read(event, mention=False)
    assert decision.utterance is not None and decision.utterance.trigger == "reply"
    assert decision.utterance.text == "and what about tomorrow?"
    to_someone = chat_message_event("hey", reply_to=("parent-2", "5", "someone"))
    assert read(to_someone).ignored == "no_trigger"


def test_read_aloud_mode_takes_every_message() -> None:
    decision = read(chat_message_event("good evening chat"), every_message=True)
    assert decision.utterance is not None and decision.utterance.trigger == "message"
    assert read(chat_message_event("good evening chat")).ignored == "no_trigger"


def test_a_cheer_of_enough_bits_is_a_prompt_without_the_cheermotes() -> None:
    event = chat_message_event(
        fragments=[
            cheermote_fragment(100),
            text_fragment(" sing me a song "),
            cheermote_fragment(50),
        ],
        bits=150,
    )
    decision = read(event, prefix="", min_bits=100)
    assert decision.utterance is not None and decision.utterance.trigger == "cheer"
    assert decision.utterance.text == "sing me a song" and decision.utterance.bits == 150
    assert read(event, prefix="", min_bits=200).ignored == "no_trigger"
    assert read(event, prefix="").ignored == "no_trigger"  # min_bits 0: cheers are off
    bare = chat_message_event(fragments=[cheermote_fragment(500)], bits=500)
    assert read(bare, min_bits=100).ignored == "empty"
    # a cheer below the minimum still counts as bits on a prefix command (priority)
    small = chat_message_event(
        fragments=[text_fragment("!ask hi "), cheermote_fragment(10)], bits=10
    )
    assert (utterance := read(small, min_bits=100).utterance) is not None
    assert utterance.bits == 10 and utterance.trigger == "command"


def test_emote_only_messages_ask_nothing() -> None:
    event = chat_message_event(
        fragments=[emote_fragment("Kappa"), text_fragment(" "), emote_fragment("PogChamp")]
    )
    assert read(event, every_message=True).ignored == "empty"
    mixed = chat_message_event(fragments=[text_fragment("!ask is this "), emote_fragment("Kappa")])
    assert (utterance := read(mixed).utterance) is not None and utterance.text == "is this"


def test_the_bots_own_messages_and_other_channels_shared_chat_are_ignored() -> None:
    own = chat_message_event("!ask me", user_id=BOT_ID, login=BOT_LOGIN)
    assert read(own, every_message=True).ignored == "own"
    shared = chat_message_event("!ask from afar", source=("777", "otherstreamer"))
    assert read(shared).ignored == "shared_chat"
    here = chat_message_event("!ask from here", source=(CHANNEL_ID, "streamer"))
    assert read(here).utterance is not None  # shared chat, but said in this channel


def test_a_redemptions_chat_echo_is_left_to_the_redemption() -> None:
    event = chat_message_event("!ask my reward text", reward_id="92af127c")
    assert read(event, rewards=["Ask the AI"]).ignored == "redemption_text"
    assert read(event).utterance is not None  # no reward triggers: an ordinary message


def test_badges_become_the_viewers_flags() -> None:
    event = chat_message_event(
        "!ask hi",
        badges=[badge("moderator"), badge("vip"), badge("subscriber", "12", "14")],
        message_type="user_intro",
    )
    utterance = read(event).utterance
    assert utterance is not None
    assert utterance.moderator and utterance.vip and utterance.subscriber
    assert utterance.first_time and not utterance.broadcaster
    owner = read(chat_message_event("!ask hi", badges=[badge("broadcaster")])).utterance
    assert owner is not None and owner.broadcaster and owner.moderator
    plain = read(chat_message_event("!ask hi")).utterance
    assert plain is not None and not (plain.moderator or plain.vip or plain.subscriber)


@pytest.mark.parametrize(
    ("text", "name", "argument"),
    [
        ("!skip", "skip", ""),
        ("!clear", "clear", ""),
        ("!pause", "pause", ""),
        ("!resume", "resume", ""),
        ("!persona teacher de", "persona", "teacher de"),
        ("!forget @viewer32", "forget", "@viewer32"),
    ],
)
def test_moderator_commands_become_controls_with_the_senders_flags(
    text: str, name: str, argument: str
) -> None:
    decision = read(chat_message_event(text, badges=[badge("moderator")]))
    assert decision.control is not None and decision.utterance is None
    assert decision.control.name == name and decision.control.argument == argument
    assert decision.control.origin.moderator
    viewer = read(chat_message_event(text)).control
    assert viewer is not None and not viewer.origin.moderator  # the listener refuses it


def test_a_redemption_of_a_trigger_reward_is_its_text() -> None:
    triggers = Triggers(
        rules=TwitchTriggers(rewards=["Ask the AI"]), bot_id=BOT_ID, bot_login=BOT_LOGIN
    )
    decision = triggers.read_redemption(parse(REDEEM, redemption_event("ask the ai", "a riddle")))
    assert decision.utterance is not None
    utterance = decision.utterance
    assert utterance.text == "a riddle" and utterance.trigger == "redemption"
    assert utterance.redemption == "ask the ai" and utterance.message_id is None
    assert utterance.user == "9001" and utterance.user_name == "Cooler_user"
    other = triggers.read_redemption(parse(REDEEM, redemption_event("Hydrate", "water")))
    assert other.ignored == "other_reward"
    blank = triggers.read_redemption(parse(REDEEM, redemption_event("Ask the AI", "   ")))
    assert blank.ignored == "empty"


def test_a_channel_may_have_triggers_of_its_own() -> None:
    settings = TwitchSettings.model_validate(
        {
            "channels": ["Streamer", "other"],
            "triggers": {"prefix": "!ai"},
            "channel": {"Other": {"every_message": True, "prefix": ""}},
        }
    )
    assert settings.channels == ["streamer", "other"]
    assert settings.triggers_for("streamer").prefix == "!ai"
    assert settings.triggers_for("other").every_message
    assert settings.triggers_for("OTHER").prefix == ""


@pytest.mark.parametrize(
    "values",
    [{"channels": ["not a login"]}, {"bot": "bad name!"}, {"triggers": {"prefix": "two words"}}],
)
def test_bad_twitch_settings_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TwitchSettings.model_validate(values)
