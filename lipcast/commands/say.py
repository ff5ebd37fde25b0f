"""``lipcast say``: render one talking-head clip of a persona speaking a text."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lipcast.wiring import build_clip_renderer, persona_from_settings
from pipeline.conversation.text import check_speakable
from pipeline.errors import InputError

if TYPE_CHECKING:
    from lipcast.cli import Context
    from personas import Persona
    from pipeline.jobs.render import ClipRenderer, Progress, RenderedClip

HELP = "render a lip-synced clip of a persona saying a text"
PROGRESS_AFTER_FRAMES = 250  # show a progress bar for clips longer than about 10 s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help='what to say, e.g. "Hello chat"; "-" reads standard input')
    parser.add_argument("-p", "--persona", help="persona name or folder (default: bot.toml)")
    parser.add_argument("-l", "--language", help="language for personas that speak several")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("lipcast-say.mp4"), help="MP4 file to write"
    )


def _check_output(path: Path) -> None:
    if path.suffix.lower() != ".mp4":
        raise InputError(f"{path}: the output must be an .mp4 file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name ending in .mp4")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"{path}: the folder {folder} does not exist")
    try:  # find out now, not after the render, that the folder takes no files
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InputError(f"{path}: cannot write there: {err.strerror or err}") from err


def run(args: argparse.Namespace, context: Context) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    text = check_speakable(text, max_chars=context.settings.limits.max_text_chars)
    output: Path = args.output
    _check_output(output)
    persona = persona_from_settings(context.settings, args.persona, args.language)
    clip_renderer = build_clip_renderer(context.settings, context.secrets)
    clip_renderer.avatar(persona)  # a bad avatar fails before any synthesis

    from tqdm import tqdm

    with tqdm(
        total=None, unit="frame", desc="rendering", leave=False, disable=None, delay=0.5
    ) as bar:

        def progress(done: int, total: int) -> None:
            if total < PROGRESS_AFTER_FRAMES:
                return
            bar.total = total
            bar.update(done - bar.n)

        clip = asyncio.run(_render(clip_renderer, text, persona, output, progress))
    print(
        f"{output}: {clip.duration_s:.1f} s, {clip.frames} frames at {clip.fps} fps, "
        f"{persona.name} ({persona.language})"
    )
    return 0


async def _render(
    clip_renderer: ClipRenderer, text: str, persona: Persona, output: Path, progress: Progress
) -> RenderedClip:
    try:
        return await clip_renderer.render(text, persona, path=output, progress=progress)
    finally:
        await clip_renderer.tts.aclose()
