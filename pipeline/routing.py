"""Routes: which persona, language and stage answer a message, by where it comes from.

The :class:`Router` is the :class:`~pipeline.utterance.Listener` every platform adapter talks
to. For each message it finds the first :class:`Route` that matches the message's platform,
channel, guild and whether it is a direct message, and hands the message to that route's
conversation:

* the ``stream`` stage is the live show: one :class:`~pipeline.conversation.turns.Conversation`
  for every stream route, one reply at a time in priority order, shown in the overlay;
* a ``personal`` stage is a conversation of its own per channel (``per = "channel"``) or per
  viewer (``per = "viewer"``), created on first use; many run at once, each with its own
  order, persona and task, all sharing the render workers. The least recently used idle ones
  are closed when there are too many.

Messages no route matches are ignored (logged at debug level). Commands (``!skip``,
``!persona NAME``, ...) go to the conversation of the place they were typed in; ``persona``
switches that place's persona (for a stream route, the show's) and is the router's own.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from personas import Persona
from pipeline.conversation.safety import SafetyGuard
from pipeline.conversation.turns import Conversation
from pipeline.errors import LipcastError
from pipeline.utterance import Admission, Control, Utterance, may_control, parse_control

log = logging.getLogger(__name__)

Stage = Literal["stream", "personal"]

STREAM_KEY = "stream"


@dataclass(frozen=True, kw_only=True)
class Route:
    """Where messages from one place go (bot.toml ``[[routes]]``)."""

    platform: str
    channel: str = "*"  # a channel id or name; "*" for any
    guild: str | None = None
    direct: bool | None = None  # True: direct messages only; False: channels only
    voice: bool | None = None  # True: speech only; False: text only
    persona: str = "cohost"  # a persona name or folder
    language: str | None = None
    stage: Stage = "stream"
    per: Literal["channel", "viewer"] = "channel"

    def matches(self, utterance: Utterance) -> bool:
        """Whether a message from ``utterance``'s place takes this route."""
        if utterance.platform != self.platform:
            return False
        if self.direct is not None and utterance.direct != self.direct:
            return False
        if self.voice is not None and (utterance.trigger == "voice") != self.voice:
            return False
        if self.guild is not None and utterance.guild != self.guild:
            return False
        if self.channel == "*":
            return True
        wanted = self.channel.lstrip("#").casefold()
        names = (utterance.channel, utterance.channel_name.lstrip("#"))
        return any(name and name.casefold() == wanted for name in names)

    def describe(self) -> str:
        where = [self.platform]
        if self.guild:
            where.append(f"guild {self.guild}")
        if self.voice is True:
            where.append("voice")
        if self.direct is True:
            where.append("direct messages")
        elif self.channel != "*":
            where.append(f"channel {self.channel}")
        elif self.direct is False:
            where.append("channels")
        stage = self.stage if self.stage == "stream" else f"personal per {self.per}"
        language = f" ({self.language})" if self.language else ""
        return f"{' '.join(where)} -> {self.persona}{language}, {stage}"


PersonaLoader = Callable[[str, str | None], Persona]  # (name or folder, language) -> persona
# (persona, stage, the place: a message from where the conversation answers) -> conversation
ConversationFactory = Callable[[Persona, Stage, Utterance], Conversation]
# (persona, the place) -> its guard: the persona's blocked phrases, the place's, the rest
SafetyFactory = Callable[[Persona, Utterance], SafetyGuard]


@dataclass(kw_only=True)
class _Place:
    """A running conversation and what it answers."""

    conversation: Conversation
    task: asyncio.Task[None]
    stage: Stage


