"""The overlay as a sink of the conversation: each released clip goes to the page.

:class:`OverlaySink` is how ``lipcast run`` (and the benchmarks that measure what is shown) put
the persona's replies in the OBS overlay; a skip or clear there acts on the conversation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.clips import Clip, TurnInfo
from pipeline.conversation.turns import ClipSink, TurnReport

if TYPE_CHECKING:
    from obs_overlay.server import OverlayServer


class OverlaySink(ClipSink):
    """Shows clips in the OBS overlay; a skip there stops the turn here.

    A sprite persona's clip goes as its speech and timeline, which the page draws live (no
    MP4 needed); a video renderer's clip goes as its MP4.
    """

    @property
    def needs_mp4(self) -> bool:
        return False  # the page draws the persona from its speech and timeline

    def __init__(self, overlay: OverlayServer) -> None:
        self.overlay = overlay

    @property
    def shows_clips(self) -> bool:
        """A page is there to show clips (and report when each starts)."""
        return self.overlay.connected_pages > 0

    async def turn_started(self, turn: TurnInfo) -> None:
        await self.overlay.turn_started(turn.turn_id, viewer=turn.viewer_name)

    async def clip_ready(self, clip: Clip) -> bool:
        sprite = bool(clip.timeline) and clip.audio is not None
        clip_id = await self.overlay.publish_clip(
            turn_id=clip.turn.turn_id,
            seq=clip.seq,
            caption=clip.text,
            mp4=None if sprite else clip.media,
            audio=clip.audio.to_pcm16() if sprite and clip.audio is not None else None,
            sample_rate=clip.audio.sample_rate if sprite and clip.audio is not None else None,
            timeline=clip.timeline if sprite else None,
            viewer=clip.turn.viewer_name,
            duration_s=clip.duration_s,
        )
        return clip_id is not None

    async def turn_ended(self, turn: TurnInfo, report: TurnReport) -> None:
        if report.outcome == "skipped" and report.released:
            # Skipped while still being produced: its clips already here are never shown.
            await self.overlay.skip(turn.turn_id)
        await self.overlay.turn_ended(turn.turn_id)

    def on_air_turn(self) -> str | None:
        return self.overlay.on_air

    async def skip_on_air(self) -> str | None:
        return await self.overlay.skip()

    async def clear_waiting(self) -> int:
        return len(await self.overlay.clear())
