"""Every message that crosses a process boundary, and how it is carried.

Four messages travel between requesters (the conversation pipeline, which runs next to the
platform adapters) and workers (render and speech-to-text machines):

``RenderJob`` (requester → work queue → render worker)
    One sentence to speak and lip-sync. Body: the sentence as UTF-8 text
    (``text/plain; charset=utf-8``). Headers: ``version``, ``job_id``, ``turn_id``, ``seq``,
    ``persona``, ``language`` (absent when the persona's own), ``priority``, ``created_at``,
    ``deadline``, ``mp4`` (whether a sink needs the sentence as an MP4 file; default true; when
    false a sprite renderer sends only the speech and its timeline, and draws no frame).

``RenderResult`` (render worker → requester, by direct reply-to)
    One part of a job's output; a job yields one or more parts, numbered from 0, and the one
    with ``last`` true ends it. Body: the media bytes of this part, by ``content_type``: the
    speech as PCM (``audio/pcm; format=s16le; channels=1; rate=N``), the sprite persona's
    timeline (``application/vnd.lipcast.timeline+json``, see :mod:`lipsync.timeline`), an MP4
    clip or fragment (``video/mp4``); empty for a bare end marker or an error. Headers:
    ``version``, ``job_id``, ``part``, ``last``, ``content_type``, ``duration_s``, ``timings``
    (a table of stage → seconds), ``worker``, ``attempt``, and for a failed job ``error`` (what
    went wrong, for the log) and ``error_reason`` (one of :data:`ERROR_REASONS`).

``TranscribeJob`` (requester → STT work queue ``<name>.stt`` → speech-to-text worker)
    A stretch of speech to transcribe. Body: the audio (``content_type``; ``audio/wav``, 16-bit
    mono PCM, is what lipcast sends and what a worker accepts).
    Headers: ``version``, ``job_id``, ``turn_id``, ``content_type``, ``language``,
    ``priority``, ``created_at``, ``deadline``.

``TranscribeResult`` (speech-to-text worker → requester)
    Body: the transcript as UTF-8 text. Headers: ``version``, ``job_id``, ``part`` (always 0)
    and ``last`` (always true), so the queue treats it as a one-part result, ``language`` (as
    detected), ``audio_duration_s``, ``timings``, ``worker``, ``attempt``, ``error``,
    ``error_reason``.

Conventions shared by all four:

* **Metadata in headers, media in the body.** A header is named exactly as the field it
  carries. Integers, booleans and strings travel as they are; floating-point values travel
  as decimal strings (``"1767225600.125"``), because AMQP tables would otherwise carry them as
  32-bit floats and lose a timestamp to the nearest two minutes. A field that is ``None`` is
  left out.
* **The kind travels beside the headers**: the AMQP ``type`` property (``render_job``,
  ``render_result``, ``transcribe_job``, ``transcribe_result``). RabbitMQ properties repeat
  what the broker acts on: ``priority``, ``expiration`` (from the deadline),
  ``correlation_id`` and ``message_id`` (the job id) and ``reply_to``.
* **Versioned.** ``version`` is :data:`WIRE_VERSION`; a breaking change raises it, and a
  receiver refuses any other value. Headers a receiver does not know are ignored, so a field
  may be added without a new version as long as it has a default.
* **Validated on receipt.** :func:`decode` either returns a valid message or raises
  :class:`WireError` naming the reason (``malformed``, ``unsupported_version``,
  ``wrong_kind``); a worker dead-letters such a message with that reason and carries on.

Headers the transport adds (not part of any message): ``lipcast-attempt`` (how many times
the job has been handed to a worker, see :mod:`pipeline.jobs.queue`), ``lipcast-ticket`` (on
RabbitMQ, how a worker asks whether anyone still awaits the job, see
:mod:`pipeline.jobs.queue.rabbitmq`), and on a dead-lettered copy ``lipcast-dead-reason``,
``lipcast-dead-detail``, ``lipcast-dead-at`` and ``lipcast-dead-by``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import LipcastError
from pipeline.validation import describe_validation_error

WIRE_VERSION = 1

# Transport headers (see the module docstring).
ATTEMPT_HEADER = "lipcast-attempt"
DEAD_REASON_HEADER = "lipcast-dead-reason"
DEAD_DETAIL_HEADER = "lipcast-dead-detail"
DEAD_AT_HEADER = "lipcast-dead-at"
DEAD_BY_HEADER = "lipcast-dead-by"

# Why a job produced no media: the ``error_reason`` of a result and the dead-letter reason.
ERROR_EXPIRED = "expired"  # its deadline passed before a worker could start it
ERROR_FAILED = "failed"  # the renderer failed in a way that trying again cannot fix
ERROR_POISON = "poison"  # it crashed or killed workers on every attempt
ERROR_INVALID = "invalid"  # the job message itself failed validation
ERROR_REASONS = (ERROR_EXPIRED, ERROR_FAILED, ERROR_POISON, ERROR_INVALID)

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
_PERSONA_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9 ._-]{0,99}$"
_LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$"
_MAX_ERROR_CHARS = 1000

HeaderValue = str | int | bool | dict[str, "HeaderValue"]
Headers = dict[str, HeaderValue]


class WireError(LipcastError):
    """A received message is not a valid lipcast message; ``reason`` says which way."""

    def __init__(
        self, reason: Literal["malformed", "unsupported_version", "wrong_kind"], detail: str
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """One message as a transport carries it: its kind, its headers and its body."""

    kind: str
    headers: Headers = field(default_factory=dict)
    body: bytes = b""
    content_type: str = ""


class WireMessage(BaseModel):
    """Base of the wire messages: frozen, validated, one field carried in the body."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    KIND: ClassVar[str]
    BODY_FIELD: ClassVar[str]

    version: Literal[1] = 1  # WIRE_VERSION

    def body_content_type(self) -> str:
        """The MIME type of the body."""
        return "text/plain; charset=utf-8"


