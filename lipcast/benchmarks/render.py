"""``lipcast bench render``: how much faster than real time a reply is spoken and rendered.

For a reply of about ten seconds with the configured persona, TTS backend and renderer, it
times text-to-speech, frame rendering and encoding separately and then end to end, and reports
each as a real-time factor (seconds of clip per second of work; 10 means ten times faster than
real time). By default the process is pinned to one CPU core, and OpenCV and x264 use one thread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from lipcast.wiring import build_clip_renderer, persona_from_settings
from lipsync.avatar import hex_to_rgb
from lipsync.encode import encode_mp4_bytes
from pipeline.audio import AudioChunk

if TYPE_CHECKING:
    from lipcast.cli import Context

HELP = "real-time factors of TTS, rendering, encoding and end to end"

REPLY = (
    "Hello chat, and welcome back to the stream! Today we are trying something new: "
    "a talking co-host that answers your questions live. Ask me anything in the chat, "
    "and I will do my best to keep up with you."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage (median is kept)")
    parser.add_argument("--text", default=REPLY, help="the reply to speak (about 10 s by default)")
    parser.add_argument("--persona", help="persona to render (default: bot.toml)")
    parser.add_argument(
        "--all-cores", action="store_true", help="do not pin the process to one CPU core"
    )


def _pin_to_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def run(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    import cv2

    core = None if args.all_cores else _pin_to_one_core()
    if core is not None:
        cv2.setNumThreads(1)
    persona = persona_from_settings(context.settings, args.persona)
    clips = build_clip_renderer(context.settings, context.secrets)
    avatar = clips.avatar(persona)
    bg = hex_to_rgb(persona.spec.avatar.background)
    renderer = clips.renderer
    started = time.perf_counter()  # avatar preparation happens once per avatar; time it apart
    list(renderer.render(np.zeros(1600, np.float32), 16000, avatar, background=bg))
    prepare_s = time.perf_counter() - started

    async def speak() -> AudioChunk:
        return await clips.speak(args.text, persona)

    tts_times: list[float] = []
    render_times: list[float] = []
    encode_times: list[float] = []
    total_times: list[float] = []
    audio: AudioChunk | None = None
    for _ in range(args.repeat):
        started = time.perf_counter()
        audio = asyncio.run(speak())
        tts_times.append(time.perf_counter() - started)

        started = time.perf_counter()
        frames = list(renderer.render(audio.samples, audio.sample_rate, avatar, background=bg))
        render_times.append(time.perf_counter() - started)

        started = time.perf_counter()
        encode_mp4_bytes(frames, audio.samples, audio.sample_rate, clips.encode)
        encode_times.append(time.perf_counter() - started)
        del frames

        started = time.perf_counter()
        asyncio.run(clips.render(args.text, persona))
        total_times.append(time.perf_counter() - started)
    assert audio is not None
    duration = audio.duration_s

    def factor(times: list[float]) -> float:
        return round(duration / statistics.median(times), 1)

    return {
        "benchmark": "render",
        "clip_seconds": round(duration, 2),
        "frames": round(duration * renderer.fps),
        "size": f"{renderer.size}x{renderer.size}",
        "persona": persona.id,
        "tts": context.settings.tts.backend,
        "renderer": renderer.name,
        "encoder": f"libx264 {clips.encode.preset} crf {clips.encode.crf} + aac",
        "cores": 1 if core is not None else os.cpu_count(),
        "repeat": args.repeat,
        "avatar_prepare_seconds": round(prepare_s, 3),
        "realtime_factor": {
            "tts": factor(tts_times),
            "render": factor(render_times),
            "encode": factor(encode_times),
            "end_to_end": factor(total_times),
        },
        "seconds_median": {
            "tts": round(statistics.median(tts_times), 3),
            "render": round(statistics.median(render_times), 3),
            "encode": round(statistics.median(encode_times), 3),
            "end_to_end": round(statistics.median(total_times), 3),
        },
    }
