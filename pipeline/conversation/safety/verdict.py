"""What a safety check answers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The outcome of a safety check: ``ok``, or why not."""

    ok: bool
    # "blocked_phrase", "secret", "moderation", "moderation_unavailable", or a layer's own
    reason: str = ""
    detail: str = ""  # the phrase or categories, for the moderators' log (never a secret)
    layer: str = ""  # the moderation layer that decided ("" for the local checks)


ALLOWED = Verdict(ok=True)
