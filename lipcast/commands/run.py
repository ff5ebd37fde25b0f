"""``lipcast run``: the persona live. Chat in, lip-synced clips out.

The embedded default is one process: the ``console`` chat adapter (type lines in the
terminal), the conversation pipeline, the ``memory`` job queue and a render worker in the same
process. Finished clips are written to ``[output] dir`` and reported, and shown by the OBS
overlay (``[overlay]``, when enabled). With ``[queue] backend = "rabbitmq"`` the same command
submits its render jobs to the broker, where ``lipcast worker`` processes on any machine take
them. Without ``[llm]`` the persona reads chat aloud; start-up says which mode is active.

The builders here (:func:`build_llm`, :func:`build_safety`, :func:`build_conversation`) are
what ``lipcast bench turn`` uses too; the render handler is ``lipcast.wiring``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bots.base import ChatAdapter
from bots.console import ConsoleAdapter
from lipcast.wiring import build_job_handler, persona_from_settings
from personas import Persona
from pipeline.backends import load_backend
from pipeline.conversation import (
    Clip,
    ClipSink,
    Conversation,
    ConversationOptions,
    TurnInfo,
    TurnReport,
)
from pipeline.errors import LipcastError, PersonaError
from pipeline.filters import ChatFilter, FilterRules
from pipeline.llm import LLM, LLM_BACKENDS
from pipeline.memory import ViewerMemory
from pipeline.safety import OpenAIModeration, SafetyGuard, secrets_from_environment
from pipeline.worker import RenderWorker

if TYPE_CHECKING:
    from lipcast.cli import Context
    from lipcast.config import Secrets, Settings
    from obs_overlay.server import OverlayServer

HELP = "run the persona: chat in the terminal, lip-synced clips out (files, OBS overlay)"
DRAIN_GRACE_S = 5.0  # after the chat ends, how long waiting replies get beyond their deadlines

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--persona", help="persona name or folder (default: bot.toml)")
    parser.add_argument("-l", "--language", help="language for personas that speak several")
    parser.add_argument("--user", default="viewer", help="your chat name in the console")
    parser.add_argument(
        "--no-overlay", action="store_true", help="do not serve the OBS overlay page"
    )


# -- builders ------------------------------------------------------------------------------


def build_llm(settings: Settings, secrets: Secrets) -> LLM | None:
    """The model ``[llm] backend`` names, or None for read-aloud mode."""
    config = settings.llm
    if config.backend == "none":
        return None
    cls = load_backend("LLM", config.backend, LLM_BACKENDS)
    key = secrets.openai_api_key.get_secret_value() if secrets.openai_api_key else None
    llm: LLM = cls(
        base_url=config.base_url,
        model=config.model,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        timeout_s=config.timeout_s,
        retries=config.retries,
        api_key=key,
    )
    return llm


def build_safety(settings: Settings, secrets: Secrets, persona: Persona) -> SafetyGuard:
    """Blocked phrases of the persona and ``[safety]``, every secret, the optional moderator."""
    config = settings.safety
    moderator = None
    if config.moderation:
        key = secrets.openai_api_key.get_secret_value() if secrets.openai_api_key else None
        moderator = OpenAIModeration(
            base_url=config.moderation_base_url,
            api_key=key,
            model=config.moderation_model,
            timeout_s=config.moderation_timeout_s,
        )
    return SafetyGuard.build(
        phrases=[*persona.spec.safety.blocked_phrases, *config.blocked_phrases],
        secrets=[*secrets.values(), *secrets_from_environment()],
        moderator=moderator,
        moderate_replies=config.moderate_replies,
        fail_closed=config.moderation_fail_closed,
    )


def filter_rules(settings: Settings) -> FilterRules:
    chat = settings.chat
    return FilterRules(
        max_chars=chat.max_chars,
        too_long=chat.too_long,
        user_cooldown_s=chat.user_cooldown_s,
        global_per_minute=chat.global_per_minute,
        duplicate_window_s=chat.duplicate_window_s,
        blocked_users=tuple(chat.blocked_users),
        blocked_words=tuple(chat.blocked_words),
        moderators_exempt=chat.moderators_exempt,
    )


def conversation_options(settings: Settings, **overrides: Any) -> ConversationOptions:
    chat = settings.chat
    values: dict[str, Any] = {
        "deadline_s": chat.deadline_s,
        "max_pending": chat.max_pending,
        "read_aloud_names": chat.read_aloud_names,
        "sentence_min_chars": chat.sentence_min_chars,
        "sentence_soft_max_chars": chat.sentence_soft_max_chars,
        "sentence_hard_max_chars": chat.sentence_hard_max_chars,
        "first_sentence_soft_max_chars": chat.first_sentence_soft_max_chars,
        "fallback_line": settings.llm.fallback_line or None,
        "remember": settings.memory.enabled,
    }
    values.update(overrides)
    return ConversationOptions(**values)


def build_conversation(
    settings: Settings,
    secrets: Secrets,
    *,
    persona: Persona,
    queue: Any,
    sinks: list[ClipSink],
    llm: LLM | None,
    memory: ViewerMemory | None,
    **options: Any,
) -> Conversation:
    """The conversation pipeline as bot.toml configures it."""
    return Conversation(
        persona=persona,
        queue=queue,
        chat_filter=ChatFilter(filter_rules(settings)),
        safety=build_safety(settings, secrets, persona),
        sinks=sinks,
        llm=llm,
        memory=memory,
        options=conversation_options(settings, **options),
    )


# -- sinks ---------------------------------------------------------------------------------


class FolderSink(ClipSink):
    """Writes each clip to ``folder/<turn>-<seq>.mp4`` and reports it."""

    def __init__(self, folder: Path, *, out: TextIO | None = None) -> None:
        self.folder = folder
        self._out = out or sys.stdout
        self.written: list[Path] = []

    async def turn_started(self, turn: TurnInfo) -> None:
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)

    async def clip_ready(self, clip: Clip) -> bool:
        path = self.folder / f"{clip.turn.turn_id}-{clip.seq:02d}.mp4"
        await asyncio.to_thread(path.write_bytes, clip.media)
        self.written.append(path)
        print(f"  {path} ({clip.duration_s:.1f} s): {clip.text}", file=self._out, flush=True)
        return True


class OverlaySink(ClipSink):
    """Shows clips in the OBS overlay; a skip there stops the turn here."""

    def __init__(self, overlay: OverlayServer) -> None:
        self.overlay = overlay

    async def turn_started(self, turn: TurnInfo) -> None:
        await self.overlay.turn_started(turn.turn_id, viewer=turn.viewer_name)

    async def clip_ready(self, clip: Clip) -> bool:
        clip_id = await self.overlay.publish_clip(
            turn_id=clip.turn.turn_id,
            seq=clip.seq,
            mp4=clip.media,
            caption=clip.text,
            viewer=clip.turn.viewer_name,
            duration_s=clip.duration_s,
        )
        return clip_id is not None

    async def turn_ended(self, turn: TurnInfo, report: TurnReport) -> None:
        if (
            report.outcome == "skipped"
            and report.released
            and not self.overlay.is_cancelled(turn.turn_id)
        ):
            # Skipped here (the console's /skip): stop what it already showed as well. Turns
            # run one at a time, so the reply playing is this one or about to be.
            await self.overlay.skip()
        await self.overlay.turn_ended(turn.turn_id)


class ChatSink(ClipSink):
    """Posts each reply's text in the chat it answers, once the turn is over."""

    def __init__(self, adapter: ChatAdapter) -> None:
        self.adapter = adapter

    async def clip_ready(self, clip: Clip) -> bool:
        return True

    async def turn_ended(self, turn: TurnInfo, report: TurnReport) -> None:
        if turn.mode == "reply" and report.spoken_text:
            await self.adapter.send_text(turn.utterance.channel, report.spoken_text)


