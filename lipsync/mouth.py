"""Drawing the sprite renderer's mouths and eyelids, anti-aliased, as premultiplied patches.

Shapes are drawn at four times their size with Pillow and scaled down, which gives clean edges
at any mouth size. A patch is a float32 array (height, width, 4) with premultiplied colour, so
putting it on a frame is one multiply-add.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageChops, ImageDraw

from lipsync.audio_features import Viseme

SUPERSAMPLE = 4
Patch = npt.NDArray[np.float32]
RGB = tuple[int, int, int]

INTERIOR: RGB = (58, 16, 22)
TEETH: RGB = (246, 242, 234)
TONGUE: RGB = (196, 86, 106)
LASH: RGB = (40, 28, 30)


@dataclass(frozen=True, kw_only=True)
class MouthShape:
    """Proportions of one viseme, relative to the mouth's width at rest."""

    half_width: float  # half the corner-to-corner width
    max_gap: float  # height of the opening at full openness
    roundness: float  # 0: flat spread lips .. 1: an O
    teeth: bool
    tongue: bool


SHAPES: dict[Viseme, MouthShape] = {
    Viseme.CLOSED: MouthShape(
        half_width=0.5, max_gap=0.0, roundness=0.0, teeth=False, tongue=False
    ),
    Viseme.HALF: MouthShape(half_width=0.5, max_gap=0.42, roundness=0.3, teeth=True, tongue=False),
    Viseme.OPEN: MouthShape(half_width=0.52, max_gap=0.46, roundness=0.45, teeth=True, tongue=True),
    Viseme.ROUNDED: MouthShape(
        half_width=0.3, max_gap=0.5, roundness=1.0, teeth=False, tongue=False
    ),
    Viseme.WIDE: MouthShape(half_width=0.58, max_gap=0.42, roundness=0.0, teeth=True, tongue=False),
}

UPPER_LIP = 0.085  # lip thickness, relative to mouth width
LOWER_LIP = 0.12
SMILE = 0.05  # how far the corners sit above the centre line
MOUTH_PATCH = (1.5, 1.1)  # patch width and height, relative to mouth width


def _darker(color: RGB, factor: float) -> RGB:
    r, g, b = color
    return (int(r * factor), int(g * factor), int(b * factor))


def _to_patch(image: Image.Image, size: tuple[int, int]) -> Patch:
    small = image.resize(size, Image.Resampling.LANCZOS)
    array = np.asarray(small, dtype=np.float32) / 255.0
    array[..., :3] *= array[..., 3:4]
    return array


