"""Avatars: the persona's image and where its mouth and eyes are.

Drawn avatars declare their geometry (persona.toml ``[avatar]``); for any other image the face
is found with OpenCV's Haar frontal-face cascade and the features are placed by the usual
proportions of a face. Skin and lip colours not given are sampled from the image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from lipsync.errors import AvatarError

RGB = tuple[int, int, int]
Point = tuple[float, float]
ImageArray = npt.NDArray[np.uint8]

MAX_PIXELS = 16_000_000  # a larger avatar is refused rather than decoded
MIN_SIDE = 64

# Where features sit inside a Haar face box, as fractions of its width and height.
HAAR_MOUTH = (0.5, 0.83)
HAAR_MOUTH_WIDTH = 0.42
HAAR_EYES = ((0.28, 0.38), (0.73, 0.38))
HAAR_EYE_SIZE = (0.18, 0.1)


@dataclass(frozen=True, kw_only=True)
class FaceGeometry:
    """Feature positions in pixels of the avatar image."""

    mouth: Point
    mouth_width: float
    eyes: tuple[Point, Point]
    eye_size: Point
    skin: RGB | None = None
    lip: RGB | None = None

    def scaled(self, factor: float, offset: Point = (0.0, 0.0)) -> FaceGeometry:
        """The same geometry after the image is scaled by ``factor`` and shifted by ``offset``."""

        def move(point: Point) -> Point:
            return (point[0] * factor + offset[0], point[1] * factor + offset[1])

        return replace(
            self,
            mouth=move(self.mouth),
            mouth_width=self.mouth_width * factor,
            eyes=(move(self.eyes[0]), move(self.eyes[1])),
            eye_size=(self.eye_size[0] * factor, self.eye_size[1] * factor),
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class Avatar:
    """An avatar image (RGBA, straight alpha) with complete geometry."""

    image: ImageArray
    geometry: FaceGeometry
    detected: bool  # True when the face was found by detection, not declared
    key: str  # identifies the image and geometry, for caches

    @property
    def size(self) -> tuple[int, int]:
        return (self.image.shape[1], self.image.shape[0])


def read_image(path: Path) -> ImageArray:
    """Read an image file as RGBA, refusing unreadable, tiny or enormous images."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise AvatarError(
                    f"{path}: the avatar image is {image.width}x{image.height}; "
                    f"use one of at most {MAX_PIXELS // 1_000_000} megapixels"
                )
            rgba = image.convert("RGBA")
    except (UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise AvatarError(f"{path}: not a readable image (PNG, JPEG or WebP expected)") from err
    except OSError as err:
        raise AvatarError(f"{path}: cannot read the avatar image: {err.strerror or err}") from err
    if min(rgba.size) < MIN_SIDE:
        raise AvatarError(f"{path}: the avatar image is too small; use at least 256x256 pixels")
    return np.asarray(rgba, dtype=np.uint8).copy()


def detect_face(image: ImageArray) -> tuple[int, int, int, int] | None:
    """The largest frontal face as (x, y, width, height), or None."""
    import cv2

    cascades = Path(cv2.__file__).parent / "data"  # where cv2.data.haarcascades points
    cascade = cv2.CascadeClassifier(str(cascades / "haarcascade_frontalface_default.xml"))
    if cascade.empty():
        raise AvatarError("OpenCV's Haar face cascade is missing; install opencv-python-headless<5")
    rgb = _flatten(image, (128, 128, 128))
    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    smallest = max(24, min(gray.shape) // 10)
    faces = cascade.detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest)
    )
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda face: int(face[2]) * int(face[3]))
    return (int(x), int(y), int(w), int(h))


def geometry_from_face(box: tuple[int, int, int, int]) -> FaceGeometry:
    """Feature positions from a face box, by the usual proportions of a frontal face."""
    x, y, w, h = box
    return FaceGeometry(
        mouth=(x + HAAR_MOUTH[0] * w, y + HAAR_MOUTH[1] * h),
        mouth_width=HAAR_MOUTH_WIDTH * w,
        eyes=(
            (x + HAAR_EYES[0][0] * w, y + HAAR_EYES[0][1] * h),
            (x + HAAR_EYES[1][0] * w, y + HAAR_EYES[1][1] * h),
        ),
        eye_size=(HAAR_EYE_SIZE[0] * w, HAAR_EYE_SIZE[1] * h),
    )


