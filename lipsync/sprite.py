"""The ``sprite`` renderer: a CPU-only, weight-free talking head.

Over the persona's avatar it draws a mouth that follows the audio (five visemes chosen from the
audio's loudness and spectrum, see :mod:`lipsync.audio_features`), blinks at natural, varied
intervals and moves the head slightly, as a person on camera does. Everything expensive —
fitting the avatar to the output size, erasing a photo's own mouth, drawing every mouth and
eyelid sprite — happens once per avatar and is cached; a frame is a copy, two or three small
blends and one affine warp.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lipsync.audio_features import MouthFrame, Viseme, mouth_track
from lipsync.avatar import RGB, Avatar, FaceGeometry, fit_avatar, hex_to_rgb
from lipsync.cache import PreparedCache
from lipsync.mouth import SHAPES, Patch, draw_eyelid, draw_mouth, paste
from lipsync.renderer import Frame

OPENNESS_LEVELS = 12  # mouth sprites drawn per viseme
BLINK_CLOSURE = (0.55, 1.0, 1.0, 0.45)  # eyelid per frame of a blink (at 25 fps: 160 ms)
BLINK_INTERVAL_S = (2.2, 5.5)  # seconds between blinks, drawn at random
SWAY_PX = 1.6  # idle motion amplitude, as pixels at a 512-pixel frame
NOD_PX = 2.0  # how far the head dips as the jaw opens
TILT_DEG = 0.6
CACHE_SIZE = 8


@dataclass(frozen=True, kw_only=True)
class PreparedAvatar:
    """An avatar fitted to the output frame with every sprite it needs."""

    base: Frame  # the avatar over its background, with a photo's own mouth erased
    geometry: FaceGeometry  # in output-frame pixels
    mouths: dict[tuple[Viseme, int], Patch]
    eyelids: dict[float, Patch]
    pivot: tuple[float, float]  # the neck: the head moves around it


class SpriteRenderer:
    """Mouth shapes, blinks and idle motion over a still avatar; real time many times over."""

    name = "sprite"

    def __init__(self, *, fps: int = 25, size: int = 512, background: str = "#00b140") -> None:
        self.fps = fps
        self.size = size
        self.background = hex_to_rgb(background)
        self._cache: PreparedCache[PreparedAvatar] = PreparedCache(CACHE_SIZE)

    def prepare(self, avatar: Avatar, background: RGB | None = None) -> PreparedAvatar:
        """Fit ``avatar`` to the frame and draw its sprites (cached per avatar and background)."""
        colour = background or self.background
        return self._cache.get_or_make(
            (avatar.key, colour), lambda: _prepare(avatar, self.size, colour)
        )

    def render(
        self,
        samples: npt.NDArray[np.float32],
        sample_rate: int,
        avatar: Avatar,
        *,
        start_frame: int = 0,
        background: RGB | None = None,
    ) -> Iterator[Frame]:
        """Frames at ``fps`` covering the audio exactly (``round(duration * fps)``, at least 1)."""
        prepared = self.prepare(avatar, background)
        track = mouth_track(samples, sample_rate, self.fps)
        blinks = _blink_schedule(start_frame, len(track), self.fps, seed=avatar.key)
        for index, mouth in enumerate(track):
            yield self._frame(prepared, mouth, blinks.get(index, 0.0), start_frame + index)

    def _frame(self, prepared: PreparedAvatar, mouth: MouthFrame, lid: float, n: int) -> Frame:
        import cv2

        frame = prepared.base.copy()
        level = min(OPENNESS_LEVELS - 1, round(mouth.openness * (OPENNESS_LEVELS - 1)))
        paste(frame, prepared.mouths[(mouth.viseme, level)], prepared.geometry.mouth)
        if lid > 0:
            patch = prepared.eyelids[lid]
            for eye in prepared.geometry.eyes:
                paste(frame, patch, eye)
        t = n / self.fps
        scale = self.size / 512
        dx = SWAY_PX * scale * math.sin(2 * math.pi * t / 3.7)
        dy = SWAY_PX * scale * 0.7 * math.sin(2 * math.pi * t / 2.9 + 1.0)
        dy += NOD_PX * scale * mouth.openness
        angle = TILT_DEG * math.sin(2 * math.pi * t / 5.3 + 0.5)
        matrix = cv2.getRotationMatrix2D(prepared.pivot, angle, 1.0)
        matrix[0, 2] += dx
        matrix[1, 2] += dy
        warped = cv2.warpAffine(
            frame,
            matrix,
            (self.size, self.size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return np.asarray(warped, dtype=np.uint8)


def _blink_schedule(start: int, count: int, fps: int, *, seed: str) -> dict[int, float]:
    """Eyelid closure per frame index (relative to ``start``) for frames that blink.

    Blink times depend only on the absolute frame number and the avatar, so a reply rendered in
    parts blinks exactly as if rendered whole.
    """
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    closures: dict[int, float] = {}
    frame = int(rng.uniform(0.8, 2.5) * fps)
    while frame < start + count:
        for offset, closure in enumerate(BLINK_CLOSURE):
            if start <= frame + offset < start + count:
                closures[frame + offset - start] = closure
        frame += int(rng.uniform(*BLINK_INTERVAL_S) * fps)
    return closures


def _prepare(avatar: Avatar, size: int, background: RGB) -> PreparedAvatar:

    base, geometry = fit_avatar(avatar, size, background)
    if avatar.detected:
        base = _erase_mouth(base, geometry)
    skin = geometry.skin or (220, 180, 160)
    lip = geometry.lip or (180, 90, 90)
    mouths = {
        (viseme, level): draw_mouth(shape, level / (OPENNESS_LEVELS - 1), geometry.mouth_width, lip)
        for viseme, shape in SHAPES.items()
        for level in range(OPENNESS_LEVELS)
    }
    eyelids = {
        closure: draw_eyelid(geometry.eye_size, closure, skin) for closure in set(BLINK_CLOSURE)
    }
    eyes_y = (geometry.eyes[0][1] + geometry.eyes[1][1]) / 2
    pivot = (geometry.mouth[0], min(size - 1.0, geometry.mouth[1] + (geometry.mouth[1] - eyes_y)))
    return PreparedAvatar(base=base, geometry=geometry, mouths=mouths, eyelids=eyelids, pivot=pivot)


def _erase_mouth(base: Frame, geometry: FaceGeometry) -> Frame:
    """Paint over a photo's own mouth so that only the drawn one shows."""
    import cv2

    mask = np.zeros(base.shape[:2], np.uint8)
    centre = (round(geometry.mouth[0]), round(geometry.mouth[1]))
    axes = (round(geometry.mouth_width * 0.62), round(geometry.mouth_width * 0.3))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1)
    return np.asarray(cv2.inpaint(base, mask, 5, cv2.INPAINT_TELEA), dtype=np.uint8)
