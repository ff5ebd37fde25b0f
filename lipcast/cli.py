"""``lipcast`` command line: parse, load configuration, dispatch, and report errors in one line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from lipcast import __version__
from lipcast.commands import COMMANDS
from lipcast.config import Secrets, Settings, load_secrets, load_settings
from lipcast.logs import REDACTED, setup_logging
from pipeline.errors import LipcastError

log = logging.getLogger("lipcast")


@dataclass(frozen=True, kw_only=True)
class Context:
    """What every command gets: the validated settings, the secrets and the config path."""

    settings: Settings
    secrets: Secrets
    config_path: Path | None


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lipcast",
        description="A talking, lip-synced AI persona for live streams.",
    )
    parser.add_argument("--version", action="version", version=f"lipcast {__version__}")
    _add_common(parser, default=True)
    # The same flags after the subcommand (`lipcast say hi -c my.toml`): people type them
    # there. Not given there, they leave what was given before the subcommand alone.
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = _command_module(name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP, parents=[common])
        module.add_arguments(command)
    return parser


def _add_common(parser: argparse.ArgumentParser, *, default: bool) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None if default else argparse.SUPPRESS,
        help="bot.toml to use (default: ./bot.toml)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if default else argparse.SUPPRESS,
        help="log more (-v info, -vv debug)",
    )


def _redact(message: str, secrets: Secrets | None) -> str:
    for value in secrets.values() if secrets else []:
        message = message.replace(value, REDACTED)
    return message


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    secrets: Secrets | None = None
    try:
        secrets = load_secrets()
        setup_logging(args.verbose, secrets.values())
        settings = load_settings(args.config)
        context = Context(settings=settings, secrets=secrets, config_path=args.config)
        code: int = _command_module(args.command).run(args, context)
        return code
    except LipcastError as err:
        print(f"lipcast: error: {_redact(str(err), secrets)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lipcast: interrupted", file=sys.stderr)
        return 130
