"""Which Twitch chat messages and redemptions the persona answers, as utterances.

:class:`Triggers` reads a chat message the way twitchio parsed it (fragments, badges, reply,
cheer, shared-chat source) and says what it is: an :class:`~pipeline.utterance.Utterance` to
answer, a moderator :class:`~pipeline.utterance.Control`, or nothing (and why, for the log).

The text the persona gets is the message without emotes, cheermotes and the bot's own @mention,
so an emote-only message or a bare cheer asks nothing. Everything else of the viewer's text
goes to the pipeline as it came: the pipeline bounds and cleans it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lipcast.config import TwitchTriggers
from pipeline.utterance import Control, Trigger, Utterance, parse_control

if TYPE_CHECKING:
    from twitchio import ChatMessage
    from twitchio.models.eventsub_ import ChannelPointsRedemptionAdd

PLATFORM = "twitch"


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What a chat message is to the persona."""

    utterance: Utterance | None = None  # answer this
    control: Control | None = None  # or run this command
    ignored: str = ""  # or why not: "own", "shared_chat", "no_trigger", "empty", ...


def _ignored(reason: str) -> Decision:
    return Decision(ignored=reason)


@dataclass(frozen=True, kw_only=True)
class Triggers:
    """One channel's triggers, for a bot with ``bot_id`` and ``bot_login``."""

    rules: TwitchTriggers
    bot_id: str
    bot_login: str

    def read(self, message: ChatMessage) -> Decision:
        """Decide what ``message`` (a ``channel.chat.message`` event) is."""
        chatter, channel = message.chatter, message.broadcaster
        if chatter.id == self.bot_id:
            return _ignored("own")
        source = message.source_broadcaster
        if source is not None and source.id != channel.id:
            return _ignored("shared_chat")  # said in another channel of a shared chat
        rules = self.rules
        if message.channel_points_id is not None and rules.rewards:
            return _ignored("redemption_text")  # answered from the redemption itself

        text = " ".join(message.text.split())
        if text.startswith("!") and parse_control(self._utterance(message, text)) is not None:
            command = parse_control(self._utterance(message, text, trigger="command"))
            return Decision(control=command)

        bits = message.cheer.bits if message.cheer is not None else 0
        trigger: Trigger | None = None
        prompt = self._prompt(message)
        if rules.min_bits and bits >= rules.min_bits:
            trigger = "cheer"
        elif rules.prefix and _starts_with_word(text, rules.prefix):
            trigger = "command"
            prompt = _after_word(prompt, rules.prefix)
        elif (
            rules.reply
            and message.reply is not None
            and message.reply.parent_user.id == self.bot_id
        ):
            trigger = "reply"
        elif rules.mention and self._mentions_bot(message):
            trigger = "mention"
        elif rules.every_message:
            trigger = "message"
        if trigger is None:
            return _ignored("no_trigger")
        if not prompt:
            return _ignored("empty")  # emotes only, a bare cheer, a bare "!ask"
        return Decision(utterance=self._utterance(message, prompt, trigger=trigger, bits=bits))

    def read_redemption(self, redemption: ChannelPointsRedemptionAdd) -> Decision:
        """Decide what a channel-points redemption is: a prompt when its reward is a trigger."""
        title = redemption.reward.title
        wanted = {name.casefold() for name in self.rules.rewards}
        if title.casefold() not in wanted:
            return _ignored("other_reward")
        text = " ".join(redemption.user_input.split())
        if not text:
            return _ignored("empty")
        user, channel = redemption.user, redemption.broadcaster
        return Decision(
            utterance=Utterance(
                platform=PLATFORM,
                channel=channel.id,
                channel_name=channel.name or "",
                user=user.id,
                user_name=user.display_name or user.name or user.id,
                text=text,
                trigger="redemption",
                redemption=title,
                broadcaster=user.id == channel.id,
            )
        )

    def _answers_bot(self, message: ChatMessage) -> bool:
        return message.reply is not None and message.reply.parent_user.id == self.bot_id

    def _mentions_bot(self, message: ChatMessage) -> bool:
        return any(
            fragment.mention is not None and fragment.mention.id == self.bot_id
            for fragment in message.fragments
        )

    def _prompt(self, message: ChatMessage) -> str:
        """The message's words for the persona: without emotes, cheermotes and the bot's
        @mention (a reply to the bot starts with one)."""
        kept: list[str] = []
        for fragment in message.fragments:
            if fragment.type in ("emote", "cheermote", "gif"):
                continue
            if fragment.mention is not None and fragment.mention.id == self.bot_id:
                continue
            kept.append(fragment.text)
        return " ".join("".join(kept).split())

    def _utterance(
        self, message: ChatMessage, text: str, *, trigger: Trigger = "message", bits: int = 0
    ) -> Utterance:
        chatter, channel = message.chatter, message.broadcaster
        return Utterance(
            platform=PLATFORM,
            channel=channel.id,
            channel_name=channel.name or "",
            user=chatter.id,
            user_name=chatter.display_name or chatter.name or chatter.id,
            text=text,
            message_id=message.id,
            trigger=trigger,
            moderator=chatter.moderator or chatter.lead_moderator,
            broadcaster=chatter.broadcaster,
            subscriber=chatter.subscriber or chatter.founder,
            vip=chatter.vip,
            first_time=message.type == "user_intro",
            bits=bits,
        )


def _starts_with_word(text: str, word: str) -> bool:
    head = text[: len(word)]
    rest = text[len(word) : len(word) + 1]
    return head.casefold() == word.casefold() and (not rest or rest.isspace())


def _after_word(text: str, word: str) -> str:
    """``text`` without its leading ``word`` (the prefix), if it starts with it."""
    if _starts_with_word(text, word):
        return text[len(word) :].strip()
    return text
