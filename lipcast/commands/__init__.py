"""The ``lipcast`` subcommands: one module each, listed in :data:`COMMANDS`.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args, context) -> int``. ``context`` carries the loaded settings and secrets.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "say": "lipcast.commands.say",
    "personas": "lipcast.commands.personas",
    "doctor": "lipcast.commands.doctor",
    "bench": "lipcast.commands.bench",
    "worker": "lipcast.commands.worker",
    "overlay": "lipcast.commands.overlay",
    "run": "lipcast.commands.run",
    "forget": "lipcast.commands.forget",
    "discord": "lipcast.commands.discord",
    "twitch": "lipcast.commands.twitch",
}
