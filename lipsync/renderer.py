"""The renderer seam: audio in, video frames out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import numpy.typing as npt

from lipsync.avatar import RGB, Avatar

Frame = npt.NDArray[np.uint8]  # (height, width, 3) RGB


class Renderer(Protocol):
    """A lip-sync renderer: frames at ``fps`` that cover the audio exactly.

    ``render`` is CPU or GPU work; callers on an event loop run it in an executor.
    ``start_frame`` continues idle motion and blinks seamlessly when a reply is rendered in parts;
    ``background`` is the colour behind a transparent avatar.
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
