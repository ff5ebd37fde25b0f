"""Draw the avatars of the built-in personas.

``python -m personas.artwork`` (re)writes ``personas/<id>/avatar.png`` for every built-in
persona and prints the avatar geometry to copy into its ``persona.toml``. Each avatar is drawn
at ``SUPERSAMPLE`` times its size with Pillow and scaled down with a Lanczos filter, which
gives clean anti-aliased edges without any other drawing library.

The sprite renderer animates these images, which sets three rules for every drawing:

* no mouth: the skin around the mouth point is plain, the renderer draws the mouth there;
* open eyes that an ellipse of ``eye_size`` in the skin colour covers completely (a blink);
* the geometry in persona.toml is exactly :meth:`AvatarArt.geometry` of the drawing.

All coordinates below are pixels of the final ``AVATAR_SIZE`` image, x to the right and y
down; the ``Canvas`` scales them up when it draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path as FilePath

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

AVATAR_SIZE = 512
SUPERSAMPLE = 4  # drawing scale; the Lanczos downscale turns it into anti-aliasing
CANVAS_SIZE = AVATAR_SIZE * SUPERSAMPLE
CURVE_STEPS = 32  # line segments per Bézier curve
ELLIPSE_STEPS = 120  # line segments per full ellipse
EYELID_MARGIN = 6  # what the eyelid covers around the eye white: the lash line and its flick
MOUTH_WIDTH_RATIO = 0.31  # mouth corner to corner, as a share of the face's width
OUTLINE_WIDTH = 2.5  # the cartoon contour around skin, hair and clothes
HERE = FilePath(__file__).resolve().parent

RGB = tuple[int, int, int]
Point = tuple[float, float]
Paint = RGB | Image.Image  # a flat colour, or a CANVAS_SIZE RGB image such as a gradient


# --- colours ------------------------------------------------------------------------------


def rgb(hex_colour: str) -> RGB:
    """``"#rrggbb"`` as a tuple of three ints."""
    value = hex_colour.lstrip("#")
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


def to_hex(colour: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


WHITE: RGB = (255, 255, 255)


# --- shapes (lists of points) -------------------------------------------------------------


class Path:
    """A polyline built from straight lines and cubic Bézier curves."""

    def __init__(self, start: Point) -> None:
        self.points: list[Point] = [start]

    def line(self, end: Point) -> Path:
        self.points.append(end)
        return self

    def curve(self, control1: Point, control2: Point, end: Point) -> Path:
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = self.points[-1], control1, control2, end
        for step in range(1, CURVE_STEPS + 1):
            t = step / CURVE_STEPS
            u = 1 - t
            self.points.append(
                (
                    u**3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t**3 * x3,
                    u**3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t**3 * y3,
                )
            )
        return self


def ellipse(
    centre: Point, radii: Point, start_deg: float = 0.0, end_deg: float = 360.0
) -> list[Point]:
    """Points on an ellipse, or on an arc of it (angles clockwise from 3 o'clock, y down)."""
    (cx, cy), (rx, ry) = centre, radii
    steps = max(8, round(ELLIPSE_STEPS * abs(end_deg - start_deg) / 360))
    angles = (math.radians(start_deg + (end_deg - start_deg) * i / steps) for i in range(steps + 1))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def mirrored(right_half: Sequence[Point], axis_x: float) -> list[Point]:
    """A symmetric outline from its right half, drawn from the top of the axis clockwise."""
    left_half = [(2 * axis_x - x, y) for x, y in reversed(right_half)]
    return [*right_half, *left_half]


def ribbon(spine: Sequence[Point], width_at: Callable[[float], float]) -> list[Point]:
    """A filled band along ``spine``; ``width_at(t)`` gives its width from t=0 to t=1."""
    left: list[Point] = []
    right: list[Point] = []
    last = len(spine) - 1
    for i, (x, y) in enumerate(spine):
        (ax, ay), (bx, by) = spine[max(i - 1, 0)], spine[min(i + 1, last)]
        length = math.hypot(bx - ax, by - ay) or 1.0
        nx, ny = -(by - ay) / length, (bx - ax) / length
        half = width_at(i / last) / 2
        left.append((x + nx * half, y + ny * half))
        right.append((x - nx * half, y - ny * half))
    return [*left, *reversed(right)]


def thinning(width: float) -> Callable[[float], float]:
    """A width profile that starts at ``width`` and thins towards the end."""
    return lambda t: width * (1.0 - 0.8 * t)


def thickening(width: float) -> Callable[[float], float]:
    """A lash line: thin at the inner corner, full ``width`` towards the outer corner."""
    return lambda t: width * (0.35 + 0.65 * math.sin(math.pi / 2 * min(1.0, t * 1.4)))


# --- the canvas ---------------------------------------------------------------------------


class Canvas:
    """An RGBA drawing surface at SUPERSAMPLE scale that takes avatar-pixel coordinates."""

    def __init__(self) -> None:
        self.image = Image.new("RGBA", (CANVAS_SIZE, CANVAS_SIZE), (0, 0, 0, 0))

    @staticmethod
    def _scaled(points: Sequence[Point]) -> list[tuple[float, float]]:
        return [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in points]

    @staticmethod
    def blank_mask() -> Image.Image:
        return Image.new("L", (CANVAS_SIZE, CANVAS_SIZE), 0)

    def shape_mask(self, outline: Sequence[Point]) -> Image.Image:
        mask = self.blank_mask()
        ImageDraw.Draw(mask).polygon(self._scaled(outline), fill=255)
        return mask

    def line_mask(
        self, points: Sequence[Point], width: float, *, closed: bool = False
    ) -> Image.Image:
        """A line of ``width`` through ``points``, with round joints and round ends."""
        mask = self.blank_mask()
        draw = ImageDraw.Draw(mask)
        scaled = self._scaled([*points, points[0]] if closed else points)
        pixels = max(1, round(width * SUPERSAMPLE))
        draw.line(scaled, fill=255, width=pixels, joint="curve")
        radius = pixels / 2
        for x, y in (scaled[0], scaled[-1]):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
        return mask

    def paint(
        self,
        mask: Image.Image,
        paint: Paint,
        *,
        clip: Image.Image | None = None,
        opacity: float = 1.0,
    ) -> None:
        """Lay ``paint`` over the drawing where ``mask`` (and ``clip``, if given) is set."""
        alpha = ImageChops.multiply(mask, clip) if clip is not None else mask
        if opacity < 1.0:
            alpha = alpha.point(lambda value: round(value * opacity))
        if isinstance(paint, Image.Image):
            layer = paint.convert("RGBA")
        else:
            layer = Image.new("RGBA", (CANVAS_SIZE, CANVAS_SIZE), (*paint, 255))
        layer.putalpha(alpha)
        self.image.alpha_composite(layer)

    def shape(
        self,
        outline: Sequence[Point],
        paint: Paint,
        *,
        line: RGB | None = None,
        line_width: float = OUTLINE_WIDTH,
        clip: Image.Image | None = None,
    ) -> Image.Image:
        """Fill a closed outline (and draw its contour); returns its mask for clipping."""
        mask = self.shape_mask(outline)
        self.paint(mask, paint, clip=clip)
        if line is not None:
            self.paint(self.line_mask(outline, line_width, closed=True), line, clip=clip)
        return mask

    def stroke(
        self,
        points: Sequence[Point],
        colour: RGB,
        width: float,
        *,
        closed: bool = False,
        clip: Image.Image | None = None,
        opacity: float = 1.0,
    ) -> None:
        self.paint(self.line_mask(points, width, closed=closed), colour, clip=clip, opacity=opacity)

    def soft(
        self,
        mask: Image.Image,
        colour: RGB,
        *,
        blur: float,
        offset: Point = (0.0, 0.0),
        clip: Image.Image | None = None,
        opacity: float = 1.0,
    ) -> None:
        """A blurred copy of ``mask`` in ``colour``: shadows, blush, glow."""
        dx, dy = offset
        moved = ImageChops.offset(mask, round(dx * SUPERSAMPLE), round(dy * SUPERSAMPLE))
        blurred = moved.filter(ImageFilter.GaussianBlur(blur * SUPERSAMPLE))
        self.paint(blurred, colour, clip=clip, opacity=opacity)

    def inner_shade(
        self, mask: Image.Image, colour: RGB, *, depth: float, opacity: float = 1.0
    ) -> None:
        """Darken a shape along its inside edge, fading out ``depth`` pixels inwards."""
        inside = mask.filter(ImageFilter.GaussianBlur(depth * SUPERSAMPLE / 2))
        self.paint(ImageChops.invert(inside), colour, clip=mask, opacity=opacity)

    def result(self) -> Image.Image:
        return self.image.resize((AVATAR_SIZE, AVATAR_SIZE), Image.Resampling.LANCZOS)


def vertical_gradient(top: RGB, bottom: RGB, y_top: float, y_bottom: float) -> Image.Image:
    """A canvas-sized paint that goes from ``top`` at ``y_top`` to ``bottom`` at ``y_bottom``."""
    rows = (np.arange(CANVAS_SIZE) + 0.5) / SUPERSAMPLE
    share = np.clip((rows - y_top) / (y_bottom - y_top), 0.0, 1.0)[:, None]
    colours = np.array(top, dtype=np.float64) * (1 - share) + np.array(bottom) * share
    pixels = np.broadcast_to(colours[:, None, :], (CANVAS_SIZE, CANVAS_SIZE, 3))
    return Image.fromarray(np.ascontiguousarray(np.rint(pixels).astype(np.uint8)))


# --- the face, shared by every persona ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FaceLayout:
    """Where a face and its features are; every persona's geometry is derived from it."""

    centre_x: int = AVATAR_SIZE // 2
    centre_y: int  # middle of the face oval
    half_width: int
    half_height: int
    jaw_roundness: (
        float  # superellipse exponent of the lower face: 2 is an ellipse, more is squarer
    )
    chin_taper: float  # how much the jaw narrows towards the chin (0: not at all)
    eye_y: int
    eye_spacing: int  # from the face's centre line to the centre of each eye
    eye_white: tuple[int, int]  # width and height of the white of one eye
    iris_radius: float
    pupil_radius: float
    lash_width: float  # the upper lash line
    brow_rise: int  # from the eye centre up to the brow
    brow_width: float
    nose_y: int  # the tip of the nose
    mouth_y: int
    cheek_spacing: int  # from the centre line to each blush
    cheek_y: int
    ear_y: int
    neck_half_width: int

    @property
    def top(self) -> int:
        return self.centre_y - self.half_height

    @property
    def chin(self) -> int:
        return self.centre_y + self.half_height

    @property
    def eyes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (
            (self.centre_x - self.eye_spacing, self.eye_y),
            (self.centre_x + self.eye_spacing, self.eye_y),
        )

    @property
    def eye_size(self) -> tuple[int, int]:
        """The eyelid that covers one whole eye, lashes included."""
        width, height = self.eye_white
        return (width + 2 * EYELID_MARGIN, height + 2 * EYELID_MARGIN)

    @property
    def mouth(self) -> tuple[int, int]:
        return (self.centre_x, self.mouth_y)

    @property
    def mouth_width(self) -> int:
        return round(2 * self.half_width * MOUTH_WIDTH_RATIO)

    def outline(self) -> list[Point]:
        """The face: a round cranium over a superellipse jaw that narrows to the chin."""
        points: list[Point] = []
        for step in range(ELLIPSE_STEPS):
            angle = 2 * math.pi * step / ELLIPSE_STEPS
            cos, sin = math.cos(angle), math.sin(angle)
            exponent = 2 / self.jaw_roundness if sin > 0 else 1.0  # the cranium stays round
            x = math.copysign(abs(cos) ** exponent, cos) * self.half_width
            y = math.copysign(abs(sin) ** exponent, sin) * self.half_height
            if y > 0:
                x *= 1 - self.chin_taper * (y / self.half_height) ** 2
            points.append((self.centre_x + x, self.centre_y + y))
        return points


@dataclass(frozen=True, kw_only=True)
class FacePalette:
    skin: RGB  # the flat skin at the mouth and the eyes; eyelids are drawn in it
    skin_shade: RGB
    skin_line: RGB
    blush: RGB
    lip: RGB  # the renderer's mouth colour (nothing is drawn in it here)
    eye_white: RGB
    iris: RGB
    iris_dark: RGB
    pupil: RGB
    lash: RGB
    brow: RGB


def draw_neck(canvas: Canvas, face: FaceLayout, colours: FacePalette) -> None:
    cx, width = face.centre_x, face.neck_half_width
    top, bottom = face.chin - 50, face.chin + 80
    outline = [
        (cx - width, top),
        (cx + width, top),
        (cx + width + 4, bottom),
        (cx - width - 4, bottom),
    ]
    neck = canvas.shape(outline, colours.skin, line=colours.skin_line)
    jaw = canvas.shape_mask(face.outline())
    canvas.soft(jaw, colours.skin_shade, blur=4, offset=(0, 12), clip=neck)


def draw_ears(canvas: Canvas, face: FaceLayout, colours: FacePalette) -> None:
    ear_radii = (face.half_width * 0.15, face.half_width * 0.24)
    for side in (-1, 1):
        centre = (face.centre_x + side * (face.half_width - 2), face.ear_y)
        canvas.shape(ellipse(centre, ear_radii), colours.skin, line=colours.skin_line)
        inner_start, inner_end = (-60, 60) if side > 0 else (120, 240)
        inner = ellipse(centre, (ear_radii[0] * 0.5, ear_radii[1] * 0.55), inner_start, inner_end)
        canvas.stroke(inner, colours.skin_shade, 2.5)


def draw_face(canvas: Canvas, face: FaceLayout, colours: FacePalette) -> Image.Image:
    """The face with soft shading at its edge; returns its mask."""
    mask = canvas.shape(face.outline(), colours.skin)
    canvas.inner_shade(mask, colours.skin_shade, depth=18, opacity=0.8)
    canvas.stroke(face.outline(), colours.skin_line, OUTLINE_WIDTH, closed=True)
    return mask


def draw_cheeks(canvas: Canvas, face: FaceLayout, colours: FacePalette) -> None:
    radii = (face.half_width * 0.15, face.half_width * 0.09)
    for side in (-1, 1):
        centre = (face.centre_x + side * face.cheek_spacing, face.cheek_y)
        canvas.soft(canvas.shape_mask(ellipse(centre, radii)), colours.blush, blur=4, opacity=0.55)


def draw_nose(canvas: Canvas, face: FaceLayout, colours: FacePalette) -> None:
    """A small cartoon nose: the curve under its tip, a shade on its side and a highlight."""
    cx, tip = face.centre_x, face.nose_y
    size = face.half_width * 0.07
    bridge = ellipse((cx + size * 0.6, tip - size * 1.6), (size * 0.7, size * 1.8))
    canvas.soft(canvas.shape_mask(bridge), colours.skin_shade, blur=2.5, opacity=0.7)
    canvas.stroke(ellipse((cx, tip - size), (size, size), 20, 160), colours.skin_line, 2.5)
    highlight = ellipse((cx - size * 0.3, tip - size * 1.5), (size * 0.45, size * 0.45))
    canvas.soft(canvas.shape_mask(highlight), WHITE, blur=1.2, opacity=0.5)


def draw_eye(canvas: Canvas, face: FaceLayout, colours: FacePalette, side: int) -> None:
    """One open eye (side -1: the viewer's left, +1: right), well inside ``face.eye_size``."""
    cx, cy = face.eyes[0] if side < 0 else face.eyes[1]
    rx, ry = face.eye_white[0] / 2, face.eye_white[1] / 2
    white = canvas.shape(ellipse((cx, cy), (rx, ry)), colours.eye_white)
    lid_shadow = ellipse((cx, cy - ry * 0.9), (rx * 1.1, ry * 0.45))
    canvas.soft(canvas.shape_mask(lid_shadow), colours.iris_dark, blur=2, clip=white, opacity=0.3)

    iris_radius, pupil_radius = face.iris_radius, face.pupil_radius
    iris_paint = vertical_gradient(
        colours.iris_dark, colours.iris, cy - iris_radius, cy + iris_radius
    )
    canvas.shape(ellipse((cx, cy), (iris_radius, iris_radius)), iris_paint, clip=white)
    ring = ellipse((cx, cy), (iris_radius, iris_radius))
    canvas.stroke(ring, colours.iris_dark, 1.2, closed=True, clip=white)
    canvas.shape(ellipse((cx, cy), (pupil_radius, pupil_radius)), colours.pupil, clip=white)
    sparkle = (cx - iris_radius * 0.35, cy - iris_radius * 0.4)
    canvas.shape(ellipse(sparkle, (iris_radius * 0.32,) * 2), WHITE, clip=white)
    glint = (cx + iris_radius * 0.4, cy + iris_radius * 0.4)
    canvas.shape(ellipse(glint, (iris_radius * 0.14,) * 2), WHITE, clip=white)

    canvas.stroke(ellipse((cx, cy), (rx, ry)), colours.lash, 1.4, closed=True)
    outer_corner_deg = 0.0 if side > 0 else 180.0
    upper_lid = ellipse((cx, cy), (rx, ry), 195, 345)
    if side < 0:
        upper_lid.reverse()  # run from the inner corner to the outer one
    canvas.paint(canvas.shape_mask(ribbon(upper_lid, thickening(face.lash_width))), colours.lash)
    corner_x = cx + rx * math.cos(math.radians(outer_corner_deg))
    flick_start = upper_lid[-1]
    flick = Path(flick_start).curve(
        (corner_x + side * 1.5, cy - ry * 0.25),
        (corner_x + side * 2.5, cy - ry * 0.3),
        (corner_x + side * (EYELID_MARGIN - 3.5), cy - ry * 0.4),
    )
    canvas.paint(
        canvas.shape_mask(ribbon(flick.points, thinning(face.lash_width * 0.8))), colours.lash
    )


def draw_brows(canvas: Canvas, face: FaceLayout, colours: FacePalette) -> None:
    half = face.eye_white[0] * 0.62
    for (cx, cy), side in zip(face.eyes, (-1, 1), strict=True):
        brow_y = cy - face.brow_rise
        inner, outer = (cx - side * half, brow_y + 2), (cx + side * half, brow_y + 3)
        arch = Path(inner).curve(
            (cx - side * half * 0.4, brow_y - 4), (cx + side * half * 0.5, brow_y - 5), outer
        )
        canvas.paint(
            canvas.shape_mask(ribbon(arch.points, thinning(face.brow_width))), colours.brow
        )


def draw_features(canvas: Canvas, face: FaceLayout, colours: FacePalette) -> None:
    draw_cheeks(canvas, face, colours)
    draw_nose(canvas, face, colours)
    for side in (-1, 1):
        draw_eye(canvas, face, colours, side)
    draw_brows(canvas, face, colours)


# --- a persona's avatar -------------------------------------------------------------------


Feature = Callable[[Canvas, FaceLayout], None]


@dataclass(frozen=True, kw_only=True)
class AvatarArt:
    """Everything needed to draw one persona's avatar, in the order it is painted."""

    persona_id: str
    background: RGB  # behind the transparent avatar in MP4 clips
    face: FaceLayout
    colours: FacePalette
    behind_head: Feature  # hair at the back of the head
    behind_neck: Feature  # what the neck hides, such as the back of a hood
    body: Feature  # clothes over the neck and shoulders
    over_face: Feature  # front hair, glasses, headphones

    def render(self) -> Image.Image:
        canvas = Canvas()
        self.behind_head(canvas, self.face)
        self.behind_neck(canvas, self.face)
        draw_neck(canvas, self.face, self.colours)
        self.body(canvas, self.face)
        draw_ears(canvas, self.face, self.colours)
        draw_face(canvas, self.face, self.colours)
        draw_features(canvas, self.face, self.colours)
        self.over_face(canvas, self.face)
        return canvas.result()

    def geometry(self) -> dict[str, object]:
        """The ``[avatar]`` table of persona.toml that matches this drawing."""
        return {
            "image": "avatar.png",
            "background": to_hex(self.background),
            "mouth": self.face.mouth,
            "mouth_width": self.face.mouth_width,
            "eyes": self.face.eyes,
            "eye_size": self.face.eye_size,
            "skin": to_hex(self.colours.skin),
            "lip": to_hex(self.colours.lip),
        }


# --- cohost: Nova, a young streamer with pastel hair and cat-ear headphones ----------------

COHOST_FACE = FaceLayout(
    centre_y=226,
    half_width=116,
    half_height=124,
    jaw_roundness=2.6,
    chin_taper=0.15,
    eye_y=226,
    eye_spacing=50,
    eye_white=(42, 48),
    iris_radius=16.5,
    pupil_radius=7.5,
    lash_width=4.5,
    brow_rise=46,
    brow_width=7.5,
    nose_y=258,
    mouth_y=296,
    cheek_spacing=84,
    cheek_y=268,
    ear_y=244,
    neck_half_width=42,
)

COHOST_COLOURS = FacePalette(
    skin=rgb("#f8d8c4"),
    skin_shade=rgb("#ebb59c"),
    skin_line=rgb("#b97a66"),
    blush=rgb("#f7889a"),
    lip=rgb("#d9657b"),
    eye_white=rgb("#fdfcff"),
    iris=rgb("#4fd6c8"),
    iris_dark=rgb("#1f6f8b"),
    pupil=rgb("#16213b"),
    lash=rgb("#2f2340"),
    brow=rgb("#6e3f86"),
)

COHOST_HAIR_TOP = rgb("#ff8acb")
COHOST_HAIR_BOTTOM = rgb("#9a6bff")
COHOST_HAIR_LINE = rgb("#5a3596")
COHOST_HAIR_SHINE = rgb("#ffd1ec")
HEADPHONE_SHELL = rgb("#f5f3fb")
HEADPHONE_SHADE = rgb("#c9c3e0")
HEADPHONE_LINE = rgb("#4b4470")
HEADPHONE_ACCENT = rgb("#52e3d3")
CAT_EAR_INSIDE = rgb("#ff9dcc")
HOODIE = rgb("#3d4290")
HOODIE_SHADE = rgb("#2a2d66")
HOODIE_LIGHT = rgb("#5158a8")
HOODIE_LINE = rgb("#1a1c42")
HOODIE_STRING = rgb("#52e3d3")
HOODIE_BOTTOM = AVATAR_SIZE + 4  # below the image, so that no edge shows


def cohost_hair_paint(face: FaceLayout) -> Image.Image:
    return vertical_gradient(COHOST_HAIR_TOP, COHOST_HAIR_BOTTOM, face.top - 30, face.chin + 20)


def cohost_hair_back(canvas: Canvas, face: FaceLayout) -> None:
    """Shoulder-length hair behind the head, ending in a few soft points."""
    cx, top, chin, w = face.centre_x, face.top, face.chin, face.half_width
    right_half = (
        Path((cx, top - 30))
        .curve((cx + w * 0.9, top - 32), (cx + w * 1.3, top + 50), (cx + w * 1.24, face.eye_y + 20))
        .curve((cx + w * 1.2, chin - 40), (cx + w * 1.32, chin + 10), (cx + w * 1.22, chin + 30))
        .curve((cx + w * 1.16, chin + 18), (cx + w * 1.1, chin + 10), (cx + w * 1.06, chin + 8))
        .curve((cx + w * 1.04, chin + 16), (cx + w * 1.0, chin + 22), (cx + w * 0.94, chin + 24))
        .curve((cx + w * 0.9, chin), (cx + w * 0.8, chin - 30), (cx + w * 0.6, chin - 40))
        .line((cx, chin - 40))
    )
    hair = canvas.shape(
        mirrored(right_half.points, cx), cohost_hair_paint(face), line=COHOST_HAIR_LINE
    )
    canvas.inner_shade(hair, COHOST_HAIR_LINE, depth=30, opacity=0.35)


def cohost_hood(canvas: Canvas, face: FaceLayout) -> None:
    """The back of the hood, rising behind the neck."""
    cx, chin = face.centre_x, face.chin
    right_half = (
        Path((cx, chin + 4))
        .curve((cx + 50, chin + 14), (cx + 96, chin + 10), (cx + 108, chin + 42))
        .curve((cx + 114, chin + 66), (cx + 90, chin + 86), (cx, chin + 86))
    )
    hood = canvas.shape(mirrored(right_half.points, cx), HOODIE_SHADE, line=HOODIE_LINE)
    canvas.inner_shade(hood, HOODIE_LINE, depth=16, opacity=0.6)


def cohost_hoodie(canvas: Canvas, face: FaceLayout) -> None:
    """A hoodie with a rolled neckline and two drawstrings."""
    cx, chin, neck = face.centre_x, face.chin, face.neck_half_width
    neckline_bottom = chin + 62
    right_half = (
        Path((cx, neckline_bottom))
        .curve(
            (cx + neck * 0.6, neckline_bottom), (cx + neck, chin + 46), (cx + neck + 6, chin + 32)
        )
        .curve((cx + 110, chin + 26), (cx + 186, chin + 36), (cx + 214, chin + 82))
        .curve((cx + 226, chin + 106), (cx + 230, HOODIE_BOTTOM - 40), (cx + 232, HOODIE_BOTTOM))
        .line((cx, HOODIE_BOTTOM))
    )
    paint = vertical_gradient(HOODIE, HOODIE_SHADE, chin + 26, HOODIE_BOTTOM)
    body = canvas.shape(mirrored(right_half.points, cx), paint, line=HOODIE_LINE)
    canvas.inner_shade(body, HOODIE_LINE, depth=26, opacity=0.45)
    for side in (-1, 1):
        shoulder_seam = Path((cx + side * 150, chin + 34)).curve(
            (cx + side * 146, chin + 66),
            (cx + side * 150, chin + 106),
            (cx + side * 160, HOODIE_BOTTOM),
        )
        canvas.stroke(shoulder_seam.points, HOODIE_LINE, 1.6, clip=body, opacity=0.5)

    roll = (
        Path((cx - neck - 14, chin + 26))
        .curve(
            (cx - neck + 2, chin + 66), (cx - 20, neckline_bottom + 8), (cx, neckline_bottom + 8)
        )
        .curve(
            (cx + 20, neckline_bottom + 8), (cx + neck - 2, chin + 66), (cx + neck + 14, chin + 26)
        )
    )
    roll_shape = ribbon(roll.points, lambda t: 12 + 6 * math.sin(math.pi * t))
    collar = canvas.shape(roll_shape, HOODIE, line=HOODIE_LINE, line_width=2)
    canvas.inner_shade(collar, HOODIE_LIGHT, depth=6, opacity=0.5)
    for side in (-1, 1):
        string = Path((cx + side * 18, neckline_bottom + 14)).curve(
            (cx + side * 22, neckline_bottom + 40),
            (cx + side * 16, neckline_bottom + 56),
            (cx + side * 22, neckline_bottom + 72),
        )
        canvas.stroke(string.points, HOODIE_LINE, 6)
        canvas.stroke(string.points, HOODIE_STRING, 3.5)
        tip_x, tip_y = string.points[-1]
        aglet = ellipse((tip_x, tip_y + 5), (3.5, 6))
        canvas.shape(aglet, HEADPHONE_SHELL, line=HOODIE_LINE, line_width=1.5)


def cohost_locks(canvas: Canvas, face: FaceLayout) -> None:
    """Two locks of hair that frame the face, their roots hidden under the fringe."""
    cx, w = face.centre_x, face.half_width
    root_y = face.top + 30
    for side in (-1, 1):
        lock = (
            Path((cx + side * (w + 8), root_y))
            .curve(
                (cx + side * (w + 14), face.eye_y + 10),
                (cx + side * (w - 2), face.mouth_y - 10),
                (cx + side * (w - 20), face.mouth_y + 16),
            )
            .curve(
                (cx + side * (w - 18), face.mouth_y - 30),
                (cx + side * (w - 30), face.eye_y),
                (cx + side * (w - 40), root_y),
            )
        )
        canvas.shape(lock.points, cohost_hair_paint(face), line=COHOST_HAIR_LINE)


def cohost_fringe(canvas: Canvas, face: FaceLayout) -> None:
    """The crown of the head and a choppy fringe that stops above the brows."""
    cx, top, w = face.centre_x, face.top, face.half_width
    brow_y = face.eye_y - face.brow_rise
    # the strands' tips (x as a share of the half width, y above the brows), right to left
    tips = [(0.62, 14), (0.3, 8), (-0.04, 10), (-0.38, 6), (-0.7, 16)]
    fringe = (
        Path((cx - w - 8, face.eye_y - 10))
        .curve((cx - w - 14, top + 10), (cx - w * 0.5, top - 34), (cx + w * 0.1, top - 32))
        .curve((cx + w * 0.8, top - 30), (cx + w + 16, top + 40), (cx + w + 8, face.eye_y - 14))
        .curve((cx + w * 0.98, brow_y), (cx + w * 0.9, brow_y - 30), (cx + w * 0.84, brow_y - 50))
    )
    for x_share, lift in tips:
        notch_x, notch_y = fringe.points[-1]
        tip_x, tip_y = cx + w * x_share, brow_y - lift
        # each strand bulges to the right and hooks into its tip from the right: swept left
        fringe.curve((notch_x, notch_y + 24), (tip_x + 22, tip_y - 4), (tip_x, tip_y))
        next_x = tip_x - w * 0.1
        fringe.curve((tip_x + 2, tip_y - 12), (next_x + 4, brow_y - 34), (next_x, brow_y - 50))
    fringe.curve(
        (cx - w * 0.9, brow_y - 20), (cx - w - 2, face.eye_y - 40), (cx - w - 8, face.eye_y - 10)
    )

    face_mask = canvas.shape_mask(face.outline())
    fringe_mask = canvas.shape_mask(fringe.points)
    canvas.soft(fringe_mask, COHOST_COLOURS.skin_shade, blur=3, offset=(0, 5), clip=face_mask)
    canvas.shape(fringe.points, cohost_hair_paint(face), line=COHOST_HAIR_LINE)
    canvas.inner_shade(fringe_mask, COHOST_HAIR_LINE, depth=10, opacity=0.25)
    shine = ellipse((cx - w * 0.1, top + 2), (w * 0.55, 12), 205, 335)
    canvas.stroke(shine, COHOST_HAIR_SHINE, 5, clip=fringe_mask, opacity=0.75)


def cohost_headphones(canvas: Canvas, face: FaceLayout) -> None:
    """Cat-ear gaming headphones: a band over the hair, two ear cups and a boom microphone."""
    cx, w = face.centre_x, face.half_width
    band_centre = (cx, face.ear_y)
    band_radii = (w + 20, face.ear_y - face.top + 42)
    band = ellipse(band_centre, band_radii, 190, 350)
    canvas.stroke(band, HEADPHONE_LINE, 16)
    canvas.stroke(band, HEADPHONE_SHELL, 12)
    for angle in (238.0, 302.0):
        draw_cat_ear(canvas, band_centre, band_radii, angle)
    for side in (-1, 1):
        cup_centre = (cx + side * (w + 10), face.ear_y)
        cup = canvas.shape(ellipse(cup_centre, (22, 38)), HEADPHONE_SHELL, line=HEADPHONE_LINE)
        canvas.inner_shade(cup, HEADPHONE_SHADE, depth=12)
        ring = ellipse((cup_centre[0] + side * 4, cup_centre[1]), (11, 24))
        canvas.soft(canvas.line_mask(ring, 4, closed=True), HEADPHONE_ACCENT, blur=3)
        canvas.stroke(ring, HEADPHONE_ACCENT, 3, closed=True)
    boom = Path((cx - w - 6, face.ear_y + 30)).curve(
        (cx - w, face.mouth_y + 10),
        (cx - w * 0.8, face.mouth_y + 30),
        (cx - w * 0.64, face.mouth_y + 30),
    )
    canvas.stroke(boom.points, HEADPHONE_LINE, 7)
    canvas.stroke(boom.points, HEADPHONE_SHADE, 4)
    capsule_centre = boom.points[-1]
    canvas.shape(ellipse(capsule_centre, (8, 7)), HEADPHONE_LINE)
    canvas.soft(canvas.shape_mask(ellipse(capsule_centre, (3, 3))), HEADPHONE_ACCENT, blur=1.5)


def draw_cat_ear(canvas: Canvas, centre: Point, radii: Point, angle_deg: float) -> None:
    """A triangular cat ear standing on the headphone band at ``angle_deg``."""
    angle = math.radians(angle_deg)
    base_x = centre[0] + radii[0] * math.cos(angle)
    base_y = centre[1] + radii[1] * math.sin(angle)
    out_x, out_y = math.cos(angle), math.sin(angle) * radii[0] / radii[1]  # the band's normal
    norm = math.hypot(out_x, out_y)
    out_x, out_y = out_x / norm, out_y / norm
    along_x, along_y = -out_y, out_x
    half_base, height = 20.0, 34.0

    def at(along: float, out: float) -> Point:
        return (base_x + along_x * along + out_x * out, base_y + along_y * along + out_y * out)

    lean = 6.0 if angle_deg < 270 else -6.0  # the tips lean outwards a little
    outer = [at(-half_base, 2), at(lean, height), at(half_base, 2)]
    inner = [at(-half_base * 0.5, 6), at(lean * 0.8, height * 0.68), at(half_base * 0.5, 6)]
    canvas.shape(outer, HEADPHONE_SHELL, line=HEADPHONE_LINE)
    canvas.shape(inner, CAT_EAR_INSIDE)


def cohost_over_face(canvas: Canvas, face: FaceLayout) -> None:
    cohost_locks(canvas, face)
    cohost_fringe(canvas, face)
    cohost_headphones(canvas, face)


COHOST = AvatarArt(
    persona_id="cohost",
    background=rgb("#1d3a4a"),
    face=COHOST_FACE,
    colours=COHOST_COLOURS,
    behind_head=cohost_hair_back,
    behind_neck=cohost_hood,
    body=cohost_hoodie,
    over_face=cohost_over_face,
)


# --- teacher: Mira, a language teacher with round glasses, a bun and a cardigan ------------

TEACHER_FACE = FaceLayout(
    centre_y=226,
    half_width=110,
    half_height=128,
    jaw_roundness=2.5,
    chin_taper=0.1,
    eye_y=224,
    eye_spacing=48,
    eye_white=(36, 38),
    iris_radius=13,
    pupil_radius=6,
    lash_width=4,
    brow_rise=44,
    brow_width=5.5,
    nose_y=258,
    mouth_y=298,
    cheek_spacing=80,
    cheek_y=266,
    ear_y=244,
    neck_half_width=38,
)

TEACHER_COLOURS = FacePalette(
    skin=rgb("#c98f6b"),
    skin_shade=rgb("#b07452"),
    skin_line=rgb("#7d4b33"),
    blush=rgb("#d9776b"),
    lip=rgb("#9c4a4f"),
    eye_white=rgb("#fbf8f4"),
    iris=rgb("#8a5a33"),
    iris_dark=rgb("#3f2616"),
    pupil=rgb("#1c120c"),
    lash=rgb("#24170f"),
    brow=rgb("#3a2519"),
)

TEACHER_HAIR = rgb("#4a3127")
TEACHER_HAIR_DARK = rgb("#2e1d17")
TEACHER_HAIR_LINE = rgb("#1f130e")
TEACHER_HAIR_SHINE = rgb("#8a6251")
GLASSES_FRAME = rgb("#7b2d36")
GLASSES_SHINE = rgb("#ffffff")
EARRING_GOLD = rgb("#e6b84c")
CARDIGAN = rgb("#6f9c7e")
CARDIGAN_SHADE = rgb("#4f7a5f")
CARDIGAN_LINE = rgb("#2f4d3a")
SHIRT = rgb("#fbf8f1")
SHIRT_SHADE = rgb("#d9d4c8")
SHIRT_LINE = rgb("#8d877a")
BUTTON = rgb("#e9dcc0")
CARDIGAN_BOTTOM = AVATAR_SIZE + 4  # below the image, so that no edge shows


def teacher_hair_paint(face: FaceLayout) -> Image.Image:
    return vertical_gradient(TEACHER_HAIR, TEACHER_HAIR_DARK, face.top - 40, face.ear_y + 40)


def teacher_hair_back(canvas: Canvas, face: FaceLayout) -> None:
    """The bun on top and the hair at the back of the head down to the nape."""
    cx, top, w = face.centre_x, face.top, face.half_width
    bun_centre = (cx + 6, top - 24)
    bun = canvas.shape(
        ellipse(bun_centre, (46, 38)), teacher_hair_paint(face), line=TEACHER_HAIR_LINE
    )
    canvas.inner_shade(bun, TEACHER_HAIR_LINE, depth=16, opacity=0.5)
    for twist in (-18, 0, 18):
        swirl = ellipse(
            (bun_centre[0] + twist * 0.4, bun_centre[1] + 4), (38 - abs(twist), 24), 200, 330
        )
        canvas.stroke(swirl, TEACHER_HAIR_SHINE, 2, clip=bun, opacity=0.6)
    right_half = (
        Path((cx, top - 14))
        .curve((cx + w * 0.9, top - 16), (cx + w * 1.18, top + 50), (cx + w * 1.14, face.ear_y))
        .curve((cx + w * 1.12, face.ear_y + 40), (cx + w * 0.9, face.mouth_y), (cx, face.mouth_y))
    )
    back = canvas.shape(
        mirrored(right_half.points, cx), teacher_hair_paint(face), line=TEACHER_HAIR_LINE
    )
    canvas.inner_shade(back, TEACHER_HAIR_LINE, depth=24, opacity=0.4)


def teacher_back_collar(canvas: Canvas, face: FaceLayout) -> None:
    """The inside of the cardigan and the shirt collar band behind the neck."""
    cx, chin, neck = face.centre_x, face.chin, face.neck_half_width
    back = [
        (cx - neck - 22, chin + 40),
        (cx - neck - 6, chin + 14),
        (cx + neck + 6, chin + 14),
        (cx + neck + 22, chin + 40),
    ]
    canvas.shape(back, CARDIGAN_SHADE, line=CARDIGAN_LINE)
    band = [
        (cx - neck - 6, chin + 30),
        (cx - neck, chin + 8),
        (cx + neck, chin + 8),
        (cx + neck + 6, chin + 30),
    ]
    canvas.shape(band, SHIRT_SHADE, line=SHIRT_LINE, line_width=1.5)


def teacher_cardigan(canvas: Canvas, face: FaceLayout) -> None:
    """A white collared shirt under a buttoned V-neck cardigan."""
    cx, chin, neck = face.centre_x, face.chin, face.neck_half_width
    v_bottom = chin + 112
    shirt = [
        (cx - neck - 6, chin + 24),
        (cx + neck + 6, chin + 24),
        (cx + 70, CARDIGAN_BOTTOM),
        (cx - 70, CARDIGAN_BOTTOM),
    ]
    shirt_mask = canvas.shape(shirt, SHIRT, line=SHIRT_LINE)
    canvas.inner_shade(shirt_mask, SHIRT_SHADE, depth=10)

    paint = vertical_gradient(CARDIGAN, CARDIGAN_SHADE, chin + 30, CARDIGAN_BOTTOM)
    for side in (-1, 1):
        panel = (
            Path((cx + side * 4, CARDIGAN_BOTTOM))
            .line((cx + side * 4, v_bottom))
            .curve(
                (cx + side * 20, chin + 84),
                (cx + side * 36, chin + 52),
                (cx + side * (neck + 12), chin + 30),
            )
            .curve(
                (cx + side * 110, chin + 26),
                (cx + side * 184, chin + 42),
                (cx + side * 210, chin + 88),
            )
            .curve(
                (cx + side * 220, chin + 110),
                (cx + side * 222, CARDIGAN_BOTTOM - 40),
                (cx + side * 224, CARDIGAN_BOTTOM),
            )
        )
        cardigan = canvas.shape(panel.points, paint, line=CARDIGAN_LINE)
        canvas.inner_shade(cardigan, CARDIGAN_LINE, depth=22, opacity=0.35)
        placket = (
            Path((cx + side * 13, CARDIGAN_BOTTOM))
            .line((cx + side * 13, v_bottom + 6))
            .curve(
                (cx + side * 28, chin + 86),
                (cx + side * 44, chin + 56),
                (cx + side * (neck + 20), chin + 36),
            )
        )
        canvas.stroke(placket.points, CARDIGAN_LINE, 1.6, clip=cardigan, opacity=0.7)
        collar = [
            (cx + side * 2, chin + 50),
            (cx + side * (neck + 2), chin + 16),
            (cx + side * (neck + 14), chin + 34),
            (cx + side * 26, chin + 78),
        ]
        canvas.shape(collar, SHIRT, line=SHIRT_LINE, line_width=2)

    for button_y in (v_bottom + 14, v_bottom + 40):
        canvas.shape(
            ellipse((cx + 8, button_y), (5, 5)), BUTTON, line=CARDIGAN_LINE, line_width=1.5
        )


def teacher_hair_front(canvas: Canvas, face: FaceLayout) -> None:
    """Neat hair with a side parting, swept across the forehead to the right temple."""
    cx, top, w = face.centre_x, face.top, face.half_width
    parting_x = cx - w * 0.35
    brow_y = face.eye_y - face.brow_rise
    sweep = (  # the lower edge of the swept fringe, from the right temple to the parting
        Path((cx + w * 0.92, face.eye_y - 30))
        .curve(
            (cx + w * 0.78, brow_y - 10), (cx + w * 0.3, brow_y - 12), (cx - w * 0.02, brow_y - 36)
        )
        .curve((cx - w * 0.2, brow_y - 52), (parting_x + 8, top + 26), (parting_x, top + 12))
    )
    cap = Path((cx - w - 6, face.ear_y - 12))
    cap.curve((cx - w - 14, top + 20), (cx - w * 0.7, top - 20), (parting_x, top - 16))
    cap.curve((cx + w * 0.5, top - 22), (cx + w + 16, top + 30), (cx + w + 6, face.ear_y - 6))
    cap.curve((cx + w * 1.02, face.eye_y), (cx + w * 0.96, face.eye_y - 20), sweep.points[0])
    cap.points.extend(sweep.points[1:])
    cap.curve(
        (cx - w * 0.65, top + 22), (cx - w * 0.86, brow_y - 36), (cx - w * 0.92, face.eye_y - 20)
    )
    cap.curve((cx - w * 0.96, face.eye_y), (cx - w * 0.98, face.ear_y - 24), cap.points[0])

    face_mask = canvas.shape_mask(face.outline())
    cap_mask = canvas.shape_mask(cap.points)
    canvas.soft(cap_mask, TEACHER_COLOURS.skin_shade, blur=3, offset=(0, 5), clip=face_mask)
    canvas.shape(cap.points, teacher_hair_paint(face), line=TEACHER_HAIR_LINE)
    canvas.inner_shade(cap_mask, TEACHER_HAIR_LINE, depth=12, opacity=0.3)
    strand_count = len(sweep.points)
    for lift in (14, 28, 42, 56):
        strand = [(x, y - lift) for x, y in sweep.points[strand_count // 8 : -strand_count // 6]]
        canvas.stroke(strand, TEACHER_HAIR_SHINE, 2, clip=cap_mask, opacity=0.5)
    shine = ellipse((cx - w * 0.6, top + 14), (w * 0.28, 12), 200, 320)
    canvas.stroke(shine, TEACHER_HAIR_SHINE, 4, clip=cap_mask, opacity=0.6)


def teacher_glasses(canvas: Canvas, face: FaceLayout) -> None:
    """Round glasses; the lenses stay clear of the eyelids so that a blink leaves them whole."""
    lens_radius = max(face.eye_size) * 0.5 * 1.25 + 5
    frame_width = 4.0
    for (ex, ey), side in zip(face.eyes, (-1, 1), strict=True):
        lens = ellipse((ex, ey), (lens_radius, lens_radius * 0.94))
        glint = ellipse((ex, ey), (lens_radius - 4.5, lens_radius * 0.94 - 4.5), 200, 235)
        canvas.stroke(glint, GLASSES_SHINE, 2.5, opacity=0.7)
        canvas.stroke(lens, GLASSES_FRAME, frame_width, closed=True)
        temple_start = (ex + side * lens_radius, ey - 4)
        temple_end = (face.centre_x + side * (face.half_width - 4), ey - 8)
        canvas.stroke([temple_start, temple_end], GLASSES_FRAME, frame_width * 0.8)
    (lx, ly), (rx, _) = face.eyes
    bridge = Path((lx + lens_radius, ly - 4)).curve(
        (lx + lens_radius + 6, ly - 12), (rx - lens_radius - 6, ly - 12), (rx - lens_radius, ly - 4)
    )
    canvas.stroke(bridge.points, GLASSES_FRAME, frame_width * 0.8)


def teacher_earrings(canvas: Canvas, face: FaceLayout) -> None:
    for side in (-1, 1):
        stud = (face.centre_x + side * (face.half_width + 2), face.ear_y + face.half_width * 0.2)
        canvas.shape(ellipse(stud, (4.5, 4.5)), EARRING_GOLD, line=TEACHER_HAIR_LINE, line_width=1)


def teacher_over_face(canvas: Canvas, face: FaceLayout) -> None:
    teacher_earrings(canvas, face)
    teacher_hair_front(canvas, face)
    teacher_glasses(canvas, face)


TEACHER = AvatarArt(
    persona_id="teacher",
    background=rgb("#e7dcc6"),
    face=TEACHER_FACE,
    colours=TEACHER_COLOURS,
    behind_head=teacher_hair_back,
    behind_neck=teacher_back_collar,
    body=teacher_cardigan,
    over_face=teacher_over_face,
)

BUILTIN_AVATARS = {art.persona_id: art for art in (COHOST, TEACHER)}


def write_avatars(folder: FilePath = HERE) -> list[FilePath]:
    """Draw every built-in avatar into ``folder/<persona id>/avatar.png``."""
    written = []
    for art in BUILTIN_AVATARS.values():
        path = folder / art.persona_id / "avatar.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        art.render().save(path, optimize=True)
        written.append(path)
    return written


def toml_value(value: object) -> str:
    """``value`` written as TOML: strings quoted, tuples as arrays."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return str(value)


def main() -> None:
    for path in write_avatars():
        art = BUILTIN_AVATARS[path.parent.name]
        print(f"wrote {path}; its [avatar] table in persona.toml:")
        for key, value in art.geometry().items():
            print(f"  {key} = {toml_value(value)}")


if __name__ == "__main__":
    main()