class Router:
    """Routes messages and commands to conversations; the adapters' :class:`Listener`."""

    def __init__(
        self,
        *,
        routes: Sequence[Route],
        load_persona: PersonaLoader,
        make_conversation: ConversationFactory,
        make_safety: SafetyFactory,
        max_personal: int = 200,
    ) -> None:
        if not routes:
            raise LipcastError("no routes: every message would be ignored")
        self.routes = list(routes)
        self._load_persona = load_persona
        self._make_conversation = make_conversation
        self._make_safety = make_safety
        self._max_personal = max_personal
        self._places: collections.OrderedDict[str, _Place] = collections.OrderedDict()
        self._personas: dict[str, tuple[str, str | None]] = {}  # key -> switched persona
        self._names: collections.OrderedDict[tuple[str, str, str], str] = (
            collections.OrderedDict()
        )  # (platform, channel, lower-case name) -> user id, for "!forget @name"
        self._retired: list[SafetyGuard] = []  # guards of switched-away personas
        self._closed = False

    # -- the adapters' side -----------------------------------------------------------------

    async def hear(self, utterance: Utterance) -> Admission:
        if self._closed:
            return Admission(accepted=False, reason="closed")
        command = parse_control(utterance)
        if command is not None:
            return await self.control(command)
        found = self.route_for(utterance)
        if found is None:
            log.debug("no route for %s (%s): ignored", utterance.viewer, utterance.id)
            return Admission(accepted=False, reason="no_route")
        index, route = found
        self._remember_name(utterance)
        place = await self._place(index, route, utterance)
        return await place.conversation.hear(utterance)

    async def control(self, command: Control) -> Admission:
        if self._closed:
            return Admission(accepted=False, reason="closed")
        origin = command.origin
        found = self.route_for(origin)
        if found is None:
            return Admission(accepted=False, reason="no_route")
        index, route = found
        if route.stage == "personal" and route.per == "viewer":
            # The viewer's own conversation (a DM, a lesson): theirs to skip, switch, pause.
            command = dataclasses.replace(command, owner=True)
        if not may_control(command):
            log.info("%s may not %s: not a moderator; ignored", origin.viewer, command.name)
            return Admission(accepted=False, reason="not_allowed", detail="for moderators only")
        key = self.key_for(index, route, origin)
        if command.name == "persona":
            return await self._switch_persona(key, index, route, origin, command.argument)
        if command.name == "forget" and command.argument:
            command = self._forget_someone(command)
            if command.origin is origin:
                return Admission(
                    accepted=False, reason="command", detail="only moderators forget others"
                )
        place = await self._place(index, route, origin)
        return await place.conversation.control(command)

    # -- routes and places ----------------------------------------------------------------

    def route_for(self, utterance: Utterance) -> tuple[int, Route] | None:
        """The first route ``utterance`` takes (with its index), or None."""
        for index, route in enumerate(self.routes):
            if route.matches(utterance):
                return index, route
        return None

    @staticmethod
    def key_for(index: int, route: Route, utterance: Utterance) -> str:
        """Which conversation a message of ``route`` belongs to."""
        if route.stage == "stream":
            return STREAM_KEY
        where = f"{index}:{utterance.platform}:{utterance.guild or ''}:{utterance.channel}"
        return f"{where}:{utterance.user}" if route.per == "viewer" else where

    @property
    def stream(self) -> Conversation | None:
        """The live show's conversation, once a stream route was used (or :meth:`start`)."""
        place = self._places.get(STREAM_KEY)
        return place.conversation if place else None

    @property
    def stream_task(self) -> asyncio.Task[None] | None:
        """The task answering the live show, once open."""
        place = self._places.get(STREAM_KEY)
        return place.task if place else None

    @property
    def conversations(self) -> list[Conversation]:
        return [place.conversation for place in self._places.values()]

    async def start(self) -> Conversation | None:
        """Open the stream stage now (when a route has one), so its persona is loaded and
        checked at start-up; returns it."""
        for index, route in enumerate(self.routes):
            if route.stage == "stream":
                probe = Utterance(
                    platform=route.platform, channel=route.channel, user="-", text="."
                )
                return (await self._place(index, route, probe)).conversation
        return None

    async def _place(self, index: int, route: Route, utterance: Utterance) -> _Place:
        key = self.key_for(index, route, utterance)
        place = self._places.get(key)
        if place is not None and not place.task.done():
            self._places.move_to_end(key)
            return place
        if place is not None:  # its task ended on its own: say why, then open it anew
            log.error("conversation %s stopped (%s); reopened", key, _why_ended(place.task))
        name, language = self._personas.get(key, (route.persona, route.language))
        persona = await asyncio.to_thread(self._load_persona, name, language)
        conversation = self._make_conversation(persona, route.stage, utterance)
        task = asyncio.create_task(conversation.run(), name=f"conversation-{key}")
        place = _Place(conversation=conversation, task=task, stage=route.stage)
        self._places[key] = place
        log.debug("conversation %s opened: %s", key, conversation.describe())
        await self._reap()
        return place

    async def _reap(self) -> None:
        """Close the least recently used idle personal conversations beyond the limit."""
        personal = [k for k, p in self._places.items() if p.stage == "personal"]
        excess = len(personal) - self._max_personal
        for key in personal:
            if excess <= 0:
                return
            place = self._places[key]
            if place.conversation.pending or place.conversation.current_turn:
                continue
            del self._places[key]
            await _close_place(place)
            excess -= 1

    async def _switch_persona(
        self, key: str, index: int, route: Route, origin: Utterance, argument: str
    ) -> Admission:
        words = argument.split()
        if not words:
            place = self._places.get(key)
            current = place.conversation.persona.name if place else route.persona
            return Admission(accepted=False, reason="command", detail=f"the persona is {current}")
        name = words[0]
        asked = words[1].lower() if len(words) > 1 else None
        # Without a language: the route's, when the new persona speaks it, else its own.
        tries = [asked] if asked else [route.language, None] if route.language else [None]
        for language in tries:
            try:
                persona = await asyncio.to_thread(self._load_persona, name, language)
                break
            except LipcastError as err:
                problem = str(err)
        else:
            return Admission(accepted=False, reason="command", detail=problem)
        self._personas[key] = (name, persona.language)
        place = self._places.get(key)
        if place is not None:
            # The old guard may still be checking the turn in progress: closed with the rest.
            self._retired.append(place.conversation.safety)
            place.conversation.switch_persona(persona, self._make_safety(persona, origin))
        log.info("persona of %s switched to %s (%s)", key, persona.id, persona.language)
        return Admission(
            accepted=False,
            reason="command",
            detail=f"now {persona.name} ({persona.language})",
        )

    def _remember_name(self, utterance: Utterance) -> None:
        name = (utterance.user_name or utterance.user).casefold()
        self._names[(utterance.platform, utterance.channel, name)] = utterance.user
        self._names.move_to_end((utterance.platform, utterance.channel, name))
        while len(self._names) > 10_000:
            self._names.popitem(last=False)

    def _forget_someone(self, command: Control) -> Control:
        """``!forget @name``: a moderator's request about another viewer, by the name they
        were last seen with here. Anyone else's ``!forget NAME`` stays about themselves."""
        origin = command.origin
        if not (origin.moderator or origin.broadcaster):
            return command
        name = command.argument.split()[0].lstrip("@").casefold()
        user = self._names.get((origin.platform, origin.channel, name), name)
        target = dataclasses.replace(origin, user=user, user_name=name)
        return Control(name="forget", origin=target, argument="")

    async def close(self) -> None:
        """Close every conversation and wait for their tasks."""
        self._closed = True
        places = list(self._places.values())
        self._places.clear()
        await asyncio.gather(*(_close_place(place) for place in places))
        for safety in self._retired:
            await safety.aclose()

    async def wait_idle(self) -> None:
        """Wait until no conversation has a message waiting or a turn running."""
        await asyncio.gather(*(place.conversation.wait_idle() for place in self._places.values()))

    @property
    def pending(self) -> int:
        return sum(place.conversation.pending for place in self._places.values())


def _why_ended(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    err = task.exception()
    return f"{type(err).__name__}: {err}" if err is not None else "returned"


async def _close_place(place: _Place) -> None:
    await place.conversation.close()
    await asyncio.gather(place.task, return_exceptions=True)
