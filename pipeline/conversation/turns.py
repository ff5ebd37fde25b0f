"""The conversation: from a viewer's message to the persona's clips, one turn at a time.

A turn goes::

    Utterance -> filters -> (safety, memory, prompt) -> LLM token stream -> sentences
      -> safety check per sentence -> one RenderJob per sentence, submitted at once
      -> results collected in sentence order -> sinks (overlay, files, chat)

Each finished sentence is submitted to the job queue the moment the splitter releases it, so
the first sentence renders while the model still writes the second; the results are put back
in sentence order and each clip goes to the sinks as soon as it is next in line.

Without a language model (``[llm] backend = "none"``, the embedded default) the persona reads
chat messages aloud instead: the same path from sentences on.

:meth:`Conversation.hear` is what an adapter calls; it filters the message and queues a turn.
:meth:`Conversation.run` answers queued turns in priority order until :meth:`close`.
:meth:`Conversation.skip` stops the turn in progress: its LLM stream is closed, its pending
results are dropped and the sinks are told. A turn whose first clip would be ready after its
deadline is dropped. Every turn ends with a :class:`TurnReport` (with :class:`TurnTimings`),
logged as one line on the ``lipcast.turns`` logger.

Viewer memory is a help, never a condition: when it fails (a locked or full database), the
turn goes on without it and the reply is still spoken; the failure is logged once per outage.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import dataclasses
import heapq
import itertools
import logging
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from personas import Persona
from pipeline.audio import AudioChunk, concat
from pipeline.clips import TIMELINE_CONTENT_TYPE, Clip, Mode, TurnInfo, pcm_sample_rate
from pipeline.conversation.filters import ChatFilter
from pipeline.conversation.memory import Remembered, ViewerMemory
from pipeline.conversation.priority import MAX_PRIORITY, PriorityPolicy
from pipeline.conversation.prompts import build_messages, check_template, safe_viewer_name
from pipeline.conversation.safety import SafetyGuard, Verdict, moderation_log
from pipeline.conversation.sentences import Sentence, SentenceSplitter
from pipeline.conversation.timings import TurnTimings
from pipeline.errors import InputError, LipcastError
from pipeline.jobs.queue.base import (
    JobExpiredError,
    JobFailedError,
    JobQueue,
    QueueError,
    QueueFullError,
    ResultStream,
)
from pipeline.jobs.wire import MAX_TAKE_S, RenderJob, RenderResult
from pipeline.services.llm import LLM, GenerationOptions, LLMError
from pipeline.utterance import Admission, Control, Utterance, may_control, parse_control

log = logging.getLogger(__name__)
turn_log = logging.getLogger("lipcast.turns")

_T = TypeVar("_T")
_WATCHED_TURNS = 64  # recent turns kept for late "first clip shown" reports

Outcome = Literal[
    "completed",  # every sentence released (some may have been blocked)
    "fallback",  # the model failed before saying anything; a short fallback line was said
    "neutral",  # every sentence was blocked; a neutral line was said instead
    "partial",  # the model failed mid-reply; what was said before stays
    "rejected",  # the viewer's message failed moderation
    "skipped",  # skip() or a sink stopped it
    "expired",  # it could not start playing before its deadline
    "busy",  # the render queue was full
    "failed",  # nothing could be rendered
    "empty",  # the model said nothing speakable
]
SentenceStatus = Literal["released", "blocked", "failed", "expired", "dropped"]

FALLBACK_LINES = {
    "en": "Sorry, I lost my train of thought. Ask me again in a moment!",
    "de": "Entschuldigung, da habe ich den Faden verloren. Frag mich gleich noch einmal!",
    "fr": "Désolée, j'ai perdu le fil. Redemande-moi dans un instant !",
    "es": "Perdona, he perdido el hilo. ¡Pregúntame otra vez en un momento!",
}
AND_MORE = {  # said after the last sentence read aloud when a message was cut
    "en": "and more.",
    "de": "und so weiter.",
    "fr": "et ainsi de suite.",
    "es": "y más.",
}
NEUTRAL_LINES = {
    "en": "Let's talk about something else!",
    "de": "Lass uns über etwas anderes reden!",
    "fr": "Parlons d'autre chose !",
    "es": "¡Hablemos de otra cosa!",
}


@dataclass(frozen=True, kw_only=True)
class ConversationOptions:
    """How turns run; ``[chat]`` in bot.toml documents each field."""

    deadline_s: float = 20.0  # a reply must start within this long of the message
    max_pending: int = 5  # messages waiting for their turn; more are refused as busy
    read_aloud_names: bool = True  # read-aloud mode says who wrote the message
    max_sentences: int | None = None  # None: the persona's reply.max_sentences
    sentence_min_chars: int = 12
    sentence_soft_max_chars: int = 160
    sentence_hard_max_chars: int = 260
    first_sentence_soft_max_chars: int = 60  # the first sentence is cut sooner, at a comma
    fallback_line: str | None = None  # None: a short line in the persona's language
    neutral_line: str | None = None
    remember: bool = True  # keep the exchange in the viewer's history
    priority: PriorityPolicy = field(default_factory=PriorityPolicy)  # flags -> priority


@dataclass(kw_only=True)
class SentenceRecord:
    seq: int | None  # None when it never became a job
    text: str
    status: SentenceStatus
    reason: str = ""


@dataclass(kw_only=True)
class TurnReport:
    """What happened in one turn."""

    turn_id: str
    utterance: Utterance
    mode: Mode
    outcome: Outcome = "completed"
    sentences: list[SentenceRecord] = field(default_factory=list)
    timings: TurnTimings = field(default_factory=TurnTimings)
    error: str = ""

    @property
    def released(self) -> list[str]:
        return [s.text for s in self.sentences if s.status == "released"]

    @property
    def spoken_text(self) -> str:
        return " ".join(self.released)

    @property
    def blocked(self) -> int:
        return sum(1 for s in self.sentences if s.status == "blocked")

    def line(self) -> str:
        """The turn's log line."""
        counts = collections.Counter(s.status for s in self.sentences)
        parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no sentences"
        error = f"; {self.error}" if self.error else ""
        return (
            f"turn {self.turn_id} for {self.utterance.viewer} ({self.mode}): {self.outcome}, "
            f"{parts}; {self.timings.line()}{error}"
        )


