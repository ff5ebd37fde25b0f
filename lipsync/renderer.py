"""The renderer seam: audio in, video frames out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import numpy.typing as npt

from lipsync.avatar import RGB, Avatar

# (height, width, 3) RGB; to the encoder also I420 planes, (height * 3 / 2, width)
Frame = npt.NDArray[np.uint8]


class Renderer(Protocol):
    """A lip-sync renderer: frames at ``fps`` that cover the audio exactly.

    ``render`` is CPU or GPU work; callers on an event loop run it in an executor.
    ``start_frame`` continues idle motion and blinks seamlessly when a reply is rendered in parts;
    ``background`` is the colour behind a transparent avatar. A renderer may also have
    ``render_i420`` (same arguments): the same frames as YUV 4:2:0 planes, which the encoder
    takes without converting them (:func:`frames_for_encoder`).
    """

    name: str
    fps: int
    size: int

    def render(
        self,
        samples: npt.NDArray[np.float32],
        sample_rate: int,
        avatar: Avatar,
        *,
        start_frame: int = 0,
        background: RGB | None = None,
    ) -> Iterator[Frame]: ...


def frames_for_encoder(
    renderer: Renderer,
    samples: npt.NDArray[np.float32],
    sample_rate: int,
    avatar: Avatar,
    *,
    start_frame: int = 0,
    background: RGB | None = None,
) -> Iterator[Frame]:
    """``renderer``'s frames in the form the H.264 encoder takes best: its ``render_i420``
    when it has one, else its RGB frames."""
    render = getattr(renderer, "render_i420", renderer.render)
    frames: Iterator[Frame] = render(
        samples, sample_rate, avatar, start_frame=start_frame, background=background
    )
    return frames
