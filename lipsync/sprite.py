"""The ``sprite`` renderer: a CPU-only, weight-free talking head.

Over the persona's avatar it draws a mouth that follows the audio (five visemes chosen from the
audio's loudness and spectrum, see :mod:`lipsync.audio_features`), blinks at natural, varied
intervals and moves slightly, as a person on camera does: a slow sway, and a dip of the head as
the jaw opens. Everything expensive — fitting the avatar to the output size, erasing a photo's
own mouth, drawing every mouth and eyelid sprite, and the avatar with a border to move
within — happens once per avatar and is cached. A frame is then one copy of the picture at the
frame's whole-pixel position and two or three small blends: no frame resamples the whole
picture, and the encoder sees the same picture moved by whole pixels, which even x264's
fastest preset finds exactly and codes cheaply. (``STEPS`` > 1 would draw fractions of a pixel
as well, from pictures resampled once per avatar.)
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
from lipsync.mouth import SHAPES, Patch, draw_eyelid, draw_mouth
from lipsync.renderer import Frame

OPENNESS_LEVELS = 12  # mouth sprites drawn per viseme
BLINK_CLOSURE = (0.55, 1.0, 1.0, 0.45)  # eyelid per frame of a blink (at 25 fps: 160 ms)
BLINK_INTERVAL_S = (2.2, 5.5)  # seconds between blinks, drawn at random
SWAY_PX = 1.6  # idle motion amplitude, as pixels at a 512-pixel frame
NOD_PX = 2.0  # how far the head dips as the jaw opens
SWAY_PERIODS_S = (3.7, 2.9)  # sideways and up-down sway: never in step
# Positions per pixel the picture moves by. Whole pixels: x264's fastest preset searches
# whole-pixel motion only, and codes a quarter-pixel sway at five times the bytes (the page
# draws its own persona at any position; `lipcast bench render` measures the MP4).
STEPS = 1
CACHE_SIZE = 8


@dataclass(frozen=True, kw_only=True)
class PreparedAvatar:
    """An avatar fitted to the output frame with every sprite it needs."""

    base: Frame  # the avatar over its background, with a photo's own mouth erased
    geometry: FaceGeometry  # in output-frame pixels
    mouths: dict[tuple[Viseme, int], Patch]
    eyelids: dict[float, Patch]
    margin: int  # pixels of border around each shifted picture, more than the motion's reach
    shifted: dict[tuple[int, int], Frame]  # (x, y) in steps of 1/STEPS px -> base with border


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
        dx, dy = motion(n, self.fps, self.size, mouth.openness)
        # the nearest 1/STEPS-pixel position: whole pixels by slicing, the rest by picking
        # the picture drawn at that fraction of a pixel
        qx, qy = round(dx * STEPS), round(dy * STEPS)
        (whole_x, part_x), (whole_y, part_y) = divmod(qx, STEPS), divmod(qy, STEPS)
        m = prepared.margin
        source = prepared.shifted[(part_x, part_y)]
        top, left = m - whole_y, m - whole_x
        frame = source[top : top + self.size, left : left + self.size].copy()
        offset = (qx / STEPS, qy / STEPS)
        level = min(OPENNESS_LEVELS - 1, round(mouth.openness * (OPENNESS_LEVELS - 1)))
        paste_at(frame, prepared.mouths[(mouth.viseme, level)], prepared.geometry.mouth, offset)
        if lid > 0:
            patch = prepared.eyelids[lid]
            for eye in prepared.geometry.eyes:
                paste_at(frame, patch, eye, offset)
        return frame


def motion(n: int, fps: int, size: int, openness: float) -> tuple[float, float]:
    """How far the persona has moved, ``(dx, dy)`` in pixels, in absolute frame ``n``.

    A slow sway that depends only on the absolute time, so clips rendered one after another
    move as one take, and a dip as the jaw opens.
    """
    t = n / fps
    scale = size / 512
    sideways, updown = SWAY_PERIODS_S
    dx = SWAY_PX * scale * math.sin(2 * math.pi * t / sideways)
    dy = SWAY_PX * scale * 0.7 * math.sin(2 * math.pi * t / updown + 1.0)
    dy += NOD_PX * scale * openness
    return dx, dy


def paste_at(
    frame: Frame, patch: Patch, centre: tuple[float, float], offset: tuple[float, float]
) -> None:
    """Blend ``patch`` centred at ``centre`` moved by ``offset``, to the fraction of a pixel."""
    import cv2

    height, width = patch.shape[:2]
    left = centre[0] + offset[0] - width / 2
    top = centre[1] + offset[1] - height / 2
    x0, y0 = math.floor(left), math.floor(top)
    fx, fy = left - x0, top - y0
    if fx or fy:
        # a premultiplied patch interpolates correctly; one more pixel holds the moved edge
        matrix = np.array([[1.0, 0.0, fx], [0.0, 1.0, fy]], np.float32)
        patch = np.asarray(
            cv2.warpAffine(
                patch,
                matrix,
                (width + 1, height + 1),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(0.0, 0.0, 0.0, 0.0),
            ),
            np.float32,
        )
        height, width = height + 1, width + 1
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + width), min(frame.shape[0], y0 + height)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    part = patch[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    target = frame[fy0:fy1, fx0:fx1]
    # colour * 255 + frame * (1 - alpha), rounded: never above 255, so no clipping is needed
    blended = target.astype(np.float32)
    blended *= 1.0 - part[..., 3:4]
    blended += part[..., :3] * 255.0 + 0.5
    np.copyto(target, blended, casting="unsafe")


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
    margin = math.ceil((SWAY_PX + NOD_PX) * size / 512) + 2
    return PreparedAvatar(
        base=base,
        geometry=geometry,
        mouths=mouths,
        eyelids=eyelids,
        margin=margin,
        shifted=_shifted(base, margin),
    )


def _shifted(base: Frame, margin: int) -> dict[tuple[int, int], Frame]:
    """``base`` with ``margin`` pixels of its edges repeated around it, moved right and down
    by each fraction ``(i / STEPS, j / STEPS)`` of a pixel."""
    import cv2

    height, width = base.shape[:2]
    size = (width + 2 * margin, height + 2 * margin)
    shifted: dict[tuple[int, int], Frame] = {}
    for i in range(STEPS):
        for j in range(STEPS):
            matrix = np.array([[1.0, 0.0, margin + i / STEPS], [0.0, 1.0, margin + j / STEPS]])
            shifted[(i, j)] = np.asarray(
                cv2.warpAffine(
                    base, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
                ),
                np.uint8,
            )
    return shifted


def _erase_mouth(base: Frame, geometry: FaceGeometry) -> Frame:
    """Paint over a photo's own mouth so that only the drawn one shows."""
    import cv2

    mask = np.zeros(base.shape[:2], np.uint8)
    centre = (round(geometry.mouth[0]), round(geometry.mouth[1]))
    axes = (round(geometry.mouth_width * 0.62), round(geometry.mouth_width * 0.3))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1)
    return np.asarray(cv2.inpaint(base, mask, 5, cv2.INPAINT_TELEA), dtype=np.uint8)
