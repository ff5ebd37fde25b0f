"""The Twitch adapter on twitchio 3: EventSub chat in, paced replies out.

Start-up logs in with the application's credentials, loads the tokens ``lipcast twitch auth``
stored, looks up the channels of bot.toml and subscribes, over twitchio's EventSub websocket, to
each channel's chat (and to its channel-points redemptions when a reward is a trigger).
twitchio reconnects by itself; a token that is revoked, or expired past refreshing, ends
:meth:`TwitchAdapter.run` with one :class:`~bots.base.AdapterUnavailable` naming the command that
fixes it, and the other adapters keep running.

Messages become utterances through :mod:`bots.twitch.triggers`; replies are split and paced
through :mod:`bots.twitch.pacing`. twitchio's exceptions may quote request URLs that hold the
client secret or a refresh token, so nothing here ever shows one: errors are described by their
HTTP status and Twitch's message, and twitchio's own log records are redacted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bots.base import AdapterUnavailable, ChatAdapter, Readiness
from bots.twitch.auth import (
    AUTOMOD_SCOPE,
    BOT_SCOPES,
    REDEMPTION_MANAGE_SCOPE,
    REDEMPTION_READ_SCOPE,
    StoredToken,
    TokenStore,
    quiet_twitchio_notice,
)
from bots.twitch.pacing import LIMIT, MODERATOR_LIMIT, ChatLine, ChatPacer, split_message
from bots.twitch.triggers import Triggers
from lipcast.config import TwitchSettings
from lipcast.logs import RedactSecrets
from pipeline.clips import Reply
from pipeline.utterance import Admission, Control, Listener, Utterance, ViewerKey

if TYPE_CHECKING:
    import twitchio
    from twitchio.models.eventsub_ import ChannelPointsRedemptionAdd

    from bots.twitch.automod import AutoModCheck

log = logging.getLogger(__name__)

# Refusals a viewer is told about (once per window); the rest are silent.
NOTICES: dict[str, str] = {
    "cooldown": "you asked a moment ago; ask again in a little while",
    "rate_limited": "lots of questions right now; ask again in a minute",
    "busy": "too many questions are waiting; ask again in a minute",
    "paused": "replies are paused for now",
}
FIX_TOKEN = "run `lipcast twitch auth`"


def describe_error(err: BaseException) -> str:
    """An error from twitchio in words that never quote a request URL (which may hold the
    client secret or a refresh token): the HTTP status and Twitch's own message."""
    status = getattr(err, "status", None)
    extra = getattr(err, "extra", None)
    if status is not None:
        message = extra.get("message", "") if isinstance(extra, dict) else ""
        return f"HTTP {status}" + (f": {str(message)[:160]}" if message else "")
    return type(err).__name__


@dataclass(kw_only=True)
class _Channel:
    """A channel the bot chats in."""

    id: str
    login: str
    triggers: Triggers


