"""``lipcast forget``: erase everything the persona remembers about one viewer."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from pipeline.conversation.memory import ViewerMemory
from pipeline.utterance import ViewerKey

if TYPE_CHECKING:
    from lipcast.cli import Context

HELP = "erase one viewer's remembered history and preferences"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--platform", required=True, help='where the viewer chats: "twitch", ...')
    parser.add_argument(
        "--channel",
        required=True,
        help="the channel as the adapter names it (Twitch: the channel's login); Discord: the "
        "server id (its text and voice channels share one history), or a DM's channel id",
    )
    parser.add_argument("--user", required=True, help="the viewer's user id (or login name)")


def run(args: argparse.Namespace, context: Context) -> int:
    settings = context.settings.memory
    viewer = ViewerKey(platform=args.platform, channel=args.channel, user=args.user)
    if not settings.path.exists():
        print(f"{settings.path}: no memory stored yet; nothing to forget for {viewer}")
        return 0

    async def forget() -> int:
        async with ViewerMemory(
            settings.path, budget_chars=settings.budget_chars, max_viewers=settings.max_viewers
        ) as memory:
            return await memory.forget(viewer)

    removed = asyncio.run(forget())
    if removed:
        print(f"forgot {args.user} ({viewer}): {removed} records erased from {settings.path}")
    else:
        print(f"nothing stored about {viewer} in {settings.path}")
    return 0
