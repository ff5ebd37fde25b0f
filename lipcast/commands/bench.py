"""``lipcast bench NAME``: run a benchmark and print its figures as JSON.

Each benchmark is a module in :mod:`lipcast.benchmarks` with ``HELP``,
``add_arguments(parser)`` and ``run(args, context) -> dict``.
"""

from __future__ import annotations

import argparse
import importlib
import json
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lipcast.cli import Context

HELP = "measure speed (render, queue, turn, overlay, safety, voice, chaos, wav2lip) and print JSON"

BENCHMARKS: dict[str, str] = {
    "render": "lipcast.benchmarks.render",
    "queue": "lipcast.benchmarks.queue",
    "turn": "lipcast.benchmarks.turn",
    "conversations": "lipcast.benchmarks.conversations",
    "overlay": "lipcast.benchmarks.overlay",
    "safety": "lipcast.benchmarks.safety",
    "voice": "lipcast.benchmarks.voice",
    "chaos": "lipcast.benchmarks.chaos",
    "wav2lip": "lipcast.benchmarks.wav2lip",
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for name in BENCHMARKS:
        module = _module(name)
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))


def run(args: argparse.Namespace, context: Context) -> int:
    figures: dict[str, Any] = _module(args.benchmark).run(args, context)
    print(json.dumps(figures, indent=2))
    return 0
