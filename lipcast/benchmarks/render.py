"""``lipcast bench render``: how much faster than real time a reply is spoken and rendered.

For a reply of about ten seconds with the configured persona, TTS backend and renderer, it
times text-to-speech, frame rendering and encoding separately and then end to end, and reports
each as a real-time factor (seconds of clip per second of work; 10 means ten times faster than
real time), end to end also by the CPU time the process used. By default the process is pinned
to one CPU core, and OpenCV and x264 use one thread.

So that speed is not bought with looks, it also reports the clip's size and its quality (PSNR
of the decoded video against the frames that went in, in dB), and encodes the same frames with
the settings lipcast used before (x264 ``veryfast``, FFmpeg's default AAC coder) in the same
run, for a ratio that the machine's load does not skew.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from lipcast.wiring import build_clip_renderer, persona_from_settings
from lipsync.avatar import hex_to_rgb
from lipsync.encode import EncodeOptions, encode_mp4_bytes
from lipsync.renderer import Frame, frames_for_encoder
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


def _psnr(clip: bytes, frames: Sequence[Frame]) -> float:
    """Mean PSNR (dB) of the clip's decoded luma and chroma against the frames encoded."""
    import av
    import cv2

    scores = []
    with av.open(io.BytesIO(clip), mode="r") as container:
        for decoded, frame in zip(container.decode(video=0), frames, strict=False):
            got = decoded.to_ndarray(format="yuv420p").astype(np.float32)
            want = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).astype(np.float32)
            mse = max(float(np.mean((got - want) ** 2)), 1e-6)
            scores.append(10 * math.log10(255.0**2 / mse))
    return round(statistics.fmean(scores), 2)


def _encode_timed(
    frames: Sequence[Frame], audio: AudioChunk, options: EncodeOptions
) -> tuple[float, bytes]:
    started = time.perf_counter()
    clip = encode_mp4_bytes(frames, audio.samples, audio.sample_rate, options)
    return time.perf_counter() - started, clip


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
    before_times: list[float] = []
    total_times: list[float] = []
    total_cpu: list[float] = []
    audio: AudioChunk | None = None
    clip = before = b""
    frames: list[Frame] = []
    previous = replace(clips.encode, preset="veryfast", audio_coder="twoloop")
    for _ in range(args.repeat):
        started = time.perf_counter()
        audio = asyncio.run(speak())
        tts_times.append(time.perf_counter() - started)

        started = time.perf_counter()  # the frames as the chain makes them for the encoder
        frames = list(
            frames_for_encoder(renderer, audio.samples, audio.sample_rate, avatar, background=bg)
        )
        render_times.append(time.perf_counter() - started)

        seconds, clip = _encode_timed(frames, audio, clips.encode)
        encode_times.append(seconds)
        seconds, before = _encode_timed(frames, audio, previous)
        before_times.append(seconds)

        started, cpu = time.perf_counter(), time.process_time()
        asyncio.run(clips.render(args.text, persona))
        total_times.append(time.perf_counter() - started)
        total_cpu.append(time.process_time() - cpu)
    assert audio is not None
    duration = audio.duration_s
    # the pictures as RGB, to measure the clips against
    frames = list(renderer.render(audio.samples, audio.sample_rate, avatar, background=bg))
    video_kb = round((len(clip) - _audio_bytes(clip)) / 1024)
    before_kb = round((len(before) - _audio_bytes(before)) / 1024)

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
        "encoder": _describe(clips.encode),
        "cores": 1 if core is not None else os.cpu_count(),
        "repeat": args.repeat,
        "avatar_prepare_seconds": round(prepare_s, 3),
        "realtime_factor": {
            "tts": factor(tts_times),
            "render": factor(render_times),
            "encode": factor(encode_times),
            "end_to_end": factor(total_times),
            # by the CPU time the process used: what the work costs, whatever else the
            # machine was doing on the same core meanwhile
            "end_to_end_cpu": factor(total_cpu),
        },
        "seconds_median": {
            "tts": round(statistics.median(tts_times), 3),
            "render": round(statistics.median(render_times), 3),
            "encode": round(statistics.median(encode_times), 3),
            "end_to_end": round(statistics.median(total_times), 3),
        },
        "quality": {"video_kb": video_kb, "psnr_db": _psnr(clip, frames)},
        "previous_encoder": {
            "encoder": _describe(previous),
            "realtime_factor_encode": factor(before_times),
            "video_kb": before_kb,
            "psnr_db": _psnr(before, frames),
            "encode_speedup": round(
                statistics.median(before_times) / statistics.median(encode_times), 2
            ),
        },
    }


def _describe(options: EncodeOptions) -> str:
    return f"libx264 {options.preset} crf {options.crf} + aac ({options.audio_coder})"


def _audio_bytes(clip: bytes) -> int:
    """Bytes of the clip's audio packets."""
    import av

    with av.open(io.BytesIO(clip), mode="r") as container:
        return sum(int(packet.size) for packet in container.demux(audio=0))
