"""The sprite persona's layers as one image atlas, for the overlay page to draw live.

:func:`export_atlas` draws the persona exactly as the sprite renderer does for MP4 — the same
fitting, the same erased photo mouth, the same mouth and eyelid sprites from
:meth:`lipsync.sprite.SpriteRenderer.prepare` — but over a transparent background, and packs
them into one PNG with a JSON manifest saying where each layer lies and where it goes:

- the avatar (``base``), ``size`` x ``size``, transparent around the persona;
- one mouth sprite per viseme and openness level (``mouths[viseme][level]``), all pasted with
  their top-left at ``mouth_at``;
- one eyelid sprite per closure (``eyelids["0.55"]``), pasted at each of ``eyelids_at``;
- the motion constants (:mod:`lipsync.timeline`), so the page sways, nods and blinks between
  replies as the renderer does.

Rectangles are ``[x, y, width, height]`` in atlas pixels. Export is CPU work (a few hundred
milliseconds): run it in an executor.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from lipsync.avatar import Avatar, fit_avatar_rgba
from lipsync.mouth import Patch
from lipsync.sprite import (
    BLINK_CLOSURE,
    BLINK_INTERVAL_S,
    NOD_PX,
    OPENNESS_LEVELS,
    SWAY_PERIODS_S,
    SWAY_PX,
    SpriteRenderer,
    _erase_mouth,
)
from lipsync.timeline import VISEME_ORDER

ATLAS_VERSION = 1
GUTTER = 4  # transparent pixels between layers: a rotated draw samples a little beyond its rect


@dataclass(frozen=True, kw_only=True)
class Atlas:
    """One persona's layers: ``png`` (the atlas image) and ``manifest`` (where things are)."""

    key: str  # changes whenever the avatar or the frame size does
    png: bytes
    manifest: dict[str, Any]

    def manifest_json(self) -> bytes:
        return json.dumps(self.manifest, separators=(",", ":")).encode()


def _straight(patch: Patch) -> np.ndarray:
    """A premultiplied float patch as straight-alpha RGBA bytes (what PNG and canvas take)."""
    alpha = patch[..., 3:4]
    rgb = np.where(alpha > 1e-6, patch[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    out = np.concatenate([rgb, alpha], axis=2) * 255.0 + 0.5
    return np.clip(out, 0, 255).astype(np.uint8)


def _top_left(centre: tuple[float, float], patch: Patch) -> list[int]:
    """Where :func:`lipsync.mouth.paste` puts a patch's top-left corner for ``centre``."""
    height, width = patch.shape[:2]
    return [round(centre[0] - width / 2), round(centre[1] - height / 2)]


def export_atlas(renderer: SpriteRenderer, avatar: Avatar) -> Atlas:
    """The persona's layer atlas at the renderer's frame size and fps."""
    from PIL import Image

    size = renderer.size
    prepared = renderer.prepare(avatar)
    base, geometry = fit_avatar_rgba(avatar, size)
    if avatar.detected:  # a photo's own mouth is erased, as in the MP4
        base = np.concatenate([_erase_mouth(base[..., :3].copy(), geometry), base[..., 3:]], 2)

    some_mouth = next(iter(prepared.mouths.values()))
    mouth_h, mouth_w = some_mouth.shape[:2]
    lids = sorted(prepared.eyelids)
    lid_h, lid_w = prepared.eyelids[lids[0]].shape[:2]
    g = GUTTER
    cell_w, cell_h = mouth_w + g, mouth_h + g
    width = max(size, OPENNESS_LEVELS * cell_w, len(lids) * (lid_w + g)) + g
    height = size + g + len(VISEME_ORDER) * cell_h + lid_h + g
    sheet = np.zeros((height, width, 4), np.uint8)
    sheet[:size, :size] = base

    mouths: dict[str, list[list[int]]] = {}
    for row, viseme in enumerate(VISEME_ORDER):
        y = size + g + row * cell_h
        rects = []
        for level in range(OPENNESS_LEVELS):
            x = g + level * cell_w
            sheet[y : y + mouth_h, x : x + mouth_w] = _straight(prepared.mouths[(viseme, level)])
            rects.append([x, y, mouth_w, mouth_h])
        mouths[viseme.value] = rects
    eyelids: dict[str, list[int]] = {}
    y = size + g + len(VISEME_ORDER) * cell_h
    for column, closure in enumerate(lids):
        x = g + column * (lid_w + g)
        sheet[y : y + lid_h, x : x + lid_w] = _straight(prepared.eyelids[closure])
        eyelids[repr(closure)] = [x, y, lid_w, lid_h]

    buffer = io.BytesIO()
    Image.fromarray(sheet, "RGBA").save(buffer, format="PNG", compress_level=3)
    mouth_half = (0.75 * geometry.mouth_width, 0.55 * geometry.mouth_width)
    manifest: dict[str, Any] = {
        "version": ATLAS_VERSION,
        "size": size,
        "fps": renderer.fps,
        "base": [0, 0, size, size],
        "visemes": [viseme.value for viseme in VISEME_ORDER],
        "levels": OPENNESS_LEVELS,
        "mouths": mouths,
        "mouth_at": _top_left(prepared.geometry.mouth, some_mouth),
        "eyelids": eyelids,
        "eyelids_at": [_top_left(eye, prepared.eyelids[lids[0]]) for eye in geometry.eyes],
        # Where the face changes while talking or blinking (mouth and eyes, in frame pixels).
        "regions": {
            "mouth": [
                round(geometry.mouth[0] - mouth_half[0]),
                round(geometry.mouth[1] - mouth_half[1]),
                round(2 * mouth_half[0]),
                round(2 * mouth_half[1]),
            ],
            "eyes": [
                [
                    round(x - 0.7 * geometry.eye_size[0]),
                    round(y - 0.75 * geometry.eye_size[1]),
                    round(1.4 * geometry.eye_size[0]),
                    round(1.5 * geometry.eye_size[1]),
                ]
                for x, y in geometry.eyes
            ],
        },
        "motion": {
            "sway_px": SWAY_PX,
            "nod_px": NOD_PX,
            "periods_s": list(SWAY_PERIODS_S),
            "blink_closure": list(BLINK_CLOSURE),
            "blink_interval_s": list(BLINK_INTERVAL_S),
        },
    }
    return Atlas(
        key=f"{avatar.key}:{size}:{renderer.fps}", png=buffer.getvalue(), manifest=manifest
    )
