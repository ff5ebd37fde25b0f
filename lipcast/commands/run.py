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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bots.base import AdapterUnavailable, ChatAdapter
from lipcast.clip_folder import ClipFolderLimits, prune_clips
from lipcast.wiring import (
    build_adapter,
    build_conversation,
    build_job_handler,
    build_job_queue,
    build_llm,
    build_overlay_server,
    build_safety,
    build_viewer_memory,
    enabled_adapters,
    persona_from_settings,
    routes_from_settings,
)
from obs_overlay.sink import OverlaySink
from personas import Persona
from pipeline.clips import Clip
from pipeline.conversation.safety import load_word_data
from pipeline.conversation.turns import ClipSink, Conversation
from pipeline.errors import ConfigError, LipcastError, PersonaError
from pipeline.jobs.worker import RenderWorker
from pipeline.routing import Route, Router, Stage
from pipeline.sinks.queued import QueuedSink
from pipeline.sinks.replies import ReplySink
from pipeline.utterance import Utterance

if TYPE_CHECKING:
    from lipcast.cli import Context
    from lipcast.config import Secrets, Settings
    from obs_overlay.events import PlaybackReport
    from obs_overlay.server import OverlayServer
    from pipeline.conversation.safety import ModerationLayer

HELP = "run the persona: chat in the terminal, lip-synced clips out (files, OBS overlay)"
DRAIN_GRACE_S = 5.0  # after the chat ends, how long waiting replies get beyond their deadlines
ADAPTER_STOP_S = 5.0  # how long a chat adapter gets to stop before it is cancelled
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # an adapter that drops: waits between

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--persona", help="persona name or folder (default: bot.toml)")
    parser.add_argument("-l", "--language", help="language for personas that speak several")
    parser.add_argument("--user", help="your chat name in the console (default: [console] user)")
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

    def __init__(
        self, folder: Path, *, out: TextIO | None = None, limits: ClipFolderLimits | None = None
    ) -> None:
        self.folder = folder
        self._out = out or sys.stdout
        self._limits = limits  # None: keep every clip
        self.written: list[Path] = []

    async def clip_ready(self, clip: Clip) -> bool:
        path = self.folder / f"{clip.turn.turn_id}-{clip.seq:02d}.mp4"
        try:
            await asyncio.to_thread(_write_clip, path, clip.media, self._limits)
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


