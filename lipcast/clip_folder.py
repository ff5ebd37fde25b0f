"""The clip folder (``[output] dir``) stays bounded: the newest clips are kept, the oldest go.

Only files lipcast itself wrote there (``<turn id>-<seq>.mp4``) are ever deleted, so a folder a
streamer shares with other files loses nothing else. Blocking file work: call it from a worker
thread.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CLIP_NAME = re.compile(r"t[0-9a-f]{10}-\d{2,}\.mp4")  # what the clip folder sink writes


@dataclass(frozen=True, kw_only=True)
class ClipFolderLimits:
    """How much the clip folder keeps (``[output] max_clips`` and ``max_mb``)."""

    max_clips: int
    max_bytes: int


def prune_clips(folder: Path, limits: ClipFolderLimits) -> list[Path]:
    """Delete the oldest clips in ``folder`` until at most ``limits.max_clips`` are left and
    they take at most ``limits.max_bytes``; return the deleted paths. A clip that cannot be
    deleted (gone already, or not ours to delete) is skipped."""
    clips: list[tuple[float, str, int, Path]] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            if not CLIP_NAME.fullmatch(entry.name):
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            clips.append((stat.st_mtime, entry.name, stat.st_size, entry))
    clips.sort()  # oldest first; the name breaks ties in the same second
    total = sum(size for _, _, size, _ in clips)
    count = len(clips)
    removed: list[Path] = []
    for _, _, size, path in clips:
        if count <= limits.max_clips and total <= limits.max_bytes:
            break
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            log.warning("could not delete the old clip %s: %s", path, err.strerror or err)
            continue
        removed.append(path)
        count -= 1
        total -= size
    if removed:
        log.info("deleted %d old clips from %s ([output] max_clips, max_mb)", len(removed), folder)
    return removed
