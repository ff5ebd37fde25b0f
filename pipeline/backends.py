"""Backends chosen by name: one explicit table per kind, and the loader that checks extras.

A table maps a backend name (as written in bot.toml) to where its class lives and which
optional package it needs. Loading a backend whose package is missing raises
:class:`MissingDependencyError` with the ``pip install`` line that fixes it, at start-up rather
than in the middle of a stream.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.errors import ConfigError, MissingDependencyError


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """Where a backend's class lives (``"module:Class"``) and what it needs installed."""

    target: str
    requires: tuple[str, ...] = ()  # importable top-level modules
    package: str = ""  # the pip package that provides them
    extra: str | None = None  # lipcast's extra that installs them
    description: str = ""

    def missing(self) -> str | None:
        """The first required module that is not importable, or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return module
        return None


def load_backend(kind: str, name: str, table: Mapping[str, BackendSpec]) -> type:
    """Import the class registered as ``name`` in ``table``, or explain what is wrong."""
    spec = table.get(name)
    if spec is None:
        known = ", ".join(sorted(table))
        raise ConfigError(f"unknown {kind} backend {name!r}: expected one of {known}")
    if spec.missing() is not None:
        raise MissingDependencyError(
            f"the {kind} backend {name!r}", package=spec.package, extra=spec.extra
        )
    module_name, _, attr = spec.target.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr)
    if not isinstance(cls, type):
        raise TypeError(f"{spec.target} is not a class")
    return cls