def _write_clip(path: Path, media: bytes, limits: ClipFolderLimits | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # back, should it have gone while streaming
    try:
        path.write_bytes(media)
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # no half-written clip left behind
        raise
    if limits is not None:
        prune_clips(path.parent, limits)


# -- the command ---------------------------------------------------------------------------


def run(args: argparse.Namespace, context: Context) -> int:
    settings, secrets = context.settings, context.secrets
    if args.user:
        settings = settings.model_copy(
            update={"console": settings.console.model_copy(update={"user": args.user})}
        )
    routes = routes_from_settings(settings, persona=args.persona)
    if args.language:
        routes = [replace(route, language=args.language) for route in routes]
    # The show's persona, loaded at start-up so a wrong name fails here, not on a message.
    persona = persona_from_settings(settings, args.persona, args.language)
    output = prepare_output_dir(settings.output.dir)  # before the loop: file work, at start-up
    logging.getLogger("lipcast.turns").setLevel(logging.INFO)  # one line per turn, always
    return asyncio.run(_serve(args, settings, secrets, persona, routes, output))


async def _serve(
    args: argparse.Namespace,
    settings: Settings,
    secrets: Secrets,
    persona: Persona,
    routes: list[Route],
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
        adapters = _build_adapters(settings, secrets)
        if not adapters:
            raise ConfigError(
                "no chat adapter can start (see above); enable one in bot.toml ([console], "
                "[twitch] or [discord]: enabled = true) or fix what is reported"
            )
        reply_sinks = [
            QueuedSink(ReplySink(adapter), name=f"replies-{adapter.platform}")
            for adapter in adapters
        ]
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
        overlay: OverlayServer | None = None
        overlay_line = "overlay off"
        stage = _ShowStage()
        if settings.overlay.enabled and not args.no_overlay:
            overlay = await _start_overlay(settings, secrets, persona, stage.clip_shown)
            if overlay is not None:
                stack.push_async_callback(overlay.stop)
                overlay_line = f"OBS Browser Source: {overlay.url}"
        # The show's own sinks; every conversation shares the reply sinks. All are closed
        # (what they hold handed on) after the conversations and before the overlay stops.
        limits = ClipFolderLimits(
            max_clips=settings.output.max_clips, max_bytes=settings.output.max_mb * 1_000_000
        )
        show_sinks: list[QueuedSink] = [
            QueuedSink(FolderSink(output, limits=limits), name="clip-folder")
        ]
        if overlay is not None:
            show_sinks.append(QueuedSink(OverlaySink(overlay), name="overlay", on_stop=stage.stop))
        for sink in [*reply_sinks, *show_sinks]:
            stack.push_async_callback(sink.aclose)

        # What the show says, and what is said in Twitch chat, passes the channel's AutoMod
        # too when [twitch] automod_check is on.
        automod = [
            layer
            for adapter in adapters
            if (layer := getattr(adapter, "automod_check", lambda: None)()) is not None
        ]

        def automod_for(place: Utterance, stage_name: Stage | None = None) -> list[ModerationLayer]:
            if stage_name is None:
                found = router.route_for(place)
                stage_name = found[1].stage if found is not None else None
            return automod if place.platform == "twitch" or stage_name == "stream" else []

        def make_conversation(
            speaker: Persona, stage_name: Stage, place: Utterance
        ) -> Conversation:
            sinks: list[ClipSink] = list(reply_sinks)
            if stage_name == "stream":
                sinks += show_sinks
            conversation = build_conversation(
                settings,
                secrets,
                persona=speaker,
                queue=queue,
                sinks=sinks,
                llm=llm,
                memory=memory,
                platform=place.platform,
                channel=place.channel,
                reply_layers=automod_for(place, stage_name),
            )
            if stage_name == "stream":
                stage.conversation = conversation
            return conversation

        router = Router(
            routes=routes,
            load_persona=lambda name, language: persona_from_settings(settings, name, language),
            make_conversation=make_conversation,
            make_safety=lambda speaker, place: build_safety(
                settings,
                secrets,
                speaker,
                platform=place.platform,
                channel=place.channel,
                reply_layers=automod_for(place),
            ),
        )
        stack.push_async_callback(_close_router, router)
        # The safety word lists load once per process (seconds): off the event loop, now.
        await asyncio.to_thread(load_word_data, settings.safety.default_lists)
        show = await router.start()
        workers = (
            "an in-process render worker"
            if in_process
            else f"render workers on RabbitMQ queue {settings.queue.name!r} (run `lipcast worker`)"
        )
        if show is not None:
            print(f"lipcast: {show.describe()}", file=sys.stderr)
        print(
            f"lipcast: {workers}; clips go to {output}/; {overlay_line}",
            file=sys.stderr,
            flush=True,
        )
        for route in routes:
            log.info("route: %s", route.describe())
        await _run_adapters(adapters, router, stage)
        await _drain(router, settings)
    return 0


class _ShowStage:
    """The stream stage's conversation, for the overlay's callbacks (which exist before it)."""

    def __init__(self) -> None:
        self.conversation: Conversation | None = None

    def clip_shown(self, turn_id: str, seq: int) -> None:
        if self.conversation is not None:
            self.conversation.clip_shown(turn_id, seq)

    def stop(self, turn_id: str) -> None:
        if self.conversation is not None:
            self.conversation.skip(turn_id)


def _build_adapters(settings: Settings, secrets: Secrets) -> list[ChatAdapter]:
    """Every enabled adapter that can be built; one that cannot is reported in one line."""
    adapters = []
    for name in enabled_adapters(settings):
        try:
            adapters.append(build_adapter(name, settings, secrets))
        except LipcastError as err:
            print(f"lipcast: the {name} adapter is off: {err}", file=sys.stderr)
    return adapters


async def _run_adapters(adapters: list[ChatAdapter], router: Router, stage: _ShowStage) -> None:
    """Run every adapter in its own task until one that ends the run ends (the console's
    /quit), or every adapter has ended for good; should the show's conversation stop on its
    own, stop the adapters and raise :class:`LipcastError`."""
    tasks = {
        asyncio.create_task(_supervise(adapter, router), name=f"adapter-{adapter.platform}"): (
            adapter
        )
        for adapter in adapters
    }
    show_task = router.stream_task
    watched: set[asyncio.Task[Any]] = set(tasks)
    if show_task is not None:
        watched.add(show_task)
    try:
        while True:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if show_task is not None and show_task in done:
                raise _turns_ended(show_task)
            for task in done:
                watched.discard(task)
                adapter = tasks[task]
                if not task.cancelled() and task.exception() is not None:
                    log.error("the %s adapter stopped: %s", adapter.platform, task.exception())
                if adapter.ends_run:
                    return
            if not watched - {show_task}:
                raise LipcastError(
                    "every chat adapter has stopped (see above): nothing is left to answer"
                )
    finally:
        await asyncio.gather(*(adapter.stop() for adapter in adapters), return_exceptions=True)
        pending = [task for task in tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=ADAPTER_STOP_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _supervise(adapter: ChatAdapter, router: Router) -> None:
    """Run one adapter; restart it with backoff when it drops (unless its library reconnects
    by itself or its end ends the run). A start that cannot succeed is reported once."""
    delays = iter(RESTART_BACKOFF_S)
    delay = 0.0
    while True:
        try:
            await adapter.run(router)
        except AdapterUnavailable as err:
            print(f"lipcast: the {adapter.platform} adapter is off: {err}", file=sys.stderr)
            return
        except Exception as err:
            delay = next(delays, RESTART_BACKOFF_S[-1])
            log.debug("the %s adapter failed", adapter.platform, exc_info=True)
            log.warning(
                "the %s adapter failed (%s: %s); restarting in %.0f s",
                adapter.platform,
                type(err).__name__,
                err,
                delay,
            )
        else:
            if adapter.ends_run or adapter.reconnects_itself:
                return
            delay = next(delays, RESTART_BACKOFF_S[-1])
            log.warning(
                "the %s adapter disconnected; restarting in %.0f s", adapter.platform, delay
            )
        await asyncio.sleep(delay)


async def _close_router(router: Router) -> None:
    await router.close()


async def _drain(router: Router, settings: Settings) -> None:
    """The chat ended: let waiting replies finish (they are bounded by their deadlines)."""
    limit = settings.chat.deadline_s * (router.pending + 1) + DRAIN_GRACE_S
    try:
        async with asyncio.timeout(limit):
            await router.wait_idle()
    except TimeoutError:
        log.warning("stopping with %d replies unanswered", router.pending)


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
    settings: Settings, secrets: Secrets, persona: Persona, clip_shown: Callable[[str, int], None]
) -> OverlayServer | None:
    """The overlay server as ``[overlay]`` says, started. If it cannot start (its port is
    taken), lipcast stops with the reason: running on without it is easy to miss, so that
    takes an explicit choice (``--no-overlay`` or ``[overlay] enabled = false``).
    ``clip_shown(turn_id, seq)`` hears each clip the page starts playing."""

    def on_playback(report: PlaybackReport) -> None:
        if report.kind == "started" and report.turn_id:
            clip_shown(report.turn_id, report.seq)

    try:
        overlay = build_overlay_server(
            settings,
            secrets,
            idle_image=persona.avatar_path,
            on_playback=on_playback,
            persona=persona,
        )
        await overlay.start()
    except (LipcastError, PersonaError) as err:
        raise ConfigError(
            f"the OBS overlay did not start: {err}; or run without it: --no-overlay, or "
            "[overlay] enabled = false"
        ) from err
    return overlay
