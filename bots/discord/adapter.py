"""The Discord adapter: a discord.py client behind the :class:`~bots.base.ChatAdapter` seam.

In: slash commands (:mod:`bots.discord.commands`), @mentions of the bot, replies to its
messages and direct messages (:mod:`bots.discord.messages`), each as an
:class:`~pipeline.utterance.Utterance` for the listener. A refused question gets a reaction
(messages) or a note only its asker sees (slash commands), never a message in the channel.

Out: :meth:`DiscordAdapter.deliver` posts the reply's text as a reply to the question, then the
reply's clips joined into one MP4 that fits the upload limit (:mod:`bots.discord.delivery`); a
typing indicator shows from :meth:`DiscordAdapter.replying` until then. Features such as
voice plug in through ``features`` (:mod:`bots.discord.features`) and get every clip through
:meth:`DiscordAdapter.play`.

discord.py keeps the gateway connection (it reconnects by itself) and Discord's rate limits;
lipcast never works around them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
import discord
from discord import app_commands

from bots.base import AdapterUnavailable, ChatAdapter, Readiness
from bots.discord.commands import PersonaChoice, add_commands
from bots.discord.delivery import ClipFitting, Posted, post_reply
from bots.discord.features import DiscordFeature
from bots.discord.messages import (
    Trigger,
    interaction_utterance,
    message_utterance,
    question_trigger,
)
from bots.discord.voice.messages import MAX_VOICE_MESSAGE_BYTES, is_voice_message
from pipeline.clips import Clip, Reply
from pipeline.errors import InputError, LipcastError
from pipeline.utterance import Admission, Control, ControlName, Listener, Utterance

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DM_UPLOAD_LIMIT = 10 * MIB  # what a bot may attach in a direct message
TYPING_MAX_S = 60.0  # a turn that ends without a reply to post stops typing after this
INTERACTION_TTL_S = 14 * 60.0  # Discord keeps an interaction's follow-up token 15 minutes
OWN_MESSAGES_KEPT = 2000  # the bot's recent message ids, to know replies to them
LOGIN_RETRY_MAX_S = 60.0
TOKEN_VARIABLE = "DISCORD_TOKEN"
INTENT_FIX = (
    "switch on 'Message Content Intent' in the Discord Developer Portal (your application -> "
    "Bot -> Privileged Gateway Intents), or set [discord] replies = false in bot.toml"
)
# A refused message gets one reaction saying why; nothing is written in the channel.
REFUSAL_REACTIONS: dict[str, str] = {
    "cooldown": "\N{HOURGLASS WITH FLOWING SAND}",
    "rate": "\N{HOURGLASS WITH FLOWING SAND}",
    "busy": "\N{HOURGLASS WITH FLOWING SAND}",
    "paused": "\N{DOUBLE VERTICAL BAR}\N{VARIATION SELECTOR-16}",
    "duplicate": "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}",
}
REFUSED_REACTION = "\N{NO ENTRY SIGN}"
UNHEARD_REACTION = "\N{SPEAKER WITH CANCELLATION STROKE}"  # a voice message with no words heard
SILENT_REASONS = frozenset({"no_route", "closed"})  # not this bot's to answer here: say nothing


@dataclass(frozen=True, kw_only=True)
class DiscordOptions:
    """How the adapter behaves; ``lipcast.wiring`` fills it from ``[discord]`` in bot.toml."""

    guilds: tuple[int, ...] = ()  # servers to sync the slash commands to; () syncs globally
    sync_commands: bool = True  # register the slash commands with Discord at start-up
    mentions: bool = True  # answer @mentions of the bot in server channels
    replies: bool = True  # answer replies to the bot's messages (needs message content)
    direct_messages: bool = True  # answer direct messages
    clips: bool = True  # post the lip-synced video after the text
    max_clip_bytes: int = 10 * MIB  # the clip is at most this and the channel's limit
    clip_crf: int = 23  # H.264 quality of the joined clip before it must shrink
    clip_preset: str = "veryfast"
    personas: tuple[PersonaChoice, ...] = ()  # what /persona offers


class LipcastClient(discord.Client):
    """discord.py's client with lipcast's command tree; the adapter sets it up at login."""

    def __init__(self, adapter: DiscordAdapter, listener: Listener, **options: Any) -> None:
        super().__init__(**options)
        self.tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(self)
        self._adapter = adapter
        self._listener = listener

    async def setup_hook(self) -> None:
        await self._adapter._setup(self, self._listener)


class DiscordAdapter(ChatAdapter):
    """Discord text: slash commands, mentions, replies and DMs in; text and a clip out."""

    platform: ClassVar[str] = "discord"
    takes_video: ClassVar[bool] = True
    # Every clip is handed to the features (voice speaks the ones for its channel).
    takes_clips: ClassVar[bool] = True
    reconnects_itself: ClassVar[bool] = True

    def __init__(
        self,
        *,
        token: str,
        options: DiscordOptions | None = None,
        features: Sequence[DiscordFeature] = (),
        transcribe: Callable[[bytes], Awaitable[str]] | None = None,
    ) -> None:
        if not token.strip():
            raise AdapterUnavailable(f"{TOKEN_VARIABLE} is empty: put the bot's token in .env")
        self._token = token.strip()
        self.options = options or DiscordOptions()
        self.features = tuple(features)
        # a voice message's attachment -> its words (the voice extra's speech-to-text)
        self._transcribe = transcribe
        self.client: LipcastClient | None = None
        self._stopped = asyncio.Event()
        self._interactions: dict[str, tuple[discord.Interaction[discord.Client], float]] = {}
        self._typing: dict[str, tuple[asyncio.Event, asyncio.Task[None]]] = {}
        self._own_messages: collections.OrderedDict[int, None] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"DiscordAdapter(guilds={list(self.options.guilds)})"  # never the token

    def describe(self) -> str:
        where = (
            f"slash commands in servers {', '.join(map(str, self.options.guilds))}"
            if self.options.guilds
            else "slash commands in every server"
        )
        return f"discord: {where}; mentions, replies and DMs"

    def intents(self) -> discord.Intents:
        """The gateway intents: the defaults, and message content when replies are answered."""
        intents = discord.Intents.default()
        intents.message_content = self.options.replies
        return intents

    # -- connecting ------------------------------------------------------------------------

    def build_client(self, listener: Listener) -> LipcastClient:
        """The client, with its handlers; :meth:`login` sets up commands and features."""
        client = LipcastClient(
            self,
            listener,
            intents=self.intents(),
            # A reply pings only the viewer it answers: never @everyone or a role an LLM wrote.
            allowed_mentions=discord.AllowedMentions(
                everyone=False, users=False, roles=False, replied_user=True
            ),
        )

        async def on_message(message: discord.Message) -> None:
            await self._on_message(client, listener, message)

        client.event(on_message)
        self.client = client
        return client

    async def login(self, listener: Listener) -> LipcastClient:
        """Build the client and log in (REST only; the gateway is :meth:`run`'s): commands and
        features are set up and synced. A refused token raises :class:`AdapterUnavailable`;
        an unreachable Discord is retried with backoff until :meth:`stop` (which raises
        :class:`_Stopped`)."""
        delay = 2.0
        while True:
            client = self.build_client(listener)
            try:
                await client.login(self._token)
                return client
            except discord.LoginFailure as err:
                await client.close()
                raise AdapterUnavailable(
                    f"Discord refused {TOKEN_VARIABLE}: copy a fresh token from the Developer "
                    "Portal (your application -> Bot -> Reset Token) into .env"
                ) from err
            except (aiohttp.ClientError, OSError, discord.DiscordServerError) as err:
                await client.close()
                log.warning("cannot reach Discord (%s); retrying in %.0f s", _reason(err), delay)
            except BaseException:
                await client.close()
                raise
            if self._stopped.is_set():
                raise _Stopped
            try:
                await asyncio.wait_for(self._stopped.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, LOGIN_RETRY_MAX_S)
                continue
            raise _Stopped

    async def run(self, listener: Listener) -> None:
        try:
            client = await self.login(listener)
        except _Stopped:
            return  # stopped while Discord was unreachable: nothing to close
        try:
            if not self._stopped.is_set():
                await client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired as err:
            raise AdapterUnavailable(
                f"Discord refused the message content intent: {INTENT_FIX}"
            ) from err
        finally:
            await self._close(client)

    async def stop(self) -> None:
        self._stopped.set()
        if self.client is not None:
            await self.client.close()

    async def _close(self, client: LipcastClient) -> None:
        for done, _ in list(self._typing.values()):
            done.set()
        for feature in self.features:
            try:
                await feature.close()
            except Exception:
                log.exception("a Discord feature failed to close")
        await client.close()

    async def _setup(self, client: LipcastClient, listener: Listener) -> None:
        """At login: slash commands, features, then the sync with Discord."""
        tree = client.tree
        add_commands(tree, _SlashCommands(self, listener), self.options.personas)
        for feature in self.features:
            await feature.setup(client, tree, listener)
        if self.options.sync_commands:
            await self._sync(tree)

    async def _sync(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        try:
            if not self.options.guilds:
                synced = await tree.sync()
                log.info(
                    "synced %d slash commands globally (Discord may take an hour)", len(synced)
                )
            for guild_id in self.options.guilds:
                guild = discord.Object(id=guild_id)
                tree.copy_global_to(guild=guild)
                synced = await tree.sync(guild=guild)
                log.info("synced %d slash commands to server %d", len(synced), guild_id)
        except discord.Forbidden as err:
            log.warning(
                "Discord refused the slash commands (%s): add the bot again with the URL "
                "`lipcast discord invite` prints (it has the applications.commands scope)",
                _reason(err),
            )
        except discord.HTTPException as err:
            log.warning("the slash commands were not synced: %s", _reason(err))

    # -- in ----------------------------------------------------------------------------------

    async def _on_message(
        self, client: discord.Client, listener: Listener, message: discord.Message
    ) -> None:
        me = client.user
        if me is None:
            return
        options = self.options
        trigger: Trigger | None = question_trigger(
            message,
            me,
            own_messages=self._own_messages,
            mentions=options.mentions,
            replies=options.replies,
            direct_messages=options.direct_messages,
        )
        if trigger is None:
            return
        spoken: str | None = None
        if self._transcribe is not None and is_voice_message(message):
            spoken = await self._voice_message_text(message)
            if spoken is None:
                return
            trigger = "voice"
        utterance = message_utterance(message, me, trigger, spoken)
        if utterance is None:
            return
        admission = await listener.hear(utterance)
        try:
            if admission.reason == "command" and admission.detail:
                await message.reply(admission.detail, mention_author=False)
            elif not admission.accepted and admission.reason not in SILENT_REASONS:
                reaction = REFUSAL_REACTIONS.get(admission.reason, REFUSED_REACTION)
                await message.add_reaction(reaction)
        except discord.HTTPException as err:
            log.info("could not answer message %s: %s", message.id, _reason(err))

    async def _voice_message_text(self, message: discord.Message) -> str | None:
        """What a voice message says; None (and a reaction) when it cannot be heard."""
        assert self._transcribe is not None
        attachment = next(
            a for a in message.attachments if (a.content_type or "").startswith("audio/")
        )
        try:
            if attachment.size > MAX_VOICE_MESSAGE_BYTES:
                raise InputError(f"a {attachment.size // 1_000_000} MB voice message")
            text = await self._transcribe(await attachment.read())
        except (LipcastError, discord.HTTPException, aiohttp.ClientError, OSError) as err:
            log.warning("voice message %s not transcribed: %s", message.id, err)
            text = ""
        if not text.strip():
            with contextlib.suppress(discord.HTTPException):
                await message.add_reaction(UNHEARD_REACTION)
            return None
        return text

    async def ask(
        self, listener: Listener, interaction: discord.Interaction[discord.Client], question: str
    ) -> None:
        """``/ask``: deferred at once (Discord wants an answer within three seconds); the reply
        follows up on it. A refusal replaces the 'thinking' message with a private note."""
        if not await _defer(interaction, ephemeral=False):
            return
        utterance = interaction_utterance(interaction, question)
        self._keep_interaction(utterance.id, interaction)
        admission = await listener.hear(utterance)
        if admission.accepted:
            return
        self._interactions.pop(utterance.id, None)
        try:
            await interaction.delete_original_response()
            note = admission.detail if admission.reason == "command" else None
            await interaction.followup.send(note or _refusal_note(admission), ephemeral=True)
        except discord.HTTPException as err:
            log.info("could not tell %s why /ask was refused: %s", utterance.user, _reason(err))

    async def command(
        self,
        listener: Listener,
        interaction: discord.Interaction[discord.Client],
        name: ControlName,
        argument: str,
    ) -> None:
        """Every other slash command: deferred privately, run, answered privately."""
        if not await _defer(interaction, ephemeral=True):
            return
        text = f"/{name} {argument}".strip()
        origin = interaction_utterance(interaction, text)
        admission = await listener.control(Control(name=name, origin=origin, argument=argument))
        note = admission.detail if admission.reason == "command" else _refusal_note(admission)
        try:
            await interaction.followup.send(note or "done", ephemeral=True)
        except discord.HTTPException as err:
            log.info("could not answer /%s: %s", name, _reason(err))

    def _keep_interaction(
        self, utterance_id: str, interaction: discord.Interaction[discord.Client]
    ) -> None:
        now = time.monotonic()
        for key, (_, kept) in list(self._interactions.items()):
            if now - kept > INTERACTION_TTL_S:
                del self._interactions[key]
        self._interactions[utterance_id] = (interaction, now)

    # -- out ---------------------------------------------------------------------------------

    async def replying(self, utterance: Utterance) -> None:
        """Show 'typing' in the question's channel until its reply is posted (a slash command
        shows Discord's own 'thinking' instead)."""
        client = self.client
        if client is None or utterance.trigger == "slash" or utterance.id in self._typing:
            return
        done = asyncio.Event()
        task = asyncio.create_task(
            self._type(client, utterance, done), name=f"discord-typing-{utterance.id}"
        )
        self._typing[utterance.id] = (done, task)

    async def _type(
        self, client: discord.Client, utterance: Utterance, done: asyncio.Event
    ) -> None:
        channel = client.get_partial_messageable(int(utterance.channel))
        try:
            async with asyncio.timeout(TYPING_MAX_S), channel.typing():
                await done.wait()
        except (TimeoutError, discord.HTTPException, aiohttp.ClientError) as err:
            log.debug("typing in %s ended: %s", utterance.channel, _reason(err))
        finally:
            self._typing.pop(utterance.id, None)

    def _stop_typing(self, utterance_id: str) -> None:
        typing = self._typing.get(utterance_id)
        if typing is not None:
            typing[0].set()

    async def deliver(self, reply: Reply) -> None:
        """The reply's text as a reply to the question, then its clip (see the module)."""
        utterance = reply.utterance
        try:
            if self.client is None or not reply.text.strip():
                return
            posted = await self._post(self.client, reply)
            log.info(
                "answered %s in %s: %d message(s)%s",
                utterance.display_name,
                utterance.channel_name or utterance.channel,
                posted.messages,
                f", clip {len(posted.clip.media)} bytes" if posted.clip else "",
            )
        except discord.HTTPException as err:
            log.warning(
                "the reply to %s in %s was not posted: %s",
                utterance.display_name,
                utterance.channel_name or utterance.channel,
                _reason(err),
            )
        finally:
            self._stop_typing(utterance.id)

    async def _post(self, client: discord.Client, reply: Reply) -> Posted:
        utterance = reply.utterance
        clips = [clip.media for clip in reply.clips if clip.media] if self.options.clips else []
        kept = self._interactions.pop(utterance.id, None)
        if kept is not None and time.monotonic() - kept[1] < INTERACTION_TTL_S:
            interaction = kept[0]
            fitting = self._fitting(interaction.filesize_limit)

            async def follow_up(content: str, file: discord.File | None) -> discord.Message:
                extra: dict[str, Any] = {"file": file} if file is not None else {}
                sent = await interaction.followup.send(content, wait=True, **extra)
                self._remember(sent.id)
                return sent

            return await post_reply(follow_up, reply.text, clips, fitting)

        guild_id = int(utterance.guild) if utterance.guild else None
        guild = client.get_guild(guild_id) if guild_id is not None else None
        limit = guild.filesize_limit if guild is not None else DM_UPLOAD_LIMIT
        channel = client.get_partial_messageable(int(utterance.channel), guild_id=guild_id)
        reference = (
            channel.get_partial_message(int(utterance.message_id)).to_reference(
                fail_if_not_exists=False
            )
            if utterance.message_id
            else None
        )

        async def send(content: str, file: discord.File | None) -> discord.Message:
            extra: dict[str, Any] = {"file": file} if file is not None else {}
            if reference is not None:
                extra["reference"] = reference
            sent = await channel.send(content or None, **extra)
            self._remember(sent.id)
            return sent

        return await post_reply(send, reply.text, clips, self._fitting(limit))

    def _fitting(self, channel_limit: int) -> ClipFitting:
        return ClipFitting(
            limit_bytes=min(channel_limit, self.options.max_clip_bytes),
            crf=self.options.clip_crf,
            preset=self.options.clip_preset,
        )

    def _remember(self, message_id: int) -> None:
        self._own_messages[message_id] = None
        while len(self._own_messages) > OWN_MESSAGES_KEPT:
            self._own_messages.popitem(last=False)

    async def play(self, clip: Clip) -> None:
        """Hand the clip to each feature (voice); one failing never stops the others."""
        for feature in self.features:
            try:
                await feature.play(clip)
            except Exception:
                log.exception("a Discord feature failed to play clip %d", clip.seq)

    # -- doctor ------------------------------------------------------------------------------

    async def check(self) -> list[Readiness]:
        """Log in over REST only (no gateway, nothing synced or sent) to check the token, and
        read the application's flags for the message content intent."""
        client = discord.Client(intents=self.intents())
        try:
            await client.login(self._token)
        except discord.LoginFailure:
            return [
                Readiness(
                    ok=False,
                    detail=f"Discord refused {TOKEN_VARIABLE}: copy a fresh token from the "
                    "Developer Portal (your application -> Bot -> Reset Token) into .env",
                )
            ]
        except (aiohttp.ClientError, OSError, discord.HTTPException) as err:
            return [Readiness(ok=False, detail=f"Discord cannot be reached: {_reason(err)}")]
        finally:
            await client.close()
        user, application = client.user, client.application
        lines = [
            Readiness(
                ok=True,
                detail=f"token valid: the bot is {user} "
                f"(application {application.id if application else '?'})",
            )
        ]
        flags = application.flags if application is not None else discord.ApplicationFlags()
        content = flags.gateway_message_content or flags.gateway_message_content_limited
        if self.options.replies and not content:
            lines.append(
                Readiness(ok=False, detail=f"the message content intent is off: {INTENT_FIX}")
            )
        else:
            state = "on" if content else "off (not needed: replies = false)"
            lines.append(Readiness(ok=True, detail=f"intents: message content {state}"))
        for feature in self.features:
            lines.extend(await feature.check())
        return lines


class _Stopped(Exception):
    """:meth:`DiscordAdapter.stop` was called while the login was still being retried."""


class _SlashCommands:
    """The slash commands' handler: the adapter, with the listener of this run."""

    def __init__(self, adapter: DiscordAdapter, listener: Listener) -> None:
        self._adapter = adapter
        self._listener = listener

    async def ask(self, interaction: discord.Interaction[discord.Client], question: str) -> None:
        await self._adapter.ask(self._listener, interaction, question)

    async def command(
        self, interaction: discord.Interaction[discord.Client], name: ControlName, argument: str
    ) -> None:
        await self._adapter.command(self._listener, interaction, name, argument)


async def _defer(interaction: discord.Interaction[discord.Client], *, ephemeral: bool) -> bool:
    """Acknowledge a slash command at once ('thinking'); False when Discord no longer knows it
    (it came in more than three seconds ago): then it is dropped, as Discord already told the
    viewer it failed."""
    try:
        await interaction.response.defer(ephemeral=ephemeral, thinking=True)
    except discord.NotFound:
        log.warning(
            "a /%s came too late to answer; dropped",
            interaction.command.name if interaction.command else "command",
        )
        return False
    return True


_REFUSAL_NOTES = {
    "no_route": "The persona does not answer here.",
    "closed": "lipcast is shutting down; try again later.",
}


def _refusal_note(admission: Admission) -> str:
    """A short, private note on why a slash command was not taken."""
    if admission.reason in _REFUSAL_NOTES:
        return _REFUSAL_NOTES[admission.reason]
    reason = admission.reason.replace("_", " ")
    return f"Not answered: {reason}" + (f" ({admission.detail})." if admission.detail else ".")


def _reason(err: BaseException) -> str:
    """An error in one line (discord.py's messages never hold the token)."""
    text = " ".join(str(err).split())[:200]
    return text or type(err).__name__
