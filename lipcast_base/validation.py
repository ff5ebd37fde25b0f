"""Turn pydantic validation errors into one message a streamer can act on."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(top level)"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_validation_error(err: ValidationError, *, source: str) -> str:
    """One line per problem: ``source: key = value: what was expected``."""
    lines = []
    for problem in err.errors(include_url=False):
        key = _location(problem["loc"])
        kind = problem["type"]
        if kind == "extra_forbidden":
            lines.append(f"{source}: unknown key {key!r} (check its spelling; see bot.toml)")
        elif kind == "missing":
            lines.append(f"{source}: missing key {key!r}")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {key} = {_show(problem.get('input'))}: {message}")
    return "\n".join(lines)