class ClipSink(abc.ABC):
    """Where released clips go (the overlay, a folder, chat). Calls come in turn order."""

    @property
    def needs_mp4(self) -> bool:
        """Whether this sink needs each clip as an MP4 (a file, an attachment). When no sink
        does, a sprite persona's jobs come back as speech and timeline only (no video is
        encoded); sinks that do not get each clip as soon as its speech and timeline are in."""
        return True

    @property
    def shows_clips(self) -> bool:
        """The sink shows clips to viewers and reports when each starts (the overlay): the
        turn's log line waits for "first clip shown" (:meth:`Conversation.clip_shown`)."""
        return False

    async def turn_started(self, turn: TurnInfo) -> None:  # noqa: B027 - optional hook
        """A turn began; its clips follow."""

    @abc.abstractmethod
    async def clip_ready(self, clip: Clip) -> bool:
        """Take the next clip; return False to stop the turn (e.g. the overlay skipped it)."""

    async def turn_ended(self, turn: TurnInfo, report: TurnReport) -> None:  # noqa: B027
        """The turn is over; no more clips for it."""

    def on_air_turn(self) -> str | None:
        """The turn this sink is showing now (the overlay), None when it shows none."""
        return None

    async def skip_on_air(self) -> str | None:
        """Stop the reply this sink is showing now (the overlay); its turn id, or None when it
        shows none. Sinks that show nothing keep the default."""
        return None

    async def clear_waiting(self) -> int:
        """Drop the replies waiting to be shown here, not the one on air; how many."""
        return 0

    def drop_turn(self, turn_id: str) -> int:
        """Forget ``turn_id``'s clips not yet handled (a queued sink drops them); how many."""
        del turn_id
        return 0

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the sink holds."""


@dataclass(order=True)
class _Pending:
    sort_key: tuple[int, int]
    utterance: Utterance = field(compare=False)
    text: str = field(compare=False)


@dataclass(kw_only=True)
class _Submitted:
    seq: int
    text: str
    stream: ResultStream


class _TurnStopped(Exception):
    """Ends a turn early with an outcome (raised inside the turn only)."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome: Outcome = outcome


