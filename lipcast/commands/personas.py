"""``lipcast personas``: list the personas lipcast can find, and any that are broken."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from personas.loader import scan_personas

if TYPE_CHECKING:
    from lipcast.cli import Context

HELP = "list the available personas"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace, context: Context) -> int:
    del args
    default = context.settings.persona.default
    found = scan_personas(list(context.settings.persona.dirs))
    if not found:
        print("no personas found")
        return 1
    for folder, result in found:
        marker = "*" if folder.name == default else " "
        if isinstance(result, Exception):
            print(f"{marker} {folder.name:<12} BROKEN  {result}")
            continue
        spec = result.spec
        languages = ", ".join(spec.languages or [spec.language])
        print(f"{marker} {folder.name:<12} {spec.name:<14} [{languages}]  {spec.description}")
        print(f"  {'':<12} {folder}")
    return 0
