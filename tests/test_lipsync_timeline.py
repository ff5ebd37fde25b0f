"""The sprite persona's timeline and layer atlas: what the overlay page draws live."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lipsync.atlas import export_atlas
from lipsync.audio_features import Viseme
from lipsync.sprite import SpriteRenderer
from lipsync.timeline import (
    TIMELINE_CONTENT_TYPE,
    Timeline,
    TimelineError,
    mouth_level,
    sprite_timeline,
)
from personas import load_persona
from pipeline.clips import TIMELINE_CONTENT_TYPE as CLIP_TIMELINE_TYPE
from pipeline.jobs.render import avatar_for


def _voice(seconds: float, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.4 * syllables * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_the_timeline_follows_the_voice_and_survives_the_wire() -> None:
    avatar = avatar_for(load_persona("cohost"))
    renderer = SpriteRenderer(size=256)
    timeline = sprite_timeline(
        _voice(1.2), 22050, fps=renderer.fps, size=renderer.size, seed=avatar.key, start_frame=40
    )
    assert timeline.frames == 30 and timeline.start_frame == 40
    assert max(m.openness for m in timeline.mouths) > 0.3
    assert timeline.mouths[-1].viseme is Viseme.CLOSED  # it ends at rest
    back = Timeline.from_json(timeline.to_json())
    assert [m.viseme for m in back.mouths] == [m.viseme for m in timeline.mouths]
    assert [mouth_level(m.openness) for m in back.mouths] == [
        mouth_level(m.openness) for m in timeline.mouths
    ]
    assert back.pose(3) == pytest.approx(timeline.pose(3), abs=0.01)
    assert CLIP_TIMELINE_TYPE == TIMELINE_CONTENT_TYPE


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'{"version": 2}', b'{"version": 1, "fps": 25}', b"\xff\xfe"],
)
def test_a_malformed_timeline_is_one_clear_error(data: bytes) -> None:
    with pytest.raises(TimelineError, match="timeline part"):
        Timeline.from_json(data)


def test_the_atlas_holds_the_renderers_own_sprites_over_transparency() -> None:
    avatar = avatar_for(load_persona("cohost"))
    renderer = SpriteRenderer(size=256)
    atlas = export_atlas(renderer, avatar)
    with Image.open(io.BytesIO(atlas.png)) as image:
        sheet = np.asarray(image.convert("RGBA"), dtype=np.float32)
    manifest = atlas.manifest
    assert sheet[2, 2, 3] == 0, "the avatar's background must stay transparent"
    assert sheet[128, 128, 3] == 255  # the face itself is opaque
    prepared = renderer.prepare(avatar)
    x, y, w, h = manifest["mouths"]["open"][11]
    patch = prepared.mouths[(Viseme.OPEN, 11)]
    drawn = sheet[y : y + h, x : x + w]
    premultiplied = drawn[..., :3] * drawn[..., 3:4] / 255.0
    assert np.abs(premultiplied - patch[..., :3] * 255).max() <= 2.0
    assert np.abs(drawn[..., 3] - patch[..., 3] * 255).max() <= 1.0
    assert len(manifest["eyelids_at"]) == 2 and manifest["fps"] == renderer.fps