class Job(WireMessage):
    """What every job has: the fields the job queue and the worker loop act on."""

    job_id: str = Field(pattern=_ID_PATTERN)  # unique per job; also the correlation id
    turn_id: str = Field(pattern=_ID_PATTERN)  # the conversation turn the job belongs to
    priority: int = Field(default=0, ge=0, le=9)  # 9 is served first
    created_at: float = Field(gt=0)  # unix seconds
    deadline: float = Field(gt=0)  # unix seconds; after it the result is useless

    @model_validator(mode="after")
    def _deadline_after_creation(self) -> Self:
        if self.deadline <= self.created_at:
            raise ValueError("deadline must be later than created_at")
        return self

    def label(self) -> str:
        """How logs name the job besides its id."""
        return f"turn {self.turn_id}"


class JobResult(WireMessage):
    """What every result has: one numbered part of a job's output, or the error that ended it."""

    job_id: str = Field(pattern=_ID_PATTERN)
    part: int = Field(default=0, ge=0, le=10_000)
    last: bool = True
    worker: str = Field(default="", max_length=200)  # which worker made it (for logs)
    attempt: int = Field(default=1, ge=1)  # which delivery of the job produced it
    error: str | None = Field(default=None, max_length=_MAX_ERROR_CHARS)
    error_reason: str | None = None  # one of ERROR_REASONS when error is set

    @classmethod
    def failure(
        cls, job_id: str, *, part: int, reason: str, error: str, worker: str = "", attempt: int = 1
    ) -> Self:
        """The final part of a job that failed: no output, the error and its reason."""
        return cls(
            job_id=job_id,
            part=part,
            last=True,
            error=error[:_MAX_ERROR_CHARS] or reason,
            error_reason=reason,
            worker=worker,
            attempt=attempt,
        )


MAX_TAKE_S = 86_400.0  # RenderJob.start_s wraps here: a day of speech


class RenderJob(Job):
    """One sentence for a render worker to speak and lip-sync."""

    KIND: ClassVar[str] = "render_job"
    BODY_FIELD: ClassVar[str] = "text"

    seq: int = Field(ge=0, le=10_000)  # the sentence's index within its turn
    text: str = Field(min_length=1, max_length=20_000)
    # a persona's folder name, never a path: a message must not pick folders on a worker's disk
    persona: str = Field(pattern=_PERSONA_PATTERN)
    language: str | None = Field(default=None, pattern=_LANGUAGE_PATTERN)
    # Whether a sink needs an MP4 file (clip folder, Discord, `lipcast say`); the overlay draws
    # a sprite persona from the timeline part, so without one the worker encodes no video.
    mp4: bool = True
    # Where this sentence starts in the persona's take, in seconds of speech before it: the
    # renderer's start frame, so head motion and blinks carry on across sentences and turns
    # (the conversation wraps it once a day).
    start_s: float = Field(default=0.0, ge=0.0, le=MAX_TAKE_S)

    def label(self) -> str:
        return f"turn {self.turn_id}, seq {self.seq}"