class Conversation:
    """The persona's side of the chat: filters, turns, and clips in order."""

    def __init__(
        self,
        *,
        persona: Persona,
        queue: JobQueue,
        chat_filter: ChatFilter,
        safety: SafetyGuard,
        sinks: Sequence[ClipSink] = (),
        llm: LLM | None = None,
        memory: ViewerMemory | None = None,
        options: ConversationOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.persona = persona
        self.queue = queue
        self.chat_filter = chat_filter
        self.safety = safety
        self.sinks = list(sinks)
        self.llm = llm
        self.memory = memory
        self.options = options or ConversationOptions()
        self.reports: collections.deque[TurnReport] = collections.deque(maxlen=200)
        self._clock = clock
        self._wall = wall_clock
        self._pending: list[_Pending] = []
        self._arrivals = itertools.count()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()  # set while no message waits and no turn runs
        self._idle.set()
        self._closed = False
        self._current: tuple[str, asyncio.Task[None]] | None = None
        self._skip_requested: set[str] = set()
        self._memory_down = False  # the last use of the viewer memory failed
        self._paused = False  # a moderator's !pause: messages are refused until !resume
        # recent turns by id (report, start), for "first clip shown" reports
        self._watch: collections.OrderedDict[str, tuple[TurnReport, float]] = (
            collections.OrderedDict()
        )
        self._unlogged: dict[str, asyncio.TimerHandle] = {}  # turn lines waiting for "shown"
        # seconds of speech the persona has said: where its next clip's head motion and blinks
        # carry on from (RenderJob.start_s)
        self.take_s = 0.0
        if llm is not None:
            check_template(persona)  # a broken prompt template fails at start-up

    @property
    def mode(self) -> Mode:
        return "read_aloud" if self.llm is None else "reply"

    def describe(self) -> str:
        """One line for the start-up message: who speaks, and in which mode."""
        who = f"{self.persona.name} ({self.persona.id}, {self.persona.language})"
        if self.llm is None:
            return f"{who} in read-aloud mode: chat messages are read aloud (no [llm] backend)"
        return f"{who} answering with {self.llm.describe()}"

    @property
    def pending(self) -> int:
        """Messages waiting for their turn."""
        return len(self._pending)

    @property
    def current_turn(self) -> str | None:
        return self._current[0] if self._current else None

    # -- the adapters' side ---------------------------------------------------------------

    async def hear(self, utterance: Utterance) -> Admission:
        """Filter a viewer's message and queue a turn for it; say what was done."""
        if self._closed:
            return Admission(accepted=False, reason="closed")
        command = parse_control(utterance)
        if command is not None:
            return await self.control(command)
        if self._paused:
            return Admission(accepted=False, reason="paused", detail="a moderator paused replies")
        utterance = self.options.priority.apply(utterance)
        result = self.chat_filter.judge(utterance)
        if not result.accepted:
            return Admission(accepted=False, reason=result.reason, detail=result.detail)
        verdict = self.safety.check_text(result.text)
        if not verdict.ok:
            self._log_blocked("message", utterance, None, verdict, result.text)
            return Admission(accepted=False, reason=verdict.reason, detail=verdict.detail)
        if len(self._pending) >= self.options.max_pending:
            log.info("not answering %s (%s): busy", utterance.viewer, utterance.id)
            return Admission(
                accepted=False, reason="busy", detail=f"{len(self._pending)} messages waiting"
            )
        # Only a message taken starts the viewer's cooldown: one refused above can be resent.
        self.chat_filter.commit(utterance, result)
        heapq.heappush(
            self._pending,
            _Pending((-utterance.priority, next(self._arrivals)), utterance, result.text),
        )
        self._idle.clear()
        self._wakeup.set()
        return Admission(accepted=True, reason="accepted", text=result.text)

    async def control(self, command: Control) -> Admission:
        """Run a viewer's or moderator's command on this conversation (``!skip``, ``!lang de``).

        ``persona`` is the router's (it decides which persona a place talks to); here it is
        answered as unsupported."""
        if not may_control(command):
            return Admission(accepted=False, reason="not_allowed", detail="for moderators only")
        name = command.name
        if name == "skip":
            return _answer("skipped" if await self.skip_on_air() else "nothing to skip")
        if name == "clear":
            return _answer(f"dropped {await self.clear_waiting()} waiting replies")
        if name in ("pause", "resume"):
            self._paused = name == "pause"
            return _answer("replies paused" if self._paused else "replies resumed")
        if name == "persona":
            return _answer(f"{self.persona.name} is the persona here")
        return await self._viewer_command(command.origin, name, command.argument)

    @property
    def paused(self) -> bool:
        return self._paused

    async def _viewer_command(self, utterance: Utterance, name: str, argument: str) -> Admission:
        viewer = utterance.viewer
        if name == "forget":
            try:
                removed = await self.memory.forget(viewer) if self.memory is not None else 0
            except LipcastError as err:
                log.warning("could not forget %s at their request: %s", viewer, err)
                return Admission(
                    accepted=False,
                    reason="command",
                    detail="could not forget now (memory unavailable); try again in a while",
                )
            log.info("forgot %s at their request (%d records)", viewer, removed)
            return Admission(accepted=False, reason="command", detail=f"forgot {removed} records")
        allowed = self.persona.spec.languages or [self.persona.spec.language]
        code = argument.split()[0].lower() if argument.split() else ""
        if code not in allowed:
            return Admission(
                accepted=False,
                reason="command",
                detail=f"{self.persona.name} speaks {', '.join(allowed)}",
            )
        if self.memory is not None:
            try:
                await self.memory.set_language(viewer, code)
            except LipcastError as err:
                self._memory_failed(err, f"the language {viewer} asked for is not kept")
                return Admission(
                    accepted=False,
                    reason="command",
                    detail=f"could not set the language to {code} now; try again in a while",
                )
            self._memory_works()
        return Admission(accepted=False, reason="command", detail=f"language set to {code}")

    # -- running turns ------------------------------------------------------------------

    async def run(self) -> None:
        """Answer queued messages, highest priority first, until :meth:`close`."""
        while not self._closed:
            if not self._pending:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = heapq.heappop(self._pending)
            await self.respond(item.utterance, item.text)

    async def wait_idle(self) -> None:
        """Wait until no message waits for its turn and none is being answered (while
        :meth:`run` runs; bound it with ``asyncio.timeout``)."""
        await self._idle.wait()

    def skip(self, turn_id: str | None = None) -> bool:
        """Stop the turn in progress (or ``turn_id`` if it is the one); True if one was."""
        if self._current is None or (turn_id is not None and turn_id != self._current[0]):
            return False
        current_id, task = self._current
        self._skip_requested.add(current_id)
        task.cancel()
        return True

    def clear(self) -> int:
        """Drop the messages waiting for their turn; returns how many."""
        dropped = len(self._pending)
        self._pending.clear()
        return dropped

    def on_air(self) -> str | None:
        """The turn viewers see now: the one a showing sink plays, else the one in progress."""
        for sink in self.sinks:
            turn = sink.on_air_turn()
            if turn is not None:
                return turn
        return self.current_turn

    async def skip_on_air(self) -> str | None:
        """Stop exactly the reply on air (the one the overlay plays, or the turn in progress
        when nothing is shown) and nothing else; returns its turn id, None if there was none."""
        target: str | None = None
        for sink in self.sinks:
            try:
                target = await sink.skip_on_air() or target
            except Exception:
                log.exception("sink %s failed in skip_on_air", type(sink).__name__)
        if target is None:
            target = self.current_turn
        if target is None:
            return None
        for sink in self.sinks:
            sink.drop_turn(target)
        self.skip(target)  # when it is still being produced
        log.info("skipped turn %s (on air)", target)
        return target

    async def clear_waiting(self) -> int:
        """Drop exactly the replies waiting, not the one on air: messages not yet answered,
        replies rendered and queued in the sinks, and the turn being produced behind the one
        on air. Returns how many replies were dropped."""
        on_air = self.on_air()
        dropped = self.clear()
        for sink in self.sinks:
            try:
                dropped += await sink.clear_waiting()
            except Exception:
                log.exception("sink %s failed in clear_waiting", type(sink).__name__)
        current = self.current_turn
        if current is not None and current != on_air:
            for sink in self.sinks:
                sink.drop_turn(current)
            dropped += int(self.skip(current))
        log.info("cleared %d waiting replies", dropped)
        return dropped

    def clip_shown(self, turn_id: str, seq: int) -> None:
        """A showing sink reports that clip ``seq`` of ``turn_id`` started playing."""
        watched = self._watch.get(turn_id)
        if watched is None or seq != 0:
            return
        report, started = watched
        if report.timings.first_clip_shown is None:
            report.timings.first_clip_shown = max(0.0, self._clock() - started)
        if turn_id in self._unlogged:
            self._log_turn(turn_id)

    def _log_turn(self, turn_id: str) -> None:
        handle = self._unlogged.pop(turn_id, None)
        if handle is not None:
            handle.cancel()
        watched = self._watch.get(turn_id)
        if watched is not None:
            turn_log.info("%s", watched[0].line())

    def switch_persona(self, persona: Persona, safety: SafetyGuard | None = None) -> None:
        """Answer with ``persona`` from the next turn on (a moderator's ``!persona``);
        ``safety`` carries the new persona's blocked phrases."""
        if self.llm is not None:
            check_template(persona)
        self.persona = persona
        if safety is not None:
            self.safety = safety

    async def close(self) -> None:
        """Stop answering: the turn in progress is skipped, waiting messages dropped."""
        for turn_id in list(self._unlogged):
            self._log_turn(turn_id)
        self._closed = True
        self.clear()
        self.skip()
        self._wakeup.set()
        self._idle.set()

    async def respond(self, utterance: Utterance, text: str) -> TurnReport:
        """Run one turn for an already admitted message and return its report."""
        started = self._clock()
        turn_id = f"t{secrets.token_hex(5)}"
        report = TurnReport(turn_id=turn_id, utterance=utterance, mode=self.mode)
        report.timings.queue_wait = max(0.0, self._wall() - utterance.received_at)
        run = _TurnRun(self, report, text, started)
        self._watch[turn_id] = (report, started)
        while len(self._watch) > _WATCHED_TURNS:
            self._watch.popitem(last=False)
        work = asyncio.create_task(run.work(), name=f"turn-{turn_id}")
        self._current = (turn_id, work)
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            if turn_id not in self._skip_requested:
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                raise  # respond() itself was cancelled: shutting down
            report.outcome = "skipped"
            log.info("turn %s skipped", turn_id)
        except Exception as err:
            log.exception("turn %s failed unexpectedly", turn_id)
            report.outcome = "failed"
            report.error = f"{type(err).__name__}: {err}"
        finally:
            self._current = None
            self._skip_requested.discard(turn_id)
            await run.finish()
        self.reports.append(report)
        if (
            report.timings.first_clip_ready is not None
            and report.timings.first_clip_shown is None
            and any(sink.shows_clips for sink in self.sinks)
        ):
            # The line waits for the page to say the first clip started (clip_shown), at most
            # until the turn's deadline: a reply not shown by then never will be.
            wait = max(1.0, report.utterance.received_at + self.options.deadline_s - self._wall())
            loop = asyncio.get_running_loop()
            self._unlogged[turn_id] = loop.call_later(wait, self._log_turn, turn_id)
        else:
            turn_log.info("%s", report.line())
        return report

    # -- helpers the turn uses ----------------------------------------------------------

    def _memory_failed(self, err: LipcastError, consequence: str) -> None:
        """Log a memory failure: a warning when an outage starts, then quietly until it ends."""
        if self._memory_down:
            log.debug("viewer memory still failing: %s; %s", err, consequence)
        else:
            log.warning("%s; %s (said once until memory works again)", err, consequence)
        self._memory_down = True

    def _memory_works(self) -> None:
        if self._memory_down:
            self._memory_down = False
            log.info("viewer memory works again")

    def _log_blocked(
        self, what: str, utterance: Utterance, turn_id: str | None, verdict: Verdict, text: str
    ) -> None:
        shown = (
            "(not shown: it holds part of a secret)" if verdict.reason == "secret" else repr(text)
        )
        moderation_log.warning(
            "blocked a %s%s for %s: %s%s: %s",
            what,
            f" in turn {turn_id}" if turn_id else "",
            utterance.viewer,
            verdict.reason,
            f" ({verdict.detail})" if verdict.detail and verdict.reason != "secret" else "",
            shown,
        )


class _TurnRun:
    """The state of one turn: a producer (model -> jobs) and a releaser (results -> sinks)."""

    def __init__(self, conversation: Conversation, report: TurnReport, text: str, started: float):
        self.c = conversation
        self.report = report
        self.text = text
        self.started = started
        utterance = report.utterance
        self.viewer_name = safe_viewer_name(utterance.display_name)
        self.deadline_wall = utterance.received_at + conversation.options.deadline_s
        self.deadline = started + (self.deadline_wall - conversation._wall())
        self.language = conversation.persona.language
        self.jobs: asyncio.Queue[_Submitted | None] = asyncio.Queue()
        self.streams: list[ResultStream] = []
        self.last_start_s = conversation.take_s  # where the latest sentence starts in the take
        self.said = ""
        self.seq = 0
        self.info: TurnInfo | None = None  # set once the sinks were told the turn began
        self.timed = False  # a clip's worker timings were added to the turn's
        self.without_memory = False  # memory failed once in this turn: not asked again
        self.used_memory = False  # memory answered at least once in this turn
        persona = conversation.persona
        self.cap = conversation.options.max_sentences or persona.spec.reply.max_sentences
        self.char_cap = persona.spec.reply.max_chars
        self.cut = False  # a sentence would have passed char_cap: the reply ends there

    def elapsed(self) -> float:
        return self.c._clock() - self.started

    async def work(self) -> None:
        report, c = self.report, self.c
        if self.c._clock() >= self.deadline:
            report.outcome = "expired"
            report.error = "the message waited past its deadline"
            return
        utterance = report.utterance
        preferred = await self.recall(lambda memory: memory.language(utterance.viewer), None)
        allowed = c.persona.spec.languages or [c.persona.spec.language]
        if preferred in allowed:
            self.language = preferred
        verdict = await c.safety.check_viewer(self.text)  # the moderator, when configured
        if not verdict.ok:
            c._log_blocked("message", utterance, report.turn_id, verdict, self.text)
            report.outcome = "rejected"
            report.error = verdict.reason
            return
        self.info = TurnInfo(
            turn_id=report.turn_id,
            utterance=utterance,
            viewer_name=self.viewer_name,
            language=self.language,
            mode=report.mode,
            persona_id=c.persona.id,
            persona_name=c.persona.name,
        )
        for sink in c.sinks:
            await _call_sink(sink.turn_started(self.info), sink, "turn_started")
        producer = asyncio.create_task(self.produce(), name=f"turn-{report.turn_id}-producer")
        try:
            await self.release()
        except _TurnStopped as stop:
            report.outcome = stop.outcome
            report.error = str(stop)
        finally:
            if not producer.done():
                producer.cancel()
            results = await asyncio.gather(producer, return_exceptions=True)
            if isinstance(results[0], _TurnStopped) and report.outcome == "completed":
                report.outcome = results[0].outcome
                report.error = str(results[0])
            elif isinstance(results[0], BaseException) and not isinstance(
                results[0], asyncio.CancelledError | _TurnStopped
            ):
                raise results[0]

    async def finish(self) -> None:
        """After the turn, whatever happened: drop pending results, tell the sinks, remember."""
        if self.streams:
            self.c.take_s = _after(self.last_start_s, self.streams[-1])
        for stream in self.streams:
            stream.close()
        c, report = self.c, self.report
        if self.info is not None:
            for sink in c.sinks:
                await _call_sink(sink.turn_ended(self.info, report), sink, "turn_ended")
        if (
            c.options.remember
            and report.mode == "reply"
            and report.outcome in ("completed", "partial", "skipped")
            and self.said
        ):
            viewer, said = report.utterance.viewer, self.said
            await self.recall(lambda memory: memory.remember(viewer, self.text, said), None)
        if self.used_memory and not self.without_memory:
            # Judged per turn: reads may pass while writes still fail (another writer's lock).
            c._memory_works()

    async def recall(self, use: Callable[[ViewerMemory], Awaitable[_T]], default: _T) -> _T:
        """``use(memory)``, or ``default`` without a memory or when it fails: a failure never
        ends the turn, and the turn does not ask a failing memory again."""
        memory = self.c.memory
        if memory is None or self.without_memory:
            return default
        try:
            value = await use(memory)
        except LipcastError as err:
            self.without_memory = True
            self.c._memory_failed(err, f"turn {self.report.turn_id} is answered without it")
            return default
        self.used_memory = True
        return value

    # -- producer: model tokens -> sentences -> jobs ------------------------------------

    async def produce(self) -> None:
        try:
            if self.c.llm is None:
                await self._read_aloud()
            else:
                await self._reply(self.c.llm)
            if self.seq == 0:
                blocked = self.report.blocked
                if blocked:
                    await self._say_fixed(self.c.options.neutral_line, NEUTRAL_LINES, "neutral")
                elif self.report.outcome == "completed":
                    self.report.outcome = "empty"
        finally:
            self.jobs.put_nowait(None)

    async def _read_aloud(self) -> None:
        text = f"{self.viewer_name}: {self.text}" if self.c.options.read_aloud_names else self.text
        splitter = self._splitter()
        sentences = splitter.feed(text) + splitter.flush()
        # The chat filter already bounds the message ([chat] max_chars): it is read whole,
        # unless an explicit sentence cap cuts it, and then the cut is said, never silent.
        cap = self.c.options.max_sentences
        if cap is not None and len(sentences) > cap:
            log.info("turn %s: message read up to sentence %d", self.report.turn_id, cap)
            last = sentences[cap - 1]
            sentences = [
                *sentences[: cap - 1],
                dataclasses.replace(last, text=_and_more(last, self.language)),
            ]
        self.cap = len(sentences)
        self.char_cap = sys.maxsize
        now = self.elapsed()
        for sentence in sentences:
            await self._accept(sentence, now)

    async def _reply(self, llm: LLM) -> None:
        c, report = self.c, self.report
        viewer = report.utterance.viewer
        nothing: list[Remembered] = []
        history = await self.recall(lambda memory: memory.history(viewer), nothing)
        messages = build_messages(
            c.persona,
            viewer_name=self.viewer_name,
            text=self.text,
            history=history,
            language=self.language,
        )
        spec = c.persona.spec.llm
        options = GenerationOptions(
            model=spec.model, temperature=spec.temperature, max_tokens=spec.max_tokens
        )
        splitter = self._splitter()
        token_ends: collections.deque[tuple[int, float]] = collections.deque()
        received = 0
        # The model must write its first sentence within half the time left, so that a model
        # that stalls is cut off while the fallback line (and the viewers waiting after this
        # one) can still play in time. Once a sentence is out, its read timeout bounds it.
        now = c._clock()
        model_deadline = now + max(0.0, self.deadline - now) / 2
        first_sentence = asyncio.timeout_at(
            asyncio.get_running_loop().time() + model_deadline - now
        )
        try:
            async with first_sentence:
                async with contextlib.aclosing(
                    llm.stream(messages, options=options, deadline=model_deadline)
                ) as stream:
                    async for piece in stream:
                        now = self.elapsed()
                        if report.timings.llm_first_token is None:
                            report.timings.llm_first_token = now
                        received += len(piece)
                        token_ends.append((received, now))
                        for sentence in splitter.feed(piece):
                            await self._accept(sentence, _token_time(token_ends, sentence.end, now))
                        if self.seq:
                            first_sentence.reschedule(None)
                        if self._full():
                            log.info("turn %s: reply cut at %d sentences", report.turn_id, self.seq)
                            return
                for sentence in splitter.flush():
                    if self._full():
                        break
                    await self._accept(sentence, self.elapsed())
        except (LLMError, TimeoutError) as err:
            if isinstance(err, TimeoutError):
                if not first_sentence.expired():
                    raise
                err = LLMError(
                    f"{llm.describe()} wrote no sentence within "
                    f"{model_deadline - self.started:.1f} s of the turn's start; cut off so the "
                    "fallback line plays before the deadline ([chat] deadline_s)",
                    transient=True,
                )
            level = logging.WARNING if err.transient else logging.ERROR
            log.log(level, "turn %s for %s: %s", report.turn_id, report.utterance.viewer, err)
            report.error = str(err)
            if self.seq == 0 and not report.blocked:
                await self._say_fixed(c.options.fallback_line, FALLBACK_LINES, "fallback")
            else:
                report.outcome = "partial"

    def _full(self) -> bool:
        return self.seq >= self.cap or self.cut or len(self.said) >= self.char_cap

    def _splitter(self) -> SentenceSplitter:
        options = self.c.options
        return SentenceSplitter(
            language=self.language,
            min_chars=options.sentence_min_chars,
            soft_max_chars=options.sentence_soft_max_chars,
            hard_max_chars=options.sentence_hard_max_chars,
            first_soft_max_chars=min(
                options.first_sentence_soft_max_chars, options.sentence_soft_max_chars
            ),
        )

    async def _say_fixed(self, line: str | None, lines: dict[str, str], outcome: Outcome) -> None:
        text = line or lines.get(self.language.split("-")[0], lines["en"])
        self.report.outcome = outcome
        await self._submit(text)

    async def _accept(self, sentence: Sentence, last_token_at: float) -> None:
        """Check one sentence and, if it may be said, submit its render job."""
        if self._full():
            return
        if self.said and len(self.said) + 1 + len(sentence.text) > self.char_cap:
            self.cut = True  # the persona's reply.max_chars: the reply ends before this one
            return
        checking = self.c._clock()
        verdict = await self.c.safety.check_reply(sentence.text, said_before=self.said)
        # every reply check (the word lists, and AutoMod or moderation when configured)
        self.report.timings.safety += self.c._clock() - checking
        if not verdict.ok:
            self.c._log_blocked(
                "reply sentence", self.report.utterance, self.report.turn_id, verdict, sentence.text
            )
            self.report.sentences.append(
                SentenceRecord(
                    seq=None, text=sentence.text, status="blocked", reason=verdict.reason
                )
            )
            return
        timings = self.report.timings
        if timings.first_sentence is None:
            timings.first_sentence_last_token = last_token_at
        await self._submit(sentence.text)
        if timings.first_sentence is None:
            timings.first_sentence = self.elapsed()

    async def _submit(self, text: str) -> None:
        c, report = self.c, self.report
        seq = self.seq
        now = c._wall()
        deadline = (
            self.deadline_wall if seq == 0 else max(self.deadline_wall, now + c.options.deadline_s)
        )
        record = SentenceRecord(seq=seq, text=text, status="dropped")
        report.sentences.append(record)
        if deadline <= now:
            record.reason = "deadline"
            raise _TurnStopped("expired", "the reply could not start before its deadline")
        mp4 = any(sink.needs_mp4 for sink in c.sinks)
        start_s = await self._start_s(wait=mp4)
        job = RenderJob(
            job_id=f"{report.turn_id}.{seq}",
            turn_id=report.turn_id,
            seq=seq,
            text=text,
            persona=c.persona.id,
            language=None if self.language == c.persona.language else self.language,
            priority=_job_priority(report.utterance.priority, seq),
            created_at=now,
            deadline=deadline,
            mp4=mp4,
            start_s=start_s,
        )
        try:
            stream = await c.queue.submit(job)
        except QueueFullError as err:
            record.reason = "busy"
            raise _TurnStopped("busy", str(err)) from err
        except JobExpiredError as err:
            record.reason = "deadline"
            raise _TurnStopped("expired", str(err)) from err
        self.seq += 1
        self.said = f"{self.said} {text}".strip()
        self.streams.append(stream)
        self.last_start_s = start_s
        self.jobs.put_nowait(_Submitted(seq=seq, text=text, stream=stream))

    async def _start_s(self, *, wait: bool) -> float:
        """Where the next sentence starts in the persona's take: where the one before it
        started, plus its length, known from its first result part (its speech). That part is
        waited for only when an MP4 will show the motion (the overlay draws its own), and at
        most ``deadline_s``: a sentence whose length never comes costs continuity, nothing else.
        """
        if not self.streams:
            return self.c.take_s
        previous = self.streams[-1]
        if wait and previous.first is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(previous.wait_first(), self.c.options.deadline_s)
        return _after(self.last_start_s, previous)

    # -- releaser: results in sentence order -> sinks -----------------------------------

    async def release(self) -> None:
        assert self.info is not None
        c, report = self.c, self.report
        # A sprite clip's speech and timeline come before its MP4: the sinks that draw it
        # (the overlay) get it then, off the MP4's latency; the sinks that need the file, later.
        early = [sink for sink in c.sinks if not sink.needs_mp4]
        later = [sink for sink in c.sinks if sink.needs_mp4]
        while (item := await self.jobs.get()) is not None:
            record = next(r for r in report.sentences if r.seq == item.seq)
            parts: list[RenderResult] = []
            sent_early = False
            try:
                async for part in item.stream:
                    parts.append(part)
                    if later and early and not sent_early and not part.last and _drawable(parts):
                        await self._hand_on(self._clip(item, parts), early, record)
                        sent_early = True
            except JobExpiredError as err:
                if not sent_early:
                    record.status, record.reason = "expired", "deadline"
                    raise _TurnStopped("expired", str(err)) from err
                log.warning(
                    "turn %s: sentence %d: no MP4 in time: %s", report.turn_id, item.seq, err
                )
                continue
            except (JobFailedError, QueueError) as err:
                if not sent_early:
                    record.status, record.reason = "failed", str(err)
                log.warning("turn %s: sentence %d not rendered: %s", report.turn_id, item.seq, err)
                continue
            clip = self._clip(item, parts)
            # the worker's timings (tts, render, encode) are whole only with the last part
            report.timings.add_worker_timings(clip.timings, first=not self.timed)
            self.timed = True
            await self._hand_on(clip, later if sent_early else c.sinks, record)

    def _clip(self, item: _Submitted, parts: list[RenderResult]) -> Clip:
        """The clip a job's parts so far make (its MP4 once that part has come)."""
        assert self.info is not None
        picture, audio = _split_parts(parts)
        timeline = b"".join(p.media for p in picture if p.content_type == TIMELINE_CONTENT_TYPE)
        picture = [p for p in picture if p.content_type != TIMELINE_CONTENT_TYPE]
        clip_timings: dict[str, float] = {}
        for part in parts:
            for stage, value in part.timings.items():
                if stage == "queue_wait":
                    clip_timings.setdefault(stage, value)
                else:
                    clip_timings[stage] = clip_timings.get(stage, 0.0) + value
        duration = sum(part.duration_s for part in picture)
        return Clip(
            turn=self.info,
            seq=item.seq,
            text=item.text,
            media=b"".join(part.media for part in picture),
            content_type=next((p.content_type for p in picture if p.media), "video/mp4"),
            duration_s=duration or (audio.duration_s if audio is not None else 0.0),
            timings=clip_timings,
            audio=audio,
            timeline=timeline,
        )

    async def _hand_on(self, clip: Clip, sinks: Sequence[ClipSink], record: SentenceRecord) -> None:
        """Give ``clip`` to ``sinks``; the first time a sentence is handed on, it counts as
        released (and the turn's first clip must still be in time)."""
        c, timings = self.c, self.report.timings
        if record.status != "released":
            first = timings.first_clip_ready is None
            if first and c._clock() > self.deadline:
                record.status, record.reason = "expired", "deadline"
                raise _TurnStopped(
                    "expired",
                    f"the first clip was ready {c._clock() - self.deadline:.1f} s after the "
                    "turn's deadline ([chat] deadline_s)",
                )
            now = self.elapsed()
            if first:
                timings.first_clip_ready = now
            timings.last_clip_ready = now
            timings.clip_seconds += clip.duration_s
            record.status = "released"
        for sink in sinks:
            keep = await _call_sink(sink.clip_ready(clip), sink, "clip_ready")
            if keep is False:
                raise _TurnStopped("skipped", f"{type(sink).__name__} stopped the turn")


def _after(start_s: float, stream: ResultStream) -> float:
    """Where the take goes on after the sentence of ``stream`` that starts at ``start_s``: its
    first part's length (the speech, or a one-part clip); no length known, no time passes."""
    first = stream.first
    length = first.duration_s if first is not None else 0.0
    return (start_s + length) % MAX_TAKE_S


def _drawable(parts: list[RenderResult]) -> bool:
    """Whether the parts so far hold a clip's speech and its timeline (all a page draws)."""
    kinds = {part.content_type for part in parts}
    return TIMELINE_CONTENT_TYPE in kinds and any(pcm_sample_rate(k) for k in kinds)


def _job_priority(priority: int, seq: int) -> int:
    """A sentence job's priority: its turn's, one higher for a first sentence, so that many
    conversations sharing the workers each start speaking before any says its second."""
    return min(MAX_PRIORITY, priority + 1) if seq == 0 else priority


def _and_more(sentence: Sentence, language: str) -> str:
    more = AND_MORE.get(language.split("-")[0], AND_MORE["en"])
    return f"{sentence.text.rstrip(' .…')} … {more}"


def _answer(detail: str) -> Admission:
    return Admission(accepted=False, reason="command", detail=detail)


def _split_parts(parts: list[RenderResult]) -> tuple[list[RenderResult], AudioChunk | None]:
    """A job's result parts as (the picture's parts, the speech): PCM parts become audio."""
    picture: list[RenderResult] = []
    pcm: list[AudioChunk] = []
    for part in parts:
        rate = pcm_sample_rate(part.content_type)
        if rate is None:
            picture.append(part)
        elif part.media:
            pcm.append(AudioChunk.from_pcm16(part.media, rate))
    try:
        return picture, concat(pcm) if pcm else None
    except InputError:  # parts at different rates: keep the picture, say it once
        log.warning("a clip's audio parts disagree on their sample rate; audio dropped")
        return picture, None


def _token_time(token_ends: collections.deque[tuple[int, float]], end: int, now: float) -> float:
    """When the token holding stream offset ``end - 1`` arrived (older entries are dropped)."""
    while token_ends and token_ends[0][0] < end:
        token_ends.popleft()
    return token_ends[0][1] if token_ends else now


async def _call_sink(call: Awaitable[object], sink: ClipSink, what: str) -> bool | None:
    """Await a sink's hook; a sink's failure is logged and never ends the turn."""
    try:
        result = await call
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("sink %s failed in %s", type(sink).__name__, what)
        return None
    return result if isinstance(result, bool) else None
