"""``lipcast run``: the persona live. Chat in, lip-synced clips out.

The embedded default is one process: the ``console`` chat adapter (type lines in the
terminal), the conversation pipeline, the ``memory`` job queue and a render worker in the same
process. Finished clips are written to ``[output] dir`` and reported, and shown by the OBS
overlay (``[overlay]``, when enabled). With ``[queue] backend = "rabbitmq"`` the same command
submits its render jobs to the broker, where ``lipcast worker`` processes on any machine take
them. Without ``[llm]`` the persona reads chat aloud; start-up says which mode is active.

Start-up checks what bot.toml says before anything starts: the persona, ``[output] dir``, the
model, safety and chat settings. Only then is the viewer memory opened, the job queue connected
and the overlay started. The parts are built by :mod:`lipcast.wiring` (as ``lipcast bench
turn`` builds them); this module holds the sinks and the serving loop. Should the task that
answers the chat ever end on its own, the command exits with a one-line error instead of
taking messages it would never answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bots.base import ChatAdapter
from bots.console import ConsoleAdapter
from lipcast.wiring import (
    build_conversation,
    build_job_handler,
    build_job_queue,
    build_llm,
    build_overlay_server,
    build_viewer_memory,
    persona_from_settings,
)
from personas import Persona
from pipeline.clips import Clip, Reply, TurnInfo
from pipeline.conversation.turns import ClipSink, Conversation, TurnReport
from pipeline.errors import ConfigError, LipcastError, PersonaError
from pipeline.jobs.worker import RenderWorker

if TYPE_CHECKING:
    from lipcast.cli import Context
    from lipcast.config import Secrets, Settings
    from obs_overlay.server import OverlayServer

HELP = "run the persona: chat in the terminal, lip-synced clips out (files, OBS overlay)"
DRAIN_GRACE_S = 5.0  # after the chat ends, how long waiting replies get beyond their deadlines
ADAPTER_STOP_S = 5.0  # how long a chat adapter gets to stop before it is cancelled

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--persona", help="persona name or folder (default: bot.toml)")
    parser.add_argument("-l", "--language", help="language for personas that speak several")
    parser.add_argument("--user", default="viewer", help="your chat name in the console")
    parser.add_argument(
        "--no-overlay", action="store_true", help="do not serve the OBS overlay page"
    )


def prepare_output_dir(folder: Path) -> Path:
    """``[output] dir``, created if needed and checked writable; ConfigError (naming the key,
    the folder and the reason) if clips cannot be written there."""
    folder = folder.expanduser()
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lipcast-write-check-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"[output] dir = {str(folder)!r}: clips cannot be written there "
            f"({err.strerror or err}); name a folder lipcast may write to"
        ) from err
    return folder


# -- sinks ---------------------------------------------------------------------------------


class FolderSink(ClipSink):
    """Writes each clip to ``folder/<turn>-<seq>.mp4`` and reports it.

    A clip that cannot be written is logged in one line and skipped; the turn goes on (the
    overlay and the chat still get it).
    """

    def __init__(self, folder: Path, *, out: TextIO | None = None) -> None:
        self.folder = folder
        self._out = out or sys.stdout
        self.written: list[Path] = []

    async def clip_ready(self, clip: Clip) -> bool:
        path = self.folder / f"{clip.turn.turn_id}-{clip.seq:02d}.mp4"
        try:
            await asyncio.to_thread(_write_clip, path, clip.media)
        except OSError as err:
            log.warning(
                "clip %s not written to [output] dir %s: %s",
                path.name,
                self.folder,
                err.strerror or err,
            )
            return True
        self.written.append(path)
        print(f"  {path} ({clip.duration_s:.1f} s): {clip.text}", file=self._out, flush=True)
        return True


def _write_clip(path: Path, media: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # back, should it have gone while streaming
    try:
        path.write_bytes(media)
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # no half-written clip left behind
        raise


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
            reply = Reply(
                utterance=turn.utterance,
                turn_id=turn.turn_id,
                text=report.spoken_text,
                persona_name=turn.persona_name,
                outcome=report.outcome,
            )
            await self.adapter.deliver(reply)


# -- the command ---------------------------------------------------------------------------


def run(args: argparse.Namespace, context: Context) -> int:
    settings, secrets = context.settings, context.secrets
    persona = persona_from_settings(settings, args.persona, args.language)
    output = prepare_output_dir(settings.output.dir)  # before the loop: file work, at start-up
    logging.getLogger("lipcast.turns").setLevel(logging.INFO)  # one line per turn, always
    return asyncio.run(_serve(args, settings, secrets, persona, output))


async def _serve(
    args: argparse.Namespace,
    settings: Settings,
    secrets: Secrets,
    persona: Persona,
    output: Path,
) -> int:
    async with contextlib.AsyncExitStack() as stack:
        # Build everything bot.toml describes first: a wrong setting fails here, before the
        # memory file is created or the broker is connected.
        llm = build_llm(settings, secrets)
        if llm is not None:
            stack.push_async_callback(llm.aclose)
        memory = build_viewer_memory(settings)
        queue = build_job_queue(settings, secrets, connection_name="lipcast run")
        adapter = ConsoleAdapter(user=args.user, persona_name=persona.name)
        conversation = build_conversation(
            settings,
            secrets,
            persona=persona,
            queue=queue,
            sinks=[FolderSink(output), ChatSink(adapter)],
            llm=llm,
            memory=memory,
        )
        stack.push_async_callback(conversation.safety.aclose)
        in_process = settings.queue.backend == "memory"
        handler = build_job_handler(settings, secrets, personas=[persona]) if in_process else None
        if handler is not None:
            stack.push_async_callback(handler.aclose)

        # Then open and connect.
        if memory is not None:
            stack.push_async_callback(memory.close)
            await memory.open()
        await queue.start()
        stack.push_async_callback(queue.close)
        if handler is not None:
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
        overlay_line = "overlay off"
        if settings.overlay.enabled and not args.no_overlay:
            overlay = await _start_overlay(settings, secrets, persona)
            if overlay is not None:
                stack.push_async_callback(overlay.stop)
                conversation.sinks.append(OverlaySink(overlay))
                overlay_line = f"OBS Browser Source: {overlay.url}"
        workers = (
            "an in-process render worker"
            if in_process
            else f"render workers on RabbitMQ queue {settings.queue.name!r} (run `lipcast worker`)"
        )
        print(f"lipcast: {conversation.describe()}", file=sys.stderr)
        print(
            f"lipcast: {workers}; clips go to {output}/; {overlay_line}",
            file=sys.stderr,
            flush=True,
        )
        turns = asyncio.create_task(conversation.run(), name="lipcast-conversation")
        try:
            await _chat_while_answering(adapter, conversation, turns)
            await _drain(conversation, settings, turns)
        finally:
            await conversation.close()
            await asyncio.gather(turns, return_exceptions=True)
    return 0


async def _chat_while_answering(
    adapter: ChatAdapter, conversation: Conversation, turns: asyncio.Task[None]
) -> None:
    """Run the chat adapter until it ends; should ``turns`` (the task answering the chat) end
    first, stop the adapter and raise :class:`LipcastError`: messages nobody would answer are
    not taken."""
    chat = asyncio.create_task(adapter.run(conversation), name="lipcast-chat-adapter")
    await _unless_turns_end(chat, turns, stop=adapter.stop)


async def _drain(conversation: Conversation, settings: Settings, turns: asyncio.Task[None]) -> None:
    """The chat ended: let waiting replies finish (they are bounded by their deadlines)."""
    limit = settings.chat.deadline_s * (conversation.pending + 1) + DRAIN_GRACE_S
    idle = asyncio.create_task(conversation.wait_idle(), name="lipcast-drain")
    try:
        async with asyncio.timeout(limit):
            await _unless_turns_end(idle, turns)
    except TimeoutError:
        log.warning("stopping with %d replies unanswered", conversation.pending)


async def _unless_turns_end(
    work: asyncio.Task[None],
    turns: asyncio.Task[None],
    *,
    stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Wait for ``work``; if ``turns`` ends first, end ``work`` (``stop`` it, or cancel it)
    and raise :class:`LipcastError` saying why the conversation stopped."""
    try:
        await asyncio.wait({work, turns}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            work.result()
            return
        if stop is not None:
            await stop()
            await asyncio.wait({work}, timeout=ADAPTER_STOP_S)
    finally:
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    raise _turns_ended(turns)


def _turns_ended(turns: asyncio.Task[None]) -> LipcastError:
    """The one-line error for a conversation task that ended while the chat went on."""
    if turns.cancelled():
        why = "it was cancelled"
    elif (err := turns.exception()) is not None:
        log.debug("the conversation task failed", exc_info=err)
        why = f"{type(err).__name__}: {err}; run with -vv for the traceback"
    else:
        why = "it returned early"
    return LipcastError(
        f"the conversation stopped answering chat ({why}); lipcast run stops too, please "
        "report this"
    )


async def _start_overlay(
    settings: Settings, secrets: Secrets, persona: Persona
) -> OverlayServer | None:
    """The overlay server as ``[overlay]`` says, started; None (with a warning) if it cannot."""
    try:
        overlay = build_overlay_server(settings, secrets, idle_image=persona.avatar_path)
        await overlay.start()
    except (LipcastError, PersonaError) as err:
        print(f"lipcast: the OBS overlay is off: {err}", file=sys.stderr)
        return None
    return overlay
