"""The project's exception tree.

Every error lipcast raises on purpose derives from :class:`LipcastError`. Its message is written
for the person running the stream: it names the file, key or value at fault and what to do next.
``transient`` tells a caller whether trying again later can help (a timeout, a busy queue) or not
(a bad config value, a missing package).
"""

from __future__ import annotations


class LipcastError(Exception):
    """Root of lipcast's own errors; the message is shown to the user as is."""

    transient: bool = False


class ConfigError(LipcastError):
    """A configuration file or value is wrong; the message names file, key, value and fix."""


class MissingDependencyError(LipcastError):
    """A backend was chosen whose optional package is not installed."""

    def __init__(self, what: str, *, package: str, extra: str | None = None) -> None:
        line = f'pip install "lipcast[{extra}]"' if extra else f"pip install {package}"
        super().__init__(f"{what} needs the Python package {package!r}, not installed: {line}")
        self.package = package
        self.extra = extra


class InputError(LipcastError):
    """Text, audio or a message given to lipcast cannot be used as it is."""


class PersonaError(LipcastError):
    """A persona folder, its persona.toml or its assets are unusable."""


class BackendError(LipcastError):
    """A backend (TTS, LLM, STT, renderer) failed while doing its work."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class RenderError(LipcastError):
    """Rendering or encoding a clip failed."""
