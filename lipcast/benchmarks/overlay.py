"""``lipcast bench overlay``: the persona on screen, measured in a real browser.

The real pipeline answers a streamed reply — a local OpenAI-compatible server (on 127.0.0.1)
writes it at 30 tokens a second — with eSpeak and the sprite's timeline through the memory
job queue and an in-process render worker, into the real overlay server; a real headless
Chromium (through Playwright, ``--chromium``) shows the overlay page as OBS would, with a
transparent background. One warm-up turn runs first; the figures are over ``--turns`` turns:

- ``first_frame_after_last_token_s`` (median): from the stand-in model writing the token that
  ends the first sentence to the page drawing that sentence's first talking frame (goal:
  at most 0.15 s);
- ``idle_talk_diff``: mean absolute RGBA difference (0-255) between a screenshot of the idle
  persona and one while it talks, with the head held still (``?motion=0``), outside the mouth
  and eye regions (goal: at most 2);
- ``background_alpha_zero``: share of the pixels outside the persona's silhouette that are
  fully transparent while it talks (goal: at least 0.99);
- ``sentence_gap_max_ms``: the longest silence between two sentences of a reply, on the
  page's audio clock (goal: at most 20).

Screenshots are taken with captions and the banner off: they measure the persona's drawing.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
from typing import TYPE_CHECKING, Any

import numpy as np

from lipcast.benchmarks.page import (
    CHROMIUM,
    log_length,
    overlay_page,
    reply_log,
    require_playwright,
    wait_logged,
)
from lipcast.benchmarks.standin_llm import StandInChatServer, tokenize
from lipcast.benchmarks.turn import REPLY, _espeak_sprite
from lipcast.wiring import (
    build_conversation,
    build_job_handler,
    persona_atlas,
    persona_from_settings,
)
from obs_overlay.server import OverlayServer
from obs_overlay.sink import OverlaySink
from pipeline.errors import LipcastError
from pipeline.jobs.queue.base import QueueOptions
from pipeline.jobs.queue.memory import MemoryJobQueue
from pipeline.jobs.worker import RenderWorker
from pipeline.services.llm import OpenAIChatLLM, RetryPolicy
from pipeline.utterance import Utterance

if TYPE_CHECKING:
    from lipcast.cli import Context
    from lipsync.atlas import Atlas

HELP = "the persona in a real browser: first frame after the token, idle vs talking (JSON)"
GOALS = {
    "first_frame_after_last_token_s": 0.15,
    "idle_talk_diff": 2.0,
    "background_alpha_zero": 0.99,
    "sentence_gap_max_ms": 20.0,
}
_FACE_MARGIN_PX = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens-per-s", type=float, default=30.0, help="model speed")
    parser.add_argument("--turns", type=int, default=3, help="measured turns (median kept)")
    parser.add_argument("--persona", help="persona that speaks (default: bot.toml)")
    parser.add_argument("--text", default=REPLY, help="the reply the model streams")
    parser.add_argument("--chromium", default=CHROMIUM, help="the Chromium executable to drive")


def run(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    require_playwright("overlay")
    return asyncio.run(_bench(args, context))


async def _bench(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    settings = _espeak_sprite(context.settings)
    persona = persona_from_settings(settings, args.persona)
    atlas = await asyncio.to_thread(persona_atlas, settings, persona)
    assert atlas is not None  # the sprite renderer always has one
    size = atlas.manifest["size"]
    chat = StandInChatServer(args.text, tokens_per_s=args.tokens_per_s, first_token_s=0.0)
    base_url = await chat.start()
    queue = MemoryJobQueue(QueueOptions(result_timeout_s=60.0))
    handler = build_job_handler(settings, context.secrets)
    worker = RenderWorker(queue, handler, concurrency=settings.worker.concurrency)
    worker_task = asyncio.create_task(worker.run(), name="bench-render-worker")
    llm = OpenAIChatLLM(
        base_url=base_url, model="bench", timeout_s=30.0, retry=RetryPolicy(retries=0)
    )
    overlay = OverlayServer(port=0, atlas=atlas, start_deadline_s=120.0)
    await overlay.start()
    conversation = build_conversation(
        settings,
        context.secrets,
        persona=persona,
        queue=queue,
        sinks=[OverlaySink(overlay)],
        llm=llm,
        memory=None,
        max_sentences=20,
        deadline_s=120.0,
        remember=False,
    )
    after_token: list[float] = []
    breakdowns: list[dict[str, float]] = []
    gaps_ms: list[float] = []
    shots: dict[str, np.ndarray] = {}
    try:
        url = f"{overlay.url}?motion=0&captions=0&banner=0"
        async with overlay_page(url, size=size, chromium=args.chromium) as page:
            await page.wait_for_timeout(200)
            shots["idle"] = _rgba(await page.screenshot(omit_background=True))
            for turn in range(args.turns + 1):  # the first one warms up
                first_wall, breakdown, gaps, talking = await _turn(
                    page, conversation, chat, turn, screenshot=turn == 1
                )
                if turn > 0:
                    after_token.append(first_wall)
                    breakdowns.append(breakdown)
                    gaps_ms.extend(gaps)
                if talking is not None:
                    shots["talking"] = talking
    finally:
        await conversation.close()
        worker.stop()
        await worker_task
        await queue.close()
        await llm.aclose()
        await handler.aclose()
        await overlay.stop()
        await chat.close()
    diff, face_diff, alpha_zero = _compare(shots["idle"], shots["talking"], atlas)
    figures: dict[str, Any] = {
        "first_frame_after_last_token_s": round(statistics.median(after_token), 3),
        "idle_talk_diff": round(diff, 3),
        "background_alpha_zero": round(alpha_zero, 4),
        "sentence_gap_max_ms": round(max(gaps_ms), 2) if gaps_ms else None,
        "first_frame_after_last_token_per_turn_s": [round(v, 3) for v in after_token],
        # Where that time went (medians): the token -> its job submitted -> the clip (speech
        # and timeline) back from the worker -> drawn on the page.
        "breakdown_s": {
            key: round(statistics.median(b[key] for b in breakdowns), 3)
            for key in ("token_to_submitted", "submitted_to_clip_ready", "clip_ready_to_drawn")
        },
        # Inside the mouth and eyes the two screenshots must differ: the talking one talks.
        "idle_talk_diff_in_face": round(face_diff, 3),
        "tokens_per_s": args.tokens_per_s,
        "tts": settings.tts.backend,
        "renderer": settings.render.renderer,
        "size": size,
        "turns": args.turns,
    }
    figures["goals"] = dict(GOALS)
    figures["met"] = (
        figures["first_frame_after_last_token_s"] <= GOALS["first_frame_after_last_token_s"]
        and figures["idle_talk_diff"] <= GOALS["idle_talk_diff"]
        and figures["background_alpha_zero"] >= GOALS["background_alpha_zero"]
        and (figures["sentence_gap_max_ms"] or 0.0) <= GOALS["sentence_gap_max_ms"]
    )
    return figures


async def _turn(
    page: Any, conversation: Any, chat: StandInChatServer, turn: int, *, screenshot: bool
) -> tuple[float, dict[str, float], list[float], np.ndarray | None]:
    """One reply on the page: the first frame after the last token, where that time went,
    the gaps between sentences, and a screenshot while it talks (when asked)."""
    log_before = await log_length(page)
    message = Utterance(platform="bench", channel="bench", user=f"viewer{turn}", text="hi")
    talking = None
    respond = asyncio.create_task(conversation.respond(message, "hi"), name="bench-overlay-turn")
    if screenshot:
        await wait_logged(page, log_before, "first-frame", timeout_s=60)
        await page.wait_for_timeout(300)
        talking = _rgba(await page.screenshot(omit_background=True))
    report = await respond
    if report.outcome != "completed":
        raise LipcastError(f"bench overlay turn {turn}: {report.outcome} {report.error}")
    entries = await reply_log(page, log_before)
    first_text = report.released[0]
    assert isinstance(chat.reply, str)  # one fixed reply, streamed for every turn
    ends_sentence = _token_ending(tokenize(chat.reply), first_text)
    first_frame = next(e for e in entries if e["event"] == "first-frame")
    plays = [e for e in entries if e["event"] == "play"]
    ends = [e for e in entries if e["event"] == "ended"]
    gaps = [
        (play["audioStart"] - end["audioEnd"]) * 1000
        for play, end in zip(plays[1:], ends, strict=False)
    ]
    token_wall = chat.sent_at[ends_sentence]
    drawn_wall = first_frame["wall"] / 1000
    t = report.timings
    # The turn's own clock starts at an unknown wall time; the token anchors it.
    start = token_wall - (t.first_sentence_last_token or 0.0)
    breakdown = {
        "token_to_submitted": (t.first_sentence or 0.0) - (t.first_sentence_last_token or 0.0),
        "submitted_to_clip_ready": (t.first_clip_ready or 0.0) - (t.first_sentence or 0.0),
        "clip_ready_to_drawn": drawn_wall - (start + (t.first_clip_ready or 0.0)),
    }
    return drawn_wall - token_wall, breakdown, gaps, talking


def _token_ending(tokens: list[str], sentence: str) -> int:
    """The index of the token that completes ``sentence`` at the start of the reply."""
    target = " ".join(sentence.split())
    text = ""
    for index, token in enumerate(tokens):
        text += token
        if len(" ".join(text.split())) >= len(target):
            return index
    return len(tokens) - 1


def _rgba(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as shot:
        return np.asarray(shot.convert("RGBA"), dtype=np.int16)


def _compare(idle: np.ndarray, talking: np.ndarray, atlas: Atlas) -> tuple[float, float, float]:
    """Idle vs talking outside the mouth and eyes, and inside them; the transparent share
    of the pixels outside the persona."""
    from PIL import Image

    with Image.open(io.BytesIO(atlas.png)) as sheet:
        x, y, w, h = atlas.manifest["base"]
        silhouette = np.asarray(sheet.convert("RGBA"))[y : y + h, x : x + w, 3] > 0
    face = np.zeros(silhouette.shape, bool)
    regions = atlas.manifest["regions"]
    m = _FACE_MARGIN_PX
    for rx, ry, rw, rh in [regions["mouth"], *regions["eyes"]]:
        face[max(0, ry - m) : ry + rh + m, max(0, rx - m) : rx + rw + m] = True
    change = np.abs(talking - idle)
    outside = ~silhouette
    alpha_zero = float((talking[..., 3][outside] == 0).mean())
    return float(change[~face].mean()), float(change[face].mean()), alpha_zero
