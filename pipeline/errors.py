"""The project's exception tree, as the pipeline and everything above it import it.

Defined in :mod:`lipcast_base.errors`, below ``personas``, which raises them too.
"""

from __future__ import annotations

from lipcast_base.errors import (
    BackendError,
    ConfigError,
    InputError,
    LipcastError,
    MissingDependencyError,
    PersonaError,
    RenderError,
)

__all__ = [
    "BackendError",
    "ConfigError",
    "InputError",
    "LipcastError",
    "MissingDependencyError",
    "PersonaError",
    "RenderError",
]