def _flatten(image: ImageArray, background: RGB) -> ImageArray:
    alpha = image[..., 3:4].astype(np.float32) / 255.0
    rgb = image[..., :3].astype(np.float32) * alpha + np.array(background, np.float32) * (1 - alpha)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _median_color(image: ImageArray, centre: Point, size: Point) -> RGB:
    x, y = centre
    w, h = max(2.0, size[0]), max(2.0, size[1])
    x0, x1 = int(max(0, x - w / 2)), int(min(image.shape[1], x + w / 2))
    y0, y1 = int(max(0, y - h / 2)), int(min(image.shape[0], y + h / 2))
    region = image[y0:y1, x0:x1].reshape(-1, 4)
    region = region[region[:, 3] > 128] if (region[:, 3] > 128).any() else region
    r, g, b = np.median(region[:, :3], axis=0)
    return (int(r), int(g), int(b))


def _with_colours(image: ImageArray, geometry: FaceGeometry) -> FaceGeometry:
    mouth_x, mouth_y = geometry.mouth
    width = geometry.mouth_width
    skin = geometry.skin or _median_color(
        image, (mouth_x, mouth_y - 0.45 * width), (0.5 * width, 0.15 * width)
    )
    lip = geometry.lip or _median_color(image, geometry.mouth, (0.4 * width, 0.12 * width))
    if geometry.lip is None and sum(abs(a - b) for a, b in zip(lip, skin, strict=True)) < 40:
        lip = (int(skin[0] * 0.78), int(skin[1] * 0.52), int(skin[2] * 0.55))  # a believable lip
    return replace(geometry, skin=skin, lip=lip)


def load_avatar(path: Path, geometry: FaceGeometry | None = None) -> Avatar:
    """Read an avatar image; without ``geometry`` its face is detected.

    Raises :class:`AvatarError` when the image is unreadable or no face is found on it.
    """
    image = read_image(path)
    detected = geometry is None
    if geometry is None:
        box = detect_face(image)
        if box is None:
            raise AvatarError(
                f"{path}: no face found on the avatar image. Use a well-lit frontal face, "
                "or give the face geometry (mouth, mouth_width, eyes, eye_size) in persona.toml"
            )
        geometry = geometry_from_face(box)
    _check_inside(path, image, geometry)
    geometry = _with_colours(image, geometry)
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}:{geometry}"
    return Avatar(image=image, geometry=geometry, detected=detected, key=key)


def _check_inside(path: Path, image: ImageArray, geometry: FaceGeometry) -> None:
    height, width = image.shape[:2]
    for name, (x, y) in (
        ("mouth", geometry.mouth),
        ("left eye", geometry.eyes[0]),
        ("right eye", geometry.eyes[1]),
    ):
        if not (0 <= x < width and 0 <= y < height):
            raise AvatarError(
                f"{path}: the {name} position ({x:.0f}, {y:.0f}) lies outside the "
                f"{width}x{height} image; fix [avatar] in persona.toml"
            )


def hex_to_rgb(color: str) -> RGB:
    """``"#rrggbb"`` as an (r, g, b) tuple."""
    value = color.lstrip("#")
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


def fit_avatar_rgba(avatar: Avatar, size: int) -> tuple[ImageArray, FaceGeometry]:
    """The avatar scaled into a transparent ``size`` square, centred, and its geometry."""
    import cv2

    height, width = avatar.image.shape[:2]
    factor = size / max(width, height)
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    image = avatar.image
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
        image = np.asarray(cv2.resize(image, (new_w, new_h), interpolation=interpolation))
    canvas = np.zeros((size, size, 4), np.uint8)
    ox, oy = (size - new_w) // 2, (size - new_h) // 2
    canvas[oy : oy + new_h, ox : ox + new_w] = image
    return canvas, avatar.geometry.scaled(factor, (float(ox), float(oy)))


def fit_avatar(avatar: Avatar, size: int, background: RGB) -> tuple[ImageArray, FaceGeometry]:
    """The avatar scaled into a ``size`` square, centred over ``background``, and its geometry."""
    canvas, geometry = fit_avatar_rgba(avatar, size)
    alpha = canvas[..., 3:4].astype(np.float32) / 255.0
    colour = np.array(background, np.float32)
    flat = canvas[..., :3].astype(np.float32) * alpha + colour * (1.0 - alpha)
    base = np.clip(flat + 0.5, 0, 255).astype(np.uint8)
    return base, geometry
