"""The overlay's WebSocket protocol (version :data:`PROTOCOL`): events to the page, reports back.

Every message is one JSON object with a ``type``. The server sends (``/ws``):

``hello``
    first message of a connection: ``protocol``, ``assets`` (a hash of the page's files; a page
    built from other files reloads itself), ``instance`` (changes on every server start),
    ``paused``, ``idle`` (``{"image": url | null, "video": url | null}``), ``options``
    (``captions``, ``banner``, ``hold_ms``, ``motion``), ``persona`` (see ``persona`` below, or
    null). It is followed by a ``clip`` event for every clip still waiting to be shown (never
    one whose reply missed its deadline, nor one already playing elsewhere) and a ``queue``.
``persona``
    the sprite persona the page draws: ``atlas`` (the layer atlas image's URL) and ``manifest``
    (where each layer lies and goes, see :mod:`lipsync.atlas`); null for none (the idle image
    or video is shown instead, and clips are video).
``turn_started`` / ``turn_ended``
    ``turn_id``, ``viewer``; ``turn_ended`` means no more clips will come for that turn.
``clip``
    a clip is ready: ``clip_id``, ``turn_id``, ``seq`` (order within its turn), ``order``
    (global order on this server), ``kind``, ``caption``, ``viewer``, ``duration_s``,
    ``expires_in_ms`` (how long from now its reply may still begin; null once it has begun).
    ``kind`` ``"video"``: ``url`` is an MP4; with ``stream`` (its MIME type with codecs) it is
    a fragmented MP4 still being encoded, which the URL streams as it grows and the page
    appends to a Media Source, so it starts playing before it is complete.
    ``kind`` ``"sprite"``: ``audio_url`` is the speech as 16-bit little-endian mono PCM at
    ``sample_rate``, and ``timeline`` the persona's frames
    (:mod:`lipsync.timeline`'s wire form), which the page draws from the atlas in time with the
    speech. The page plays clips in the order it receives them and never plays one
    ``(turn_id, seq)`` twice.
``skip``
    stop and drop the clips of ``turn_id`` (``reason``: ``skipped``, or ``expired`` for a reply
    that missed its deadline).
``clear``
    drop the replies ``turn_ids`` (the ones waiting; the one playing plays on).
``pause`` / ``resume``
    hold playback; continue it.
``queue``
    ``replies_waiting`` (replies not yet begun), ``clips`` (clips not yet played to the end).

The page reports (all with ``clip_id``): ``started`` (the clip is playing), ``ended`` (played
to the end, or had been played before a reconnect), ``skipped`` (dropped by skip or clear, or
expired), ``failed`` (could not be loaded or played; ``reason``). Reports are advisory: the
server validates them with :func:`parse_report` and ignores anything malformed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Literal, cast

PROTOCOL = 1

ReportKind = Literal["started", "ended", "skipped", "failed"]
REPORT_KINDS: frozenset[str] = frozenset({"started", "ended", "skipped", "failed"})
_MAX_REPORT_CHARS = 2000


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of the server-to-page events; ``to_json`` adds the ``type``."""

    type: ClassVar[str]

    def to_json(self) -> str:
        return json.dumps({"type": self.type, **asdict(self)}, ensure_ascii=False)


@dataclass(frozen=True, kw_only=True)
class PageOptions:
    """How the page presents replies (sent in ``hello``)."""

    captions: bool = True  # show each clip's caption
    banner: bool = True  # show "answering @viewer" and the number of replies waiting
    hold_ms: int = 1500  # keep the last frame this long while the turn's next clip renders
    motion: bool = True  # the sprite persona sways and nods (False holds the head still)


@dataclass(frozen=True, kw_only=True)
class Hello(Event):
    type: ClassVar[str] = "hello"
    protocol: int = PROTOCOL
    assets: str
    instance: str
    paused: bool
    idle: dict[str, str | None]
    options: PageOptions = field(default_factory=PageOptions)
    persona: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class PersonaLayers(Event):
    type: ClassVar[str] = "persona"
    atlas: str
    manifest: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class TurnStarted(Event):
    type: ClassVar[str] = "turn_started"
    turn_id: str
    viewer: str | None


@dataclass(frozen=True, kw_only=True)
class TurnEnded(Event):
    type: ClassVar[str] = "turn_ended"
    turn_id: str


@dataclass(frozen=True, kw_only=True)
class ClipReady(Event):
    type: ClassVar[str] = "clip"
    clip_id: str
    turn_id: str
    seq: int
    order: int
    kind: Literal["video", "sprite"]
    caption: str
    viewer: str | None
    duration_s: float | None
    url: str | None = None  # the MP4 of a video clip
    audio_url: str | None = None  # the speech of a sprite clip (PCM)
    sample_rate: int | None = None
    timeline: dict[str, Any] | None = None
    stream: str | None = None  # a video clip still being encoded: its Media Source type
    expires_in_ms: int | None = None

    def fresh(self, expires_in_ms: int | None) -> ClipReady:
        """This event as sent now: how long its reply may still begin, from now."""
        return replace(self, expires_in_ms=expires_in_ms)


@dataclass(frozen=True, kw_only=True)
class Skip(Event):
    type: ClassVar[str] = "skip"
    turn_id: str
    reason: Literal["skipped", "expired"] = "skipped"


@dataclass(frozen=True, kw_only=True)
class Clear(Event):
    type: ClassVar[str] = "clear"
    turn_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Pause(Event):
    type: ClassVar[str] = "pause"


@dataclass(frozen=True, kw_only=True)
class Resume(Event):
    type: ClassVar[str] = "resume"


@dataclass(frozen=True, kw_only=True)
class QueueState(Event):
    type: ClassVar[str] = "queue"
    replies_waiting: int
    clips: int


@dataclass(frozen=True, kw_only=True)
class PlaybackReport:
    """What a page reported about one clip.

    ``at`` is the server's monotonic clock and ``wall`` the Unix time when the report arrived;
    ``turn_id`` and ``seq`` are filled in by the server from the clip it published. A clip's
    ``started`` is reported once, however many pages play it.
    """

    kind: ReportKind
    clip_id: str
    reason: str = ""
    at: float = 0.0
    wall: float = 0.0
    turn_id: str = ""
    seq: int = -1


def parse_report(text: str, *, at: float, wall: float = 0.0) -> PlaybackReport | None:
    """Validate one page-to-server message; None when it is not a well-formed report."""
    if len(text) > _MAX_REPORT_CHARS:
        return None
    try:
        raw: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    kind, clip_id, reason = raw.get("type"), raw.get("clip_id"), raw.get("reason", "")
    if kind not in REPORT_KINDS or not isinstance(clip_id, str) or not isinstance(reason, str):
        return None
    return PlaybackReport(
        kind=cast(ReportKind, kind), clip_id=clip_id, reason=reason[:200], at=at, wall=wall
    )
