"""Posting a reply in Discord: the text first, then the whole reply's clip as one MP4.

The text goes out as soon as the turn ends, cut at Discord's 2,000 characters. Meanwhile the
sentence clips are joined into one MP4 that fits the upload limit (:mod:`lipsync.fit`, in a
worker thread); when nothing watchable fits, the last text message gets a short note instead
of a failed upload.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import discord

from bots.discord.messages import MESSAGE_LIMIT, split_message
from lipsync.errors import LipsyncError
from lipsync.fit import FittedClip, fit_clips

log = logging.getLogger(__name__)

CLIP_FILENAME = "reply.mp4"
TOO_LARGE_NOTE = "-# (the video of this answer does not fit this channel's upload limit)"
NOT_ENCODED_NOTE = "-# (the video of this answer could not be made)"

# Sends one message: its text (may be empty when a file goes), and a file or None.
Send = Callable[[str, discord.File | None], Awaitable[discord.Message]]


@dataclass(frozen=True, kw_only=True)
class ClipFitting:
    """How the clip is made to fit: the limit in bytes, and the quality tried first."""

    limit_bytes: int
    crf: int = 23
    preset: str = "veryfast"


@dataclass(frozen=True, kw_only=True)
class Posted:
    """What a delivery posted, for logs and tests."""

    messages: int
    clip: FittedClip | None
    note: str | None


async def post_reply(
    send: Send, text: str, clips: Sequence[bytes], fitting: ClipFitting | None
) -> Posted:
    """Post ``text`` (in pieces), then ``clips`` joined into one attachment that fits
    ``fitting``; without ``fitting`` or clips, the text alone. HTTP errors are the caller's."""
    fit: asyncio.Task[FittedClip | None] | None = None
    if clips and fitting is not None:
        fit = asyncio.create_task(
            asyncio.to_thread(
                fit_clips,
                list(clips),
                limit_bytes=fitting.limit_bytes,
                crf=fitting.crf,
                preset=fitting.preset,
            ),
            name="discord-fit-clip",
        )
    try:
        pieces = split_message(text)
        last: discord.Message | None = None
        for piece in pieces:
            last = await send(piece, None)
        if fit is None:
            return Posted(messages=len(pieces), clip=None, note=None)
        note = TOO_LARGE_NOTE
        try:
            fitted = await fit
        except LipsyncError as err:
            log.warning("the reply's clip could not be joined, posting the text alone: %s", err)
            fitted, note = None, NOT_ENCODED_NOTE
        if fitted is not None:
            file = discord.File(io.BytesIO(fitted.media), filename=CLIP_FILENAME)
            await send("", file)
            return Posted(messages=len(pieces) + 1, clip=fitted, note=None)
        if last is not None and len(last.content) + 1 + len(note) <= MESSAGE_LIMIT:
            await last.edit(content=f"{last.content}\n{note}")
            return Posted(messages=len(pieces), clip=None, note=note)
        await send(note, None)
        return Posted(messages=len(pieces) + 1, clip=None, note=note)
    finally:
        if fit is not None and not fit.done():
            fit.cancel()