def draw_mouth(shape: MouthShape, openness: float, width: float, lip: RGB) -> Patch:
    """A mouth ``width`` pixels wide at rest, opened by ``openness`` (0..1), centred in a patch."""
    out_w = max(8, round(width * MOUTH_PATCH[0]))
    out_h = max(6, round(width * MOUTH_PATCH[1]))
    s = SUPERSAMPLE
    w = width * s
    cx, cy = out_w * s / 2, out_h * s / 2
    half = shape.half_width * w * (1.0 - 0.15 * openness * shape.roundness)
    gap = shape.max_gap * w * openness
    t = np.linspace(-1.0, 1.0, 48)
    exponent = 0.5 + 0.5 * (1.0 - shape.roundness)  # 0.5 is an ellipse; 1.0 a flatter lens
    profile = (1.0 - t**2) ** exponent
    lift = SMILE * w * t**2 * (1.0 - 0.6 * openness)  # corners up, less when opening
    xs = cx + t * half
    upper_inner = cy - gap / 2 * profile - lift
    lower_inner = cy + gap / 2 * profile - lift
    bow = 1.0 - 0.35 * np.exp(-((t / 0.18) ** 2))  # cupid's bow: a dip in the upper lip
    lip_taper = (1.0 - t**2) ** 0.5
    upper_outer = upper_inner - UPPER_LIP * w * lip_taper * bow
    lower_outer = lower_inner + LOWER_LIP * w * lip_taper

    image = Image.new("RGBA", (out_w * s, out_h * s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    outline = [*zip(xs, upper_outer, strict=True), *zip(xs[::-1], lower_outer[::-1], strict=True)]
    draw.polygon(outline, fill=(*lip, 255))
    if gap > 0.5 * s:
        opening = [
            *zip(xs, upper_inner, strict=True),
            *zip(xs[::-1], lower_inner[::-1], strict=True),
        ]
        draw.polygon(opening, fill=(*INTERIOR, 255))
        inner = Image.new("L", image.size, 0)
        ImageDraw.Draw(inner).polygon(opening, fill=255)
        details = Image.new("RGBA", image.size, (0, 0, 0, 0))
        detail_draw = ImageDraw.Draw(details)
        if shape.teeth:
            teeth_h = min(gap * 0.32, 0.09 * w)
            detail_draw.rectangle(
                (cx - half, cy - gap / 2 - w, cx + half, cy - gap / 2 + teeth_h), fill=(*TEETH, 255)
            )
        if shape.tongue and openness > 0.45:
            tongue_w, tongue_h = half * 0.9, gap * 0.45
            detail_draw.ellipse(
                (cx - tongue_w, cy + gap / 2 - tongue_h, cx + tongue_w, cy + gap / 2 + tongue_h),
                fill=(*TONGUE, 255),
            )
        image.paste(details, (0, 0), ImageChops.darker(details.getchannel("A"), inner))
    else:
        line = list(zip(xs, (upper_inner + lower_inner) / 2, strict=True))
        draw.line(line, fill=(*_darker(lip, 0.45), 255), width=max(2, round(0.035 * w)))
    return _to_patch(image, (out_w, out_h))


def draw_eyelid(eye_size: tuple[float, float], closed: float, skin: RGB) -> Patch:
    """An upper eyelid over an eye of ``eye_size`` pixels, ``closed`` from 0 (open) to 1."""
    eye_w, eye_h = eye_size
    out_w, out_h = max(4, round(eye_w * 1.3)), max(4, round(eye_h * 1.4))
    s = SUPERSAMPLE
    cx, cy = out_w * s / 2, out_h * s / 2
    rx, ry = eye_w * s / 2 * 1.08, eye_h * s / 2 * 1.12
    lid_edge = cy - ry + 2 * ry * closed  # the eyelid's lower edge moves down as it closes
    eye = Image.new("L", (out_w * s, out_h * s), 0)
    ImageDraw.Draw(eye).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    cover = Image.new("L", eye.size, 0)
    ImageDraw.Draw(cover).rectangle((0, 0, out_w * s, lid_edge), fill=255)
    mask = ImageChops.darker(eye, cover)
    image = Image.new("RGBA", eye.size, (0, 0, 0, 0))
    image.paste(Image.new("RGBA", eye.size, (*skin, 255)), (0, 0), mask)
    draw = ImageDraw.Draw(image)
    half_chord = rx * np.sqrt(max(0.0, 1.0 - ((lid_edge - cy) / ry) ** 2))
    if closed >= 0.95:  # a closed eye: a lash line curving down
        xs = np.linspace(-rx, rx, 24)
        ys = cy + 0.25 * ry * (1.0 - (xs / rx) ** 2)
        draw.line(
            list(zip(cx + xs, ys, strict=True)), fill=(*LASH, 255), width=max(2, round(s * 1.6))
        )
    elif half_chord > 0:
        draw.line(
            [(cx - half_chord, lid_edge), (cx + half_chord, lid_edge)],
            fill=(*LASH, 255),
            width=max(2, round(s * 1.4)),
        )
    return _to_patch(image, (out_w, out_h))


def paste(frame: npt.NDArray[np.uint8], patch: Patch, centre: tuple[float, float]) -> None:
    """Blend a premultiplied patch onto an RGB frame in place, centred at ``centre``."""
    ph, pw = patch.shape[:2]
    x0 = round(centre[0] - pw / 2)
    y0 = round(centre[1] - ph / 2)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + pw), min(frame.shape[0], y0 + ph)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    part = patch[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    region = part[..., :3] * 255.0 + region * (1.0 - part[..., 3:4])
    frame[fy0:fy1, fx0:fx1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
