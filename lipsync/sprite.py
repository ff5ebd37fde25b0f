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

For the encoder the same frames come as YUV 4:2:0 (:meth:`SpriteRenderer.render_i420`): the
avatar's picture is converted once per avatar, and a frame converts only the box its sprites
cover, instead of converting all of every frame.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

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
    # (x, y) steps as above, then (x, y) parity -> that picture from that pixel on, as I420
    planes: dict[tuple[int, int, int, int], Frame]
    blend_cache: BlendCache = field(default_factory=dict)  # the sprites ready to blend


@dataclass(frozen=True, kw_only=True)
class _Place:
    """Where one frame's pieces go: the picture's window and the sprites over it."""

    step: tuple[int, int]  # which shifted picture (PreparedAvatar.shifted)
    top: int  # the window's corner in that picture
    left: int
    offset: tuple[float, float]  # the persona's motion in this frame, in pixels
    patches: tuple[tuple[Patch, tuple[float, float]], ...]  # (sprite, centre) blended on top


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
        for place in self._places(prepared, samples, sample_rate, avatar, start_frame):
            yield self._frame(prepared, place)

    def render_i420(
        self,
        samples: npt.NDArray[np.float32],
        sample_rate: int,
        avatar: Avatar,
        *,
        start_frame: int = 0,
        background: RGB | None = None,
    ) -> Iterator[Frame]:
        """The frames of :meth:`render` as YUV 4:2:0, what the H.264 encoder takes: OpenCV's
        ``COLOR_RGB2YUV_I420`` layout, ``size * 3 / 2`` rows of ``size`` bytes, equal to
        converting each RGB frame. Only the sprites' box is converted per frame; the rest is
        copied from the avatar's picture, converted once."""
        prepared = self.prepare(avatar, background)
        for place in self._places(prepared, samples, sample_rate, avatar, start_frame):
            yield self._frame_i420(prepared, place)

    def _places(
        self,
        prepared: PreparedAvatar,
        samples: npt.NDArray[np.float32],
        sample_rate: int,
        avatar: Avatar,
        start_frame: int,
    ) -> Iterator[_Place]:
        """Where each frame's pieces go: the mouth track, the blinks and the motion."""
        track = mouth_track(samples, sample_rate, self.fps)
        blinks = _blink_schedule(start_frame, len(track), self.fps, seed=avatar.key)
        for index, mouth in enumerate(track):
            yield self._place(prepared, mouth, blinks.get(index, 0.0), start_frame + index)

    def _place(self, prepared: PreparedAvatar, mouth: MouthFrame, lid: float, n: int) -> _Place:
        dx, dy = motion(n, self.fps, self.size, mouth.openness)
        # the nearest 1/STEPS-pixel position: whole pixels by slicing, the rest by picking
        # the picture drawn at that fraction of a pixel
        qx, qy = round(dx * STEPS), round(dy * STEPS)
        (whole_x, part_x), (whole_y, part_y) = divmod(qx, STEPS), divmod(qy, STEPS)
        level = min(OPENNESS_LEVELS - 1, round(mouth.openness * (OPENNESS_LEVELS - 1)))
        patches = [(prepared.mouths[(mouth.viseme, level)], prepared.geometry.mouth)]
        if lid > 0:
            patches += [(prepared.eyelids[lid], eye) for eye in prepared.geometry.eyes]
        return _Place(
            step=(part_x, part_y),
            top=prepared.margin - whole_y,
            left=prepared.margin - whole_x,
            offset=(qx / STEPS, qy / STEPS),
            patches=tuple(patches),
        )

    def _frame(self, prepared: PreparedAvatar, place: _Place) -> Frame:
        source = prepared.shifted[place.step]
        top, left = place.top, place.left
        frame = source[top : top + self.size, left : left + self.size].copy()
        for patch, centre in place.patches:
            paste_at(frame, patch, centre, place.offset, prepared.blend_cache)
        return frame

    def _frame_i420(self, prepared: PreparedAvatar, place: _Place) -> Frame:
        import cv2

        size = self.size
        top, left = place.top, place.left
        # the picture converted from the window's parity on: the window starts on even pixels
        planes = prepared.planes[(*place.step, left % 2, top % 2)]
        y0, x0 = top - top % 2, left - left % 2
        frame = np.empty((size * 3 // 2, size), np.uint8)
        frame[:size] = planes[y0 : y0 + size, x0 : x0 + size]
        for chroma in (0, 1):  # U, then V: quarter-size planes
            _plane(frame, size, chroma)[:] = _plane(planes, planes.shape[1], chroma)[
                y0 // 2 : (y0 + size) // 2, x0 // 2 : (x0 + size) // 2
            ]
        # the sprites, blended in RGB over their box of the picture, then converted
        bx0, by0, bx1, by1 = _sprite_box(place, size)
        if bx1 <= bx0 or by1 <= by0:
            return frame
        source = prepared.shifted[place.step]
        box = source[top + by0 : top + by1, left + bx0 : left + bx1].copy()
        for patch, (cx, cy) in place.patches:
            paste_at(box, patch, (cx - bx0, cy - by0), place.offset, prepared.blend_cache)
        small = np.asarray(cv2.cvtColor(box, cv2.COLOR_RGB2YUV_I420), np.uint8)
        height, width = by1 - by0, bx1 - bx0
        frame[by0:by1, bx0:bx1] = small[:height]
        for chroma in (0, 1):
            _plane(frame, size, chroma)[by0 // 2 : by1 // 2, bx0 // 2 : bx1 // 2] = _plane(
                small, width, chroma
            )
        return frame


def _plane(i420: Frame, width: int, chroma: int) -> Frame:
    """The U (``chroma`` 0) or V (1) plane of contiguous I420 planes ``width`` pixels wide, as
    a 2-D view (the planes follow each other byte by byte, not row by row)."""
    height = i420.shape[0] * 2 // 3
    area = height * width
    start = area + chroma * (area // 4)
    return i420.reshape(-1)[start : start + area // 4].reshape(height // 2, width // 2)


def _sprite_box(place: _Place, size: int) -> tuple[int, int, int, int]:
    """The even-aligned box of the frame that ``place``'s sprites touch (as :func:`paste_at`
    places them): ``(x0, y0, x1, y1)``, within the frame."""
    x0 = y0 = size
    x1 = y1 = 0
    for patch, (cx, cy) in place.patches:
        height, width = patch.shape[:2]
        left = cx + place.offset[0] - width / 2
        top = cy + place.offset[1] - height / 2
        px, py = math.floor(left), math.floor(top)
        x0, y0 = min(x0, px), min(y0, py)
        x1, y1 = max(x1, px + width + 1), max(y1, py + height + 1)  # + the moved edge
    x0, y0 = max(0, x0 - x0 % 2), max(0, y0 - y0 % 2)
    x1, y1 = min(size, x1 + x1 % 2), min(size, y1 + y1 % 2)
    return x0, y0, x1, y1


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
    frame: Frame,
    patch: Patch,
    centre: tuple[float, float],
    offset: tuple[float, float],
    cache: BlendCache | None = None,
) -> None:
    """Blend ``patch`` centred at ``centre`` moved by ``offset``, to the fraction of a pixel.

    ``cache`` keeps each patch ready to blend at each fraction of a pixel it was placed at
    (the renderer's: a patch at whole-pixel offsets always has the same fraction)."""
    height, width = patch.shape[:2]
    left = centre[0] + offset[0] - width / 2
    top = centre[1] + offset[1] - height / 2
    x0, y0 = math.floor(left), math.floor(top)
    fx, fy = left - x0, top - y0
    key = (id(patch), fx, fy)
    ready = cache.get(key) if cache is not None else None
    if ready is None:
        ready = _ready_to_blend(patch, fx, fy)
        if cache is not None:
            cache[key] = ready
    keep, colour = ready
    height, width = keep.shape[:2]
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + width), min(frame.shape[0], y0 + height)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    rows, columns = slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0)
    target = frame[fy0:fy1, fx0:fx1]
    # colour * 255 + frame * (1 - alpha), rounded: never above 255, so no clipping is needed
    blended = target.astype(np.float32)
    blended *= keep[rows, columns]
    blended += colour[rows, columns]
    np.copyto(target, blended, casting="unsafe")


# (id of a patch, fraction of a pixel x, y) -> (1 - alpha, colour * 255 + 0.5)
BlendCache = dict[tuple[int, float, float], tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]


def _ready_to_blend(
    patch: Patch, fx: float, fy: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``patch`` moved by ``(fx, fy)`` of a pixel, as what blending it takes: 1 - alpha, and
    the premultiplied colour scaled to 0..255 with the rounding's half added."""
    import cv2

    if fx or fy:
        # a premultiplied patch interpolates correctly; one more pixel holds the moved edge
        height, width = patch.shape[:2]
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
    keep = np.asarray(1.0 - patch[..., 3:4], np.float32)
    colour = np.asarray(patch[..., :3] * 255.0 + 0.5, np.float32)
    return keep, colour


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
    shifted = _shifted(base, margin)
    return PreparedAvatar(
        base=base,
        geometry=geometry,
        mouths=mouths,
        eyelids=eyelids,
        margin=margin,
        shifted=shifted,
        planes=_planes(shifted),
    )


def _planes(shifted: dict[tuple[int, int], Frame]) -> dict[tuple[int, int, int, int], Frame]:
    """Each shifted picture as I420 from each pixel parity on (cut to even sides), so that a
    frame's window of it starts on the chroma grid whatever its position."""
    import cv2

    planes: dict[tuple[int, int, int, int], Frame] = {}
    for (i, j), picture in shifted.items():
        height, width = picture.shape[:2]
        for px in (0, 1):
            for py in (0, 1):
                part = picture[py : py + (height - py) // 2 * 2, px : px + (width - px) // 2 * 2]
                converted = cv2.cvtColor(np.ascontiguousarray(part), cv2.COLOR_RGB2YUV_I420)
                planes[(i, j, px, py)] = np.asarray(converted, np.uint8)
    return planes


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