class TwitchAdapter(ChatAdapter):
    """Twitch chat through EventSub, for the channels of ``[twitch] channels``."""

    platform: ClassVar[str] = "twitch"
    reconnects_itself: ClassVar[bool] = True

    def __init__(
        self,
        *,
        settings: TwitchSettings,
        client_id: str,
        client_secret: str,
        tokens: TokenStore,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._client_id = client_id
        self._client_secret = client_secret
        self.tokens = tokens
        bot = tokens.bot(settings.bot)
        if bot is None:
            who = f"the bot account {settings.bot!r}" if settings.bot else "a bot account"
            raise AdapterUnavailable(f"Twitch: no token stored for {who}; {FIX_TOKEN}")
        self.bot: StoredToken = bot
        self._clock = clock
        self.pacer = ChatPacer(
            self._post,
            backlog=settings.chat_backlog,
            limit_for=self._limit_for,
            clock=clock,
            sleep=sleep,
        )
        self.channels: dict[str, _Channel] = {}
        self.moderated: set[str] = set()  # channel ids where the bot is a moderator
        self._notified: dict[ViewerKey, float] = {}
        self._logins: dict[str, str] = {}  # login -> user id of chatters seen
        self._redemptions: dict[str, ChannelPointsRedemptionAdd] = {}  # utterance id -> it
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._unmanageable: set[str] = set()  # reward ids Twitch will not let lipcast manage
        self._listener: Listener | None = None
        self._client: twitchio.Client | None = None
        self._stopped = asyncio.Event()
        self._failure: str | None = None
        self._granted: dict[str, list[str]] = {}  # user id -> scopes, as Twitch validated them
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def channels_joined(self) -> list[str]:
        return [channel.login for channel in self.channels.values()]

    def describe(self) -> str:
        channels = ", ".join(f"#{name}" for name in self.settings.channels) or "no channels"
        return f"twitch: {channels} as {self.bot.login}"

    # -- running -----------------------------------------------------------------------

    async def run(self, listener: Listener) -> None:
        from twitchio.exceptions import HTTPException

        self._listener = listener
        client = self._make_client()
        self._client = client
        pacer = asyncio.create_task(self.pacer.run(), name="twitch-chat-pacer")
        try:
            try:
                await client.login(load_tokens=True, save_tokens=True)
            except HTTPException as err:
                raise AdapterUnavailable(self._login_failure(err)) from None
            except (TimeoutError, OSError) as err:
                raise AdapterUnavailable(
                    f"Twitch cannot be reached ({type(err).__name__}); check the network"
                ) from None
            self._check_bot_token()
            await self._join(client)
            log.info(
                "twitch: chatting in %s as %s", ", ".join(self.channels_joined), self.bot.login
            )
            await self._stopped.wait()
            if self._failure is not None:
                raise AdapterUnavailable(self._failure)
        finally:
            pacer.cancel()
            await asyncio.gather(pacer, return_exceptions=True)
            if self.pacer.waiting:
                log.warning("twitch: %d chat lines not posted: stopping", self.pacer.waiting)
            with contextlib.suppress(Exception):  # closing never hides why run ended
                await client.close()
            self._client = None

    async def stop(self) -> None:
        self._stopped.set()

    def _fail(self, reason: str) -> None:
        """End :meth:`run` with ``reason`` (reported once, by the caller of run)."""
        if self._failure is None:
            self._failure = reason
            log.info("twitch: stopping: %s", reason)
        self._stopped.set()

    def _make_client(self) -> twitchio.Client:
        import twitchio

        _redact_twitchio_logs([self._client_secret, *self.tokens.values()])
        adapter = self

        class LipcastTwitchClient(twitchio.Client):
            async def load_tokens(self, path: str | None = None, /) -> None:
                await adapter._load_tokens(self)

            async def save_tokens(self, path: str | None = None, /) -> None:
                await adapter._save_tokens(self)

            async def event_message(self, payload: twitchio.ChatMessage) -> None:
                await adapter.on_message(payload)

            async def event_custom_redemption_add(
                self, payload: ChannelPointsRedemptionAdd
            ) -> None:
                await adapter.on_redemption(payload)

            async def event_subscription_revoked(self, payload: Any) -> None:
                reason = getattr(payload, "reason", "revoked")
                adapter._fail(
                    f"Twitch revoked the chat subscription ({reason}): the token was revoked or "
                    f"the account changed; {FIX_TOKEN}"
                )

            async def event_token_refreshed(self, payload: Any) -> None:
                await adapter._save_tokens(self)

            async def event_error(self, payload: Any) -> None:
                log.warning(
                    "twitch: a handler failed (%s); the chat goes on",
                    describe_error(payload.error),
                )

        with quiet_twitchio_notice():
            return LipcastTwitchClient(
                client_id=self._client_id,
                client_secret=self._client_secret,
                bot_id=self.bot.user_id,
                fetch_client_user=False,
            )

    async def _load_tokens(self, client: twitchio.Client) -> None:
        """Add every stored token to ``client`` (twitchio validates, and refreshes an expired
        one); a token that fails is left out and, for the bot, ends the start-up."""
        from twitchio.exceptions import InvalidTokenException

        self._granted.clear()
        for entry in list(self.tokens.tokens.values()):
            try:
                validated = await client.add_token(entry.token, entry.refresh)
            except InvalidTokenException:
                log.warning(
                    "twitch: the token of %s is no longer valid; %s", entry.login, FIX_TOKEN
                )
                continue
            self._granted[entry.user_id] = list(validated.scopes)

    async def _save_tokens(self, client: twitchio.Client) -> None:
        """Keep refreshed tokens: twitchio refreshes them, the store must follow."""
        changed = False
        for user_id, data in client.tokens.items():
            entry = self.tokens.tokens.get(user_id)
            if entry is not None and (entry.token, entry.refresh) != (
                data["token"],
                data["refresh"],
            ):
                entry.token, entry.refresh = data["token"], data["refresh"]
                changed = True
        if changed:
            _redact_twitchio_logs(self.tokens.values())
            try:
                await asyncio.to_thread(self.tokens.save)
            except OSError as err:
                log.warning("twitch: refreshed tokens not saved to %s: %s", self.tokens.path, err)

    def _login_failure(self, err: Exception) -> str:
        status = getattr(err, "status", 0)
        if status in (400, 401, 403):
            return (
                f"Twitch refused the application's credentials ({describe_error(err)}): check "
                "TWITCH_CLIENT_ID (or [twitch] client_id) and TWITCH_CLIENT_SECRET"
            )
        return f"Twitch login failed ({describe_error(err)}); try again later"

    def _check_bot_token(self) -> None:
        granted = self._granted
        if self.bot.user_id not in granted:
            raise AdapterUnavailable(
                f"Twitch: the token of {self.bot.login} was revoked or has expired and could "
                f"not be refreshed; {FIX_TOKEN}"
            )
        missing = [scope for scope in BOT_SCOPES if scope not in granted[self.bot.user_id]]
        if missing:
            raise AdapterUnavailable(
                f"Twitch: the token of {self.bot.login} lacks {', '.join(missing)}; {FIX_TOKEN}"
            )

    async def _join(self, client: twitchio.Client) -> None:
        """Look up the channels and subscribe to their chat (and redemptions when used)."""
        from twitchio import eventsub
        from twitchio.exceptions import HTTPException

        logins = self.settings.channels
        if not logins:
            raise AdapterUnavailable(
                'Twitch: [twitch] channels is empty; add your channel, e.g. channels = ["you"]'
            )
        try:
            users = await client.fetch_users(logins=logins)
        except HTTPException as err:
            raise AdapterUnavailable(
                f"Twitch: channels not found ({describe_error(err)})"
            ) from None
        found = {user.name.lower(): user for user in users if user.name}
        unknown = [login for login in logins if login not in found]
        if unknown:
            log.warning("twitch: no such channel: %s (check [twitch] channels)", ", ".join(unknown))
        if not found:
            raise AdapterUnavailable(f"Twitch: none of the channels exist: {', '.join(logins)}")
        bot_id = self.bot.user_id
        for login, user in found.items():
            triggers = Triggers(
                rules=self.settings.triggers_for(login), bot_id=bot_id, bot_login=self.bot.login
            )
            self.channels[user.id] = _Channel(id=user.id, login=login, triggers=triggers)
            if user.id == bot_id:
                self.moderated.add(user.id)  # the broadcaster's own account
            chat = eventsub.ChatMessageSubscription(broadcaster_user_id=user.id, user_id=bot_id)
            try:
                await client.subscribe_websocket(chat, token_for=bot_id)
            except HTTPException as err:
                raise AdapterUnavailable(
                    f"Twitch refused to deliver #{login}'s chat ({describe_error(err)}); "
                    f"{FIX_TOKEN}"
                ) from None
            if triggers.rules.rewards:
                await self._subscribe_redemptions(client, login, user.id)

    async def _subscribe_redemptions(
        self, client: twitchio.Client, login: str, user_id: str
    ) -> None:
        from twitchio import eventsub
        from twitchio.exceptions import HTTPException

        granted = self._granted.get(user_id)
        scopes = {REDEMPTION_READ_SCOPE, REDEMPTION_MANAGE_SCOPE}
        if granted is None or not scopes & set(granted):
            log.warning(
                "twitch: channel-points rewards in #%s need %s's own authorisation: run "
                "`lipcast twitch auth --broadcaster` and sign in as %s",
                login,
                login,
                login,
            )
            return
        payload = eventsub.ChannelPointsRedeemAddSubscription(broadcaster_user_id=user_id)
        try:
            await client.subscribe_websocket(payload, token_for=user_id)
        except HTTPException as err:
            log.warning("twitch: redemptions in #%s unavailable (%s)", login, describe_error(err))

    # -- events in -----------------------------------------------------------------------

    async def on_message(self, message: twitchio.ChatMessage) -> None:
        """A ``channel.chat.message`` event, as twitchio parsed it."""
        channel = self.channels.get(message.broadcaster.id)
        if channel is None or self._listener is None or self._repeated(message.id):
            return
        chatter = message.chatter
        if chatter.id == self.bot.user_id:
            if chatter.moderator:  # its own message shows the bot's badges in this channel
                self.moderated.add(channel.id)
            return
        if chatter.name:
            self._logins[chatter.name.lower()] = chatter.id
        decision = channel.triggers.read(message)
        if decision.control is not None:
            await self._control(decision.control)
        elif decision.utterance is not None:
            utterance = decision.utterance
            admission = await self._listener.hear(utterance)
            self._admitted(utterance, admission)
        else:
            log.debug("twitch: #%s %s ignored (%s)", channel.login, message.id, decision.ignored)

    async def on_redemption(self, redemption: ChannelPointsRedemptionAdd) -> None:
        """A channel-points redemption (``channel.channel_points_custom_reward_redemption.add``)."""
        channel = self.channels.get(redemption.broadcaster.id)
        if channel is None or self._listener is None or self._repeated(redemption.id):
            return
        decision = channel.triggers.read_redemption(redemption)
        if decision.utterance is None:
            log.debug("twitch: redemption %s ignored (%s)", redemption.id, decision.ignored)
            return
        utterance = decision.utterance
        self._redemptions[utterance.id] = redemption
        while len(self._redemptions) > 1000:  # answers that never came (dropped past deadline)
            del self._redemptions[next(iter(self._redemptions))]
        admission = await self._listener.hear(utterance)
        self._admitted(utterance, admission)

    def _repeated(self, event_id: str) -> bool:
        """Whether the event was handled already (EventSub may deliver one more than once)."""
        if event_id in self._seen:
            return True
        self._seen[event_id] = None
        if len(self._seen) > 2000:
            self._seen.popitem(last=False)
        return False

    async def _control(self, command: Control) -> None:
        assert self._listener is not None
        origin = command.origin
        privileged = origin.moderator or origin.broadcaster
        if command.name == "forget" and command.argument:
            if not privileged:
                return  # a viewer may forget only themselves: "!forget"
            target = command.argument.split()[0].lstrip("@").lower()
            user_id = self._logins.get(target) or await self._user_id(target)
            if user_id is None:
                self._notice(origin, f"no viewer {target} seen here", force=True)
                return
            command = Control(name="forget", origin=origin, argument=user_id)
        admission = await self._listener.control(command)
        if admission.reason == "not_allowed":
            return  # moderator commands from anyone else: ignored without a word
        if admission.detail:  # a moderator is always answered; a viewer once per window
            self._notice(origin, admission.detail, force=privileged)

    async def _user_id(self, login: str) -> str | None:
        from twitchio.exceptions import HTTPException

        if self._client is None:
            return None
        try:
            users = await self._client.fetch_users(logins=[login])
        except HTTPException as err:
            log.warning("twitch: cannot look up %s (%s)", login, describe_error(err))
            return None
        return users[0].id if users else None

    def _admitted(self, utterance: Utterance, admission: Admission) -> None:
        """Tell a refused viewer why (once per window); refund a refused redemption."""
        if admission.accepted:
            return
        log.info(
            "twitch: not answering %s (%s): %s", utterance.viewer, utterance.id, admission.reason
        )
        redemption = self._redemptions.pop(utterance.id, None)
        if redemption is not None:
            self._spawn(self._settle(redemption, fulfil=False), "twitch-refund")
        notice = NOTICES.get(admission.reason)
        if notice is not None:
            self._notice(utterance, notice)

    def _notice(self, utterance: Utterance, text: str, *, force: bool = False) -> None:
        """Post ``@viewer text``: at most once per ``notice_window_s`` for each viewer unless
        ``force`` (a moderator's command is always answered)."""
        now = self._clock()
        viewer = utterance.viewer
        last = self._notified.get(viewer)
        if not force and last is not None and now - last < self.settings.notice_window_s:
            return
        self._notified[viewer] = now
        if len(self._notified) > 10_000:  # forget the oldest viewers
            for key in list(self._notified)[:1000]:
                del self._notified[key]
        line = f"@{utterance.display_name} {text}"
        self.pacer.post(
            ChatLine(
                channel=utterance.channel,
                text=split_message(line)[0],
                reply_to=utterance.message_id,
                notice=True,
            )
        )

    # -- replies out ---------------------------------------------------------------------

    async def deliver(self, reply: Reply) -> None:
        utterance = reply.utterance
        if utterance.platform != self.platform or utterance.channel not in self.channels:
            return
        redemption = self._redemptions.pop(utterance.id, None)
        if redemption is not None:
            self._spawn(self._settle(redemption, fulfil=bool(reply.text)), "twitch-fulfil")
        if not reply.text:
            return
        if self._client is None:
            log.info("twitch: reply %s not posted: not connected", reply.turn_id)
            return
        text = reply.text
        if utterance.message_id is None:  # a redemption: no message to reply to
            text = f"@{utterance.display_name} {text}"
        for part in split_message(text):
            self.pacer.post(
                ChatLine(
                    channel=utterance.channel,
                    text=part,
                    reply_to=utterance.message_id,
                    reply_id=reply.turn_id,
                )
            )

    def _limit_for(self, channel: str) -> int:
        return MODERATOR_LIMIT if channel in self.moderated else LIMIT

    async def _post(self, line: ChatLine) -> None:
        """Send one line through twitchio's Helix client (``POST /helix/chat/messages``)."""
        from twitchio.exceptions import HTTPException, MessageRejectedError

        client = self._client
        if client is None:
            return
        broadcaster = client.create_partialuser(line.channel)
        try:
            await broadcaster.send_message(
                line.text,
                sender=self.bot.user_id,
                token_for=self.bot.user_id,
                reply_to_message_id=line.reply_to,
            )
        except MessageRejectedError as err:
            log.warning(
                "twitch: Twitch dropped a line in %s (%s)", line.channel, err.code or "rejected"
            )
        except HTTPException as err:
            if err.status == 401:
                self._fail(f"Twitch no longer accepts the token of {self.bot.login}; {FIX_TOKEN}")
                return
            log.warning("twitch: a reply was not posted (%s)", describe_error(err))

    async def _settle(self, redemption: ChannelPointsRedemptionAdd, *, fulfil: bool) -> None:
        """Fulfil an answered redemption or refund a refused one, when lipcast manages the
        reward (Twitch lets an application change only the rewards it created)."""
        from twitchio.exceptions import HTTPException

        reward = redemption.reward
        if not self.settings.manage_rewards or reward.id in self._unmanageable:
            return
        broadcaster = redemption.broadcaster.id
        try:
            if fulfil:
                await redemption.fulfill(token_for=broadcaster)
            else:
                await redemption.refund(token_for=broadcaster)
        except HTTPException as err:
            if err.status in (400, 403, 404):
                self._unmanageable.add(reward.id)
                log.warning(
                    "twitch: cannot %s redemptions of %r (%s): Twitch lets lipcast manage only "
                    "rewards made with this application's client id",
                    "fulfil" if fulfil else "refund",
                    reward.title,
                    describe_error(err),
                )
            else:
                log.warning("twitch: redemption not settled (%s)", describe_error(err))

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- AutoMod --------------------------------------------------------------------------

    def automod_check(self, channel_id: str | None = None) -> AutoModCheck | None:
        """The channel's AutoMod as a safety layer (``[twitch] automod_check``), for the
        channel ``channel_id`` or, by default, the first of ``[twitch] channels`` (the show's).
        It checks with the channel owner's token (moderation:read) through this adapter's
        client, so it answers while the adapter runs; None when the check is off."""
        if not self.settings.automod_check:
            return None
        from bots.twitch.automod import AutoModCheck

        def channel() -> str | None:
            if channel_id is not None:
                return channel_id
            first = self.settings.channels[0] if self.settings.channels else None
            return next((c.id for c in self.channels.values() if c.login == first), None)

        return AutoModCheck(
            lambda: self._client, channel, fail_closed=self.settings.automod_fail_closed
        )

    # -- doctor ----------------------------------------------------------------------------

    async def check(self) -> list[Readiness]:
        """Validate the stored tokens with Twitch (read-only) and name missing scopes."""
        from twitchio.authentication import OAuth
        from twitchio.exceptions import HTTPException

        found: list[Readiness] = []
        if not self.settings.channels:
            found.append(Readiness(ok=False, detail='[twitch] channels is empty: add e.g. ["you"]'))
        oauth = OAuth(client_id=self._client_id, client_secret=self._client_secret)
        try:
            for entry in self.tokens.tokens.values():
                try:
                    valid = await oauth.validate_token(entry.token)
                except HTTPException as err:
                    if err.status == 401:
                        found.append(
                            Readiness(
                                ok=entry is not self.bot or bool(entry.refresh),
                                warning=True,
                                detail=f"token of {entry.login} has expired; lipcast run "
                                f"refreshes it (if that fails: {FIX_TOKEN})",
                            )
                        )
                    else:
                        found.append(
                            Readiness(
                                ok=False,
                                detail=f"token of {entry.login} not checked "
                                f"({describe_error(err)})",
                            )
                        )
                    continue
                except (TimeoutError, OSError) as err:
                    found.append(
                        Readiness(ok=False, detail=f"Twitch unreachable ({type(err).__name__})")
                    )
                    break
                found.extend(self._scope_report(entry, valid.scopes, valid.expires_in))
        finally:
            await oauth.close()
        return found

    def _scope_report(
        self, entry: StoredToken, scopes: Iterable[str], expires_in: int
    ) -> list[Readiness]:
        scopes = list(scopes)
        hours = expires_in / 3600
        if entry is self.bot:
            missing = [scope for scope in BOT_SCOPES if scope not in scopes]
            if missing:
                return [
                    Readiness(
                        ok=False,
                        detail=f"bot {entry.login}: token lacks {', '.join(missing)}; {FIX_TOKEN}",
                    )
                ]
        wanted: list[str] = []
        channel = entry.login.lower()
        if channel in self.settings.channels:
            if self.settings.triggers_for(channel).rewards:
                wanted.append(
                    REDEMPTION_MANAGE_SCOPE
                    if self.settings.manage_rewards
                    else REDEMPTION_READ_SCOPE
                )
            if self.settings.automod_check:
                wanted.append(AUTOMOD_SCOPE)
        missing = [scope for scope in wanted if scope not in scopes]
        role = "bot" if entry is self.bot else "broadcaster"
        if missing:
            return [
                Readiness(
                    ok=True,
                    warning=True,
                    detail=f"{role} {entry.login}: token lacks {', '.join(missing)} "
                    f"(`lipcast twitch auth{' --broadcaster' if role != 'bot' else ''}`)",
                )
            ]
        return [
            Readiness(
                ok=True,
                detail=f"{role} {entry.login}: token valid ({hours:.1f} h left), scopes complete",
            )
        ]


def _redact_twitchio_logs(values: Iterable[str]) -> None:
    """Blank secrets in twitchio's own log records (its messages can quote request URLs)."""
    secrets = [value for value in values if value]
    names = ["twitchio"] + [
        name for name in logging.root.manager.loggerDict if name.startswith("twitchio.")
    ]
    for name in names:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _TwitchRedaction)]:
            logger.removeFilter(old)
        logger.addFilter(_TwitchRedaction(secrets))


class _TwitchRedaction(RedactSecrets):
    """:class:`~lipcast.logs.RedactSecrets` on twitchio's loggers (a type of its own, so a new
    set of tokens replaces the old filter)."""
