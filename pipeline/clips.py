"""What the conversation hands on: clips in sentence order, and the reply they make up.

A :class:`Clip` is one rendered sentence: its picture (an MP4 today) and its audio as PCM with
its sample rate, so a voice sink plays it without demuxing or decoding AAC. A :class:`Reply` is
a whole turn's answer as the platform it came from receives it: the released text (never a
blocked sentence) and, for platforms that post video, the clips.

On the wire the audio travels as its own result part (:data:`PCM_CONTENT_TYPE`), beside the
video part; :func:`pcm_content_type` and :func:`pcm_sample_rate` write and read its type. A
sprite persona's clip also carries its *timeline* (:data:`TIMELINE_CONTENT_TYPE`: mouth,
blinks and head per frame, as JSON), which the overlay page draws live; its MP4 is then made
only when a sink needs a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pipeline.audio import AudioChunk
from pipeline.utterance import Utterance

Mode = Literal["reply", "read_aloud"]

# Little-endian signed 16-bit mono PCM; the rate travels as a parameter of the type.
PCM_CONTENT_TYPE = "audio/pcm"
_PCM_RATE = re.compile(r"^audio/pcm\s*;(?:.*;)?\s*rate=(\d{3,6})\s*(?:;.*)?$", re.IGNORECASE)


# The type of lipsync.timeline's wire form (pipeline/ reads it as bytes; only the render
# worker imports lipsync).
TIMELINE_CONTENT_TYPE = "application/vnd.lipcast.timeline+json"


def pcm_content_type(sample_rate: int) -> str:
    """The content type of a result part holding 16-bit mono PCM at ``sample_rate`` Hz."""
    return f"{PCM_CONTENT_TYPE}; format=s16le; channels=1; rate={sample_rate}"


def pcm_sample_rate(content_type: str) -> int | None:
    """The sample rate of a PCM part's content type; None if it is not one."""
    match = _PCM_RATE.match(content_type.strip())
    return int(match.group(1)) if match else None


@dataclass(frozen=True, kw_only=True)
class TurnInfo:
    """Which turn a clip belongs to, for the sinks."""

    turn_id: str
    utterance: Utterance
    viewer_name: str
    language: str
    mode: Mode
    persona_id: str = ""
    persona_name: str = ""


@dataclass(frozen=True, kw_only=True)
class Clip:
    """One rendered sentence, released to the sinks in order."""

    turn: TurnInfo
    seq: int  # the clip's place in its turn: 0, 1, 2, ...
    text: str  # what is said (the caption)
    media: bytes  # the picture as video: an MP4 clip (empty when no sink asked for one)
    content_type: str
    duration_s: float
    timings: dict[str, float]
    audio: AudioChunk | None = field(default=None, repr=False)  # the sentence's speech
    timeline: bytes = field(default=b"", repr=False)  # a sprite persona's timeline (JSON)


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A finished turn, as the platform it answers receives it."""

    utterance: Utterance  # what it answers: platform, channel, message id
    turn_id: str
    text: str  # the released sentences, joined; never a blocked one
    persona_name: str
    outcome: str  # the turn's outcome ("completed", "partial", "skipped", ...)
    clips: tuple[Clip, ...] = ()  # the clips in order, for platforms that post video