class RenderResult(JobResult):
    """One part of a render job's output, or the error that ended it."""

    KIND: ClassVar[str] = "render_result"
    BODY_FIELD: ClassVar[str] = "media"

    part: int = Field(ge=0, le=10_000)
    last: bool
    content_type: str = Field(default="video/mp4", max_length=200)
    media: bytes = Field(default=b"", repr=False)
    duration_s: float = Field(default=0.0, ge=0)  # playing time of this part
    timings: dict[str, float] = Field(default_factory=dict)  # stage -> seconds

    def body_content_type(self) -> str:
        return self.content_type

    @classmethod
    def failure(
        cls, job_id: str, *, part: int, reason: str, error: str, worker: str = "", attempt: int = 1
    ) -> Self:
        """The final part of a job that failed: no media, the error and its reason."""
        failed = super().failure(
            job_id, part=part, reason=reason, error=error, worker=worker, attempt=attempt
        )
        return failed.model_copy(update={"content_type": "application/octet-stream"})


class TranscribeJob(Job):
    """A stretch of speech for a speech-to-text worker."""

    KIND: ClassVar[str] = "transcribe_job"
    BODY_FIELD: ClassVar[str] = "audio"

    audio: bytes = Field(repr=False, min_length=1)
    content_type: str = Field(default="audio/wav", max_length=200)
    language: str | None = Field(default=None, pattern=_LANGUAGE_PATTERN)  # None: detect

    def body_content_type(self) -> str:
        return self.content_type


class TranscribeResult(JobResult):
    """The transcript of a :class:`TranscribeJob` (always one part), or the error that ended it."""

    KIND: ClassVar[str] = "transcribe_result"
    BODY_FIELD: ClassVar[str] = "text"

    text: str = ""
    language: str | None = Field(default=None, pattern=_LANGUAGE_PATTERN)
    audio_duration_s: float = Field(default=0.0, ge=0)
    timings: dict[str, float] = Field(default_factory=dict)


MESSAGE_TYPES: dict[str, type[WireMessage]] = {
    cls.KIND: cls for cls in (RenderJob, RenderResult, TranscribeJob, TranscribeResult)
}

M = TypeVar("M", bound=WireMessage)


def _to_header(value: Any) -> HeaderValue:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(key): _to_header(item) for key, item in value.items() if item is not None}
    raise TypeError(f"cannot carry {type(value).__name__} in a header")


def encode(message: WireMessage) -> Envelope:
    """The envelope that carries ``message``: its body field as the body, the rest as headers."""
    data = message.model_dump(exclude={message.BODY_FIELD})
    headers = {key: _to_header(value) for key, value in data.items() if value is not None}
    body = getattr(message, message.BODY_FIELD)
    return Envelope(
        kind=message.KIND,
        headers=headers,
        body=body.encode("utf-8") if isinstance(body, str) else bytes(body),
        content_type=message.body_content_type(),
    )


def decode(envelope: Envelope, expected: type[M]) -> M:
    """Validate a received envelope as an ``expected`` message, or raise :class:`WireError`."""
    if envelope.kind != expected.KIND:
        raise WireError(
            "wrong_kind", f"expected a {expected.KIND!r} message, got {envelope.kind or 'none'!r}"
        )
    version = envelope.headers.get("version")
    if version != WIRE_VERSION or isinstance(version, bool):
        raise WireError(
            "unsupported_version",
            f"{expected.KIND} version {version!r}; this lipcast speaks version {WIRE_VERSION}",
        )
    data: dict[str, Any] = dict(envelope.headers)
    if expected.model_fields[expected.BODY_FIELD].annotation is str:
        try:
            data[expected.BODY_FIELD] = envelope.body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise WireError("malformed", f"{expected.KIND} body is not UTF-8 text") from err
    else:
        data[expected.BODY_FIELD] = envelope.body
    try:
        return expected.model_validate(data)
    except ValidationError as err:
        detail = describe_validation_error(err, source=f"{expected.KIND} message")
        raise WireError("malformed", detail.replace("\n", "; ")) from err


def valid_id(value: object) -> bool:
    """Whether ``value`` can be a job id (to answer a message that failed validation)."""
    return isinstance(value, str) and re.fullmatch(_ID_PATTERN, value) is not None


def expiration_s(deadline: float, now: float) -> float:
    """Seconds a job may wait in a queue before its deadline (at least one millisecond)."""
    return max(0.001, math.floor((deadline - now) * 1000) / 1000)