# -- the command ---------------------------------------------------------------------------


def run(args: argparse.Namespace, context: Context) -> int:
    settings, secrets = context.settings, context.secrets
    persona = persona_from_settings(settings, args.persona, args.language)
    logging.getLogger("lipcast.turns").setLevel(logging.INFO)  # one line per turn, always
    return asyncio.run(_serve(args, settings, secrets, persona))


async def _serve(
    args: argparse.Namespace, settings: Settings, secrets: Secrets, persona: Persona
) -> int:
    from lipcast.wiring import build_job_queue

    async with contextlib.AsyncExitStack() as stack:
        llm = build_llm(settings, secrets)
        if llm is not None:
            stack.push_async_callback(llm.aclose)
        memory = None
        if settings.memory.enabled:
            memory = ViewerMemory(
                settings.memory.path,
                budget_chars=settings.memory.budget_chars,
                max_viewers=settings.memory.max_viewers,
            )
            await memory.open()
            stack.push_async_callback(memory.close)
        queue = build_job_queue(settings, secrets, connection_name="lipcast run")
        await queue.start()
        stack.push_async_callback(queue.close)
        if settings.queue.backend == "memory":
            handler = build_job_handler(settings, secrets)
            stack.push_async_callback(handler.aclose)
            worker = RenderWorker(
                queue,
                handler,
                prefetch=settings.worker.prefetch,
                concurrency=settings.worker.concurrency,
            )
            worker_task = asyncio.create_task(worker.run(), name="lipcast-render-worker")

            async def stop_worker() -> None:
                worker.stop()
                await asyncio.gather(worker_task, return_exceptions=True)

            stack.push_async_callback(stop_worker)
        adapter = ConsoleAdapter(user=args.user, persona_name=persona.name)
        sinks: list[ClipSink] = [FolderSink(settings.output.dir), ChatSink(adapter)]
        overlay_line = "overlay off"
        if settings.overlay.enabled and not args.no_overlay:
            overlay = await _start_overlay(settings, secrets, persona)
            if overlay is not None:
                stack.push_async_callback(overlay.stop)
                sinks.append(OverlaySink(overlay))
                overlay_line = f"OBS Browser Source: {overlay.url}"
        conversation = build_conversation(
            settings, secrets, persona=persona, queue=queue, sinks=sinks, llm=llm, memory=memory
        )
        safety = conversation.safety
        stack.push_async_callback(safety.aclose)
        workers = (
            "an in-process render worker"
            if settings.queue.backend == "memory"
            else f"render workers on RabbitMQ queue {settings.queue.name!r} (run `lipcast worker`)"
        )
        print(f"lipcast: {conversation.describe()}", file=sys.stderr)
        print(
            f"lipcast: {workers}; clips go to {settings.output.dir}/; {overlay_line}",
            file=sys.stderr,
            flush=True,
        )
        turns = asyncio.create_task(conversation.run(), name="lipcast-conversation")
        try:
            await adapter.run(conversation)
            await _drain(conversation, settings)
        finally:
            await conversation.close()
            await asyncio.gather(turns, return_exceptions=True)
    return 0


async def _drain(conversation: Conversation, settings: Settings) -> None:
    """The chat ended: let waiting replies finish (they are bounded by their deadlines)."""
    limit = settings.chat.deadline_s * (conversation.pending + 1) + DRAIN_GRACE_S
    try:
        async with asyncio.timeout(limit):
            await conversation.wait_idle()
    except TimeoutError:
        log.warning("stopping with %d replies unanswered", conversation.pending)


async def _start_overlay(
    settings: Settings, secrets: Secrets, persona: Persona
) -> OverlayServer | None:
    """The overlay server as ``[overlay]`` says, started; None (with a warning) if it cannot."""
    try:
        from lipcast.wiring import build_overlay_server
    except ImportError as err:  # the overlay is optional to this command
        log.warning("the OBS overlay is not available: %s", err)
        return None
    try:
        overlay = build_overlay_server(settings, secrets, idle_image=persona.avatar_path)
        await overlay.start()
    except (LipcastError, PersonaError) as err:
        print(f"lipcast: the OBS overlay is off: {err}", file=sys.stderr)
        return None
    return overlay
