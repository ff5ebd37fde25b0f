"""The sprite persona's timeline: what it does in each video frame, without drawing it.

A :class:`Timeline` holds, per frame at ``fps``, the mouth (viseme and openness, and the sprite
level drawn for it), the eyelids' closure and the head's motion — the values the sprite
renderer (:mod:`lipsync.sprite`) draws its MP4 frames from: the same mouth track, blink
schedule and motion constants. The overlay page draws the same persona live from a timeline
over its layer atlas (:mod:`lipsync.atlas`), in time with the audio.

The head's idle motion and the blink schedule depend only on the absolute frame number (and
the avatar, for blinks), so a reply rendered in parts, or drawn live by a page that counts its
own time, moves and blinks as if it were one continuous take. The motion constants are sent
to the page with the atlas so that it moves the same way between replies.

On the wire a timeline is a result part of type :data:`TIMELINE_CONTENT_TYPE`: compact JSON,
validated by :func:`Timeline.from_json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lipsync.audio_features import MouthFrame, Viseme, mouth_track
from lipsync.errors import LipsyncError
from lipsync.sprite import OPENNESS_LEVELS, _blink_schedule, motion

TIMELINE_CONTENT_TYPE = "application/vnd.lipcast.timeline+json"
TIMELINE_VERSION = 1

VISEME_ORDER: tuple[Viseme, ...] = tuple(Viseme)
_MAX_FRAMES = 25 * 600  # ten minutes at 25 fps: longer than any sentence clip


class TimelineError(LipsyncError):
    """A timeline part is not a valid timeline."""


def mouth_level(openness: float) -> int:
    """The mouth sprite level (0 .. OPENNESS_LEVELS - 1) drawn for ``openness`` (0..1)."""
    return min(OPENNESS_LEVELS - 1, max(0, round(openness * (OPENNESS_LEVELS - 1))))


def head_pose(frame: int, fps: int, size: int, openness: float) -> tuple[float, float]:
    """How far the persona has moved, ``(dx, dy)`` pixels of a ``size`` frame, in absolute
    frame ``frame``: the sprite's slow sway, and the dip of the head as the jaw opens."""
    return motion(frame, fps, size, openness)


def blink_schedule(start: int, count: int, fps: int, *, seed: str) -> dict[int, float]:
    """Eyelid closure per frame index (relative to ``start``), as the sprite renderer blinks."""
    return _blink_schedule(start, count, fps, seed=seed)


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """The sprite persona's frames for one clip: mouth, eyelids and head, per frame at ``fps``.

    ``start_frame`` is the absolute frame number of the first frame (head motion and blinks
    carry on from it); ``size`` the frame size the poses are measured in.
    """

    fps: int
    start_frame: int
    size: int
    mouths: tuple[MouthFrame, ...]
    blinks: dict[int, float]  # frame index -> eyelid closure, for frames that blink

    @property
    def frames(self) -> int:
        return len(self.mouths)

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps

    def pose(self, index: int) -> tuple[float, float]:
        """How far the persona has moved, ``(dx, dy)``, in frame ``index`` of this timeline."""
        return head_pose(self.start_frame + index, self.fps, self.size, self.mouths[index].openness)

    def to_json(self) -> bytes:
        """The wire form: one compact JSON object (a few bytes per frame)."""
        data = {
            "version": TIMELINE_VERSION,
            "fps": self.fps,
            "start_frame": self.start_frame,
            "size": self.size,
            "visemes": "".join(str(VISEME_ORDER.index(m.viseme)) for m in self.mouths),
            "openness": [round(m.openness, 3) for m in self.mouths],
            "levels": [mouth_level(m.openness) for m in self.mouths],
            "blinks": {str(index): closure for index, closure in sorted(self.blinks.items())},
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Timeline:
        """Read the wire form; raises :class:`TimelineError` naming what is wrong."""
        try:
            raw: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise TimelineError(f"a timeline part is not JSON: {err}") from err
        if not isinstance(raw, dict) or raw.get("version") != TIMELINE_VERSION:
            raise TimelineError(f"a timeline part is not a version {TIMELINE_VERSION} timeline")
        try:
            fps, start, size = int(raw["fps"]), int(raw["start_frame"]), int(raw["size"])
            codes, openness = str(raw["visemes"]), [float(v) for v in raw["openness"]]
            blinks = {int(k): float(v) for k, v in dict(raw.get("blinks", {})).items()}
            visemes = [VISEME_ORDER[int(code)] for code in codes]
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise TimelineError(f"a timeline part is malformed: {err!r}") from err
        if not (1 <= fps <= 120 and start >= 0 and size > 0):
            raise TimelineError("a timeline part has an impossible fps, start frame or size")
        if len(visemes) != len(openness) or not 0 < len(visemes) <= _MAX_FRAMES:
            raise TimelineError("a timeline part's frames disagree in number or are too many")
        mouths = tuple(
            MouthFrame(viseme=viseme, openness=min(1.0, max(0.0, value)))
            for viseme, value in zip(visemes, openness, strict=True)
        )
        return cls(fps=fps, start_frame=start, size=size, mouths=mouths, blinks=blinks)


def sprite_timeline(
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    *,
    fps: int,
    size: int,
    seed: str,
    start_frame: int = 0,
) -> Timeline:
    """The timeline the sprite renderer draws for this audio (``seed``: the avatar's key).

    The last frame's mouth is closed: the clip ends at rest even where the speech's last sound
    runs to the very end of the audio.
    """
    mouths = list(mouth_track(samples, sample_rate, fps))
    if mouths:
        mouths[-1] = MouthFrame(viseme=Viseme.CLOSED, openness=0.0)
    blinks = blink_schedule(start_frame, len(mouths), fps, seed=seed)
    return Timeline(
        fps=fps, start_frame=start_frame, size=size, mouths=tuple(mouths), blinks=blinks
    )
