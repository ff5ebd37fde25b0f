"""``lipcast bench turn``: how soon the first clip of a streamed reply is ready.

A local OpenAI-compatible server (started here, on 127.0.0.1) streams a four-sentence reply at
30 tokens a second (about four characters a token). The real pipeline answers it: the openai
client, the sentence splitter, the safety checks, the memory job queue, an in-process render
worker with eSpeak and the sprite renderer (the configured size, fps and encoder settings), and
the in-order release of clips. One warm-up turn runs first (a running ``lipcast run`` is warm);
the figures are medians over ``--turns`` turns:

- ``first_clip_after_last_token_s``: from the arrival of the token that ended the first
  sentence to its clip being ready (target: at most 0.5 s);
- ``first_clip_share``: time to the first clip as a share of the time to the last one, both
  from the start of the turn (target: at most 0.3).
- ``first_frame_shown_s``: from the start of the turn to the overlay page, in a real headless
  Chromium as in OBS, drawing the reply's first talking frame; and
  ``first_frame_shown_after_last_token_s``, from the first sentence's last token to then.

The clips go where ``lipcast run`` sends them: to the overlay, which draws a sprite persona
from its speech and timeline (``first_clip_ready_s`` is when the first of those is ready), and
to a sink that keeps the MP4s (the clip folder's part). ``--no-page`` leaves the page out.

The same turns run a second time with the first sentence left whole (no early cut at a comma),
to show what that cut is worth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from typing import TYPE_CHECKING, Any

from lipcast.benchmarks.page import (
    CHROMIUM,
    log_length,
    overlay_page,
    reply_log,
    require_playwright,
)
from lipcast.benchmarks.standin_llm import StandInChatServer, tokenize
from lipcast.wiring import (
    build_conversation,
    build_job_handler,
    persona_atlas,
    persona_from_settings,
)
from obs_overlay.server import OverlayServer
from obs_overlay.sink import OverlaySink
from pipeline.clips import Clip
from pipeline.conversation.turns import ClipSink, TurnReport
from pipeline.jobs.queue.base import QueueOptions
from pipeline.jobs.queue.memory import MemoryJobQueue
from pipeline.jobs.worker import RenderWorker
from pipeline.services.llm import OpenAIChatLLM, RetryPolicy
from pipeline.utterance import Utterance

if TYPE_CHECKING:
    from lipcast.cli import Context
    from lipcast.config import Settings

HELP = "a streamed 4-sentence reply: how soon its first clip is ready, and shown (JSON)"

REPLY = (
    "Hey Ada, welcome back to the stream, it is great to see you in chat again tonight. "
    "We are about to start the final boss, so grab a snack and settle in. "
    "I have a really good feeling that this attempt will be the one that works. "
    "Keep the questions coming, and I will answer as many of them as I can!"
)
TARGET_AFTER_LAST_TOKEN_S = 0.5
TARGET_SHARE = 0.3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens-per-s", type=float, default=30.0, help="model speed")
    parser.add_argument("--first-token-ms", type=float, default=0.0, help="model latency")
    parser.add_argument("--turns", type=int, default=3, help="measured turns (median kept)")
    parser.add_argument("--persona", help="persona that speaks (default: bot.toml)")
    parser.add_argument("--text", default=REPLY, help="the reply the model streams")
    parser.add_argument("--chromium", default=CHROMIUM, help="the Chromium executable to drive")
    parser.add_argument(
        "--no-page",
        action="store_true",
        help="no overlay page in headless Chromium: no first_frame_shown figures",
    )


class _Clips(ClipSink):
    def __init__(self) -> None:
        self.clips: list[Clip] = []

    async def clip_ready(self, clip: Clip) -> bool:
        self.clips.append(clip)
        return True


def run(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    if not args.no_page:
        require_playwright("turn")
    return asyncio.run(_bench(args, context))


async def _bench(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    settings = _espeak_sprite(context.settings)
    server = StandInChatServer(
        args.text, tokens_per_s=args.tokens_per_s, first_token_s=args.first_token_ms / 1000
    )
    base_url = await server.start()
    try:
        figures: dict[str, Any] = {
            "reply_chars": len(args.text),
            "reply_tokens": len(tokenize(args.text)),
            "tokens_per_s": args.tokens_per_s,
            "first_token_ms": args.first_token_ms,
            "tts": settings.tts.backend,
            "renderer": settings.render.renderer,
            "size": settings.render.size,
            "fps": settings.render.fps,
            "turns": args.turns,
        }
        default = await _turns(
            args, context, settings, base_url, first_cut=True, page=not args.no_page
        )
        whole = await _turns(args, context, settings, base_url, first_cut=False, page=False)
    finally:
        await server.close()
    figures.update(default)
    figures["targets"] = {
        "first_clip_after_last_token_s": TARGET_AFTER_LAST_TOKEN_S,
        "first_clip_share": TARGET_SHARE,
        "met": default["first_clip_after_last_token_s"] <= TARGET_AFTER_LAST_TOKEN_S
        and default["first_clip_share"] <= TARGET_SHARE,
    }
    figures["first_sentence_left_whole"] = {
        key: whole[key]
        for key in (
            "first_clip_text",
            "first_clip_after_last_token_s",
            "first_clip_share",
            "first_clip_ready_s",
            "last_clip_ready_s",
        )
    }
    return figures


def _espeak_sprite(settings: Settings) -> Settings:
    """The configuration with eSpeak and the sprite renderer, whatever bot.toml says."""
    tts = settings.tts.model_copy(update={"backend": "espeak"})
    render = settings.render.model_copy(update={"renderer": "sprite"})
    return settings.model_copy(update={"tts": tts, "render": render})


async def _turns(
    args: argparse.Namespace,
    context: Context,
    settings: Settings,
    base_url: str,
    *,
    first_cut: bool,
    page: bool,
) -> dict[str, Any]:
    """``args.turns`` turns (after one to warm up) and their figures; with ``page``, shown by
    the overlay in headless Chromium too."""
    persona = persona_from_settings(settings, args.persona)
    queue = MemoryJobQueue(QueueOptions(result_timeout_s=60.0))
    handler = build_job_handler(settings, context.secrets)
    worker = RenderWorker(queue, handler, concurrency=settings.worker.concurrency)
    worker_task = asyncio.create_task(worker.run(), name="bench-render-worker")
    llm = OpenAIChatLLM(
        base_url=base_url, model="bench", timeout_s=30.0, retry=RetryPolicy(retries=0)
    )
    sink = _Clips()
    sinks: list[ClipSink] = [sink]
    overlay = None
    if page:
        atlas = await asyncio.to_thread(persona_atlas, settings, persona)
        overlay = OverlayServer(port=0, atlas=atlas, start_deadline_s=120.0)
        await overlay.start()
        sinks.append(OverlaySink(overlay))
    overrides: dict[str, Any] = {"max_sentences": 20, "deadline_s": 120.0, "remember": False}
    if not first_cut:
        overrides["first_sentence_soft_max_chars"] = settings.chat.sentence_soft_max_chars
    conversation = build_conversation(
        settings,
        context.secrets,
        persona=persona,
        queue=queue,
        sinks=sinks,
        llm=llm,
        memory=None,
        **overrides,
    )
    reports: list[TurnReport] = []
    shown: list[float] = []  # per turn: its start to the page's first talking frame
    try:
        async with contextlib.AsyncExitStack() as stack:
            shows = None
            if overlay is not None:
                url = f"{overlay.url}?captions=0&banner=0"
                size = settings.render.size
                shows = await stack.enter_async_context(
                    overlay_page(url, size=size, chromium=args.chromium)
                )
            for turn in range(args.turns + 1):  # the first one warms up
                message = Utterance(
                    platform="bench", channel="bench", user=f"viewer{turn}", text="hi"
                )
                sink.clips.clear()
                since = await log_length(shows) if shows is not None else 0
                started = time.time()
                report = await conversation.respond(message, "hi")
                if report.outcome != "completed":
                    raise RuntimeError(f"bench turn {turn}: {report.outcome} {report.error}")
                if shows is not None:
                    entries = await reply_log(shows, since)
                    first = next(e for e in entries if e["event"] == "first-frame")
                    if turn > 0:
                        shown.append(first["wall"] / 1000 - started)
                if turn > 0:
                    reports.append(report)
    finally:
        if overlay is not None:
            await overlay.stop()
        await conversation.close()
        worker.stop()
        await worker_task
        await queue.close()
        await llm.aclose()
        await handler.aclose()
    return _summary(reports, sink.clips, shown)


def _median(values: list[float | None]) -> float:
    present = [value for value in values if value is not None]
    return round(statistics.median(present), 3) if present else float("nan")


def _summary(
    reports: list[TurnReport], last_clips: list[Clip], shown: list[float]
) -> dict[str, Any]:
    timings = [report.timings for report in reports]
    shown_after = [
        s - t.first_sentence_last_token
        for s, t in zip(shown, timings, strict=False)
        if t.first_sentence_last_token is not None
    ]
    after = [
        t.first_clip_ready - t.first_sentence_last_token
        for t in timings
        if t.first_clip_ready is not None and t.first_sentence_last_token is not None
    ]
    share = [
        t.first_clip_ready / t.last_clip_ready
        for t in timings
        if t.first_clip_ready is not None and t.last_clip_ready
    ]
    return {
        "clips": len(last_clips),
        "first_clip_text": last_clips[0].text if last_clips else "",
        "first_clip_audio_s": round(last_clips[0].duration_s, 2) if last_clips else None,
        "reply_audio_s": round(sum(clip.duration_s for clip in last_clips), 2),
        "llm_first_token_s": _median([t.llm_first_token for t in timings]),
        "first_sentence_last_token_s": _median([t.first_sentence_last_token for t in timings]),
        "first_sentence_submitted_s": _median([t.first_sentence for t in timings]),
        "first_clip_tts_s": _median([t.first_clip_tts for t in timings]),
        "first_clip_render_s": _median([t.first_clip_render for t in timings]),
        "first_clip_encode_s": _median([t.first_clip_encode for t in timings]),
        "first_clip_queue_wait_s": _median([t.job_queue_wait for t in timings]),
        "first_clip_ready_s": _median([t.first_clip_ready for t in timings]),
        "last_clip_ready_s": _median([t.last_clip_ready for t in timings]),
        "first_clip_after_last_token_s": _median(list(after)),
        "first_clip_after_last_token_max_s": round(max(after), 3) if after else None,
        "first_clip_share": _median(list(share)),
        "first_frame_shown_s": _median(list(shown)) if shown else None,
        "first_frame_shown_after_last_token_s": _median(list(shown_after)) if shown else None,
        "per_turn": [
            {
                "first_clip_after_last_token_s": round(a, 3),
                "first_clip_share": round(s, 3),
            }
            for a, s in zip(after, share, strict=False)
        ],
    }
