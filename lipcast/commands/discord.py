"""``lipcast discord invite``: the URL that adds the bot to a server, with exactly the
permissions and scopes lipcast uses (README: "Discord")."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from bots import ADAPTERS
from pipeline.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from lipcast.cli import Context

HELP = "Discord set-up: print the invite URL that adds the bot to your server"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="discord_action", metavar="ACTION", required=True)
    invite = actions.add_parser(
        "invite", help="the URL that adds the bot with the permissions lipcast uses"
    )
    invite.add_argument(
        "--client-id",
        type=int,
        default=None,
        help="the Application ID (Developer Portal -> General Information); "
        "default: read with DISCORD_TOKEN",
    )
    invite.add_argument(
        "--guild", type=int, default=None, help="a server id to pre-select in the invite"
    )


def run(args: argparse.Namespace, context: Context) -> int:
    spec = ADAPTERS["discord"]
    if spec.missing() is not None:
        raise MissingDependencyError("lipcast discord", package=spec.package, extra=spec.extra)
    from bots.discord.invite import PERMISSION_USES, SCOPES, application_id, invite_url

    client_id: int | None = args.client_id
    if client_id is None:
        token = context.secrets.discord_token
        if token is None or not token.get_secret_value().strip():
            raise ConfigError(
                "lipcast discord invite needs the Application ID: pass --client-id ID (Developer "
                "Portal -> your application -> General Information) or set DISCORD_TOKEN in .env"
            )
        client_id = asyncio.run(application_id(token.get_secret_value().strip()))
    print(invite_url(client_id, guild_id=args.guild))
    print(f"\nscopes: {', '.join(SCOPES)}")
    print("permissions:")
    for name, use in PERMISSION_USES.items():
        print(f"  {name.replace('_', ' ')}: {use}")
    return 0
