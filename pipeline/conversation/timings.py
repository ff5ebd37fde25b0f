"""Where a turn's time went: one record per turn, logged as one line and kept for benchmarks.

Times are seconds. Points in the turn (``llm_first_token``, ``first_sentence``,
``first_clip_ready``...) are measured from the moment the turn began; ``queue_wait`` is how
long the message waited for its turn before that. TTS, render and encode come from the
workers' reports and are summed over the turn's clips (``first_clip_*`` for the first clip).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

# The stages a render worker reports per clip (keys of RenderResult.timings).
WORKER_STAGES = ("queue_wait", "tts", "render", "encode")


@dataclass(kw_only=True)
class TurnTimings:
    """Seconds; None where the turn never got there."""

    queue_wait: float | None = None  # message received -> turn began
    llm_first_token: float | None = None  # turn began -> first token of the reply
    first_sentence_last_token: float | None = None  # -> the token that ended sentence 1
    first_sentence: float | None = None  # -> sentence 1 known complete (and submitted)
    first_clip_ready: float | None = None  # -> clip 1 received whole and released to sinks
    last_clip_ready: float | None = None  # -> the last clip released
    first_clip_shown: float | None = None  # -> a page reported clip 1 started playing
    job_queue_wait: float | None = None  # sentence 1's job waiting for a worker
    safety: float = 0.0  # checking reply sentences (AutoMod, moderation), summed
    tts: float = 0.0  # summed over the turn's clips
    render: float = 0.0
    encode: float = 0.0
    first_clip_tts: float | None = None
    first_clip_render: float | None = None
    first_clip_encode: float | None = None
    clip_seconds: float = 0.0  # playing time of the clips released
    stages: dict[str, float] = field(default_factory=dict)  # other worker-reported stages

    def add_worker_timings(self, timings: dict[str, float], *, first: bool) -> None:
        """Fold in one clip's worker timings (summed over its parts by the caller)."""
        for stage in ("tts", "render", "encode"):
            value = timings.get(stage)
            if value is None:
                continue
            setattr(self, stage, getattr(self, stage) + value)
            if first:
                setattr(self, f"first_clip_{stage}", value)
        if first and "queue_wait" in timings:
            self.job_queue_wait = timings["queue_wait"]
        for stage, value in timings.items():
            if stage not in WORKER_STAGES:
                self.stages[stage] = self.stages.get(stage, 0.0) + value

    def as_dict(self) -> dict[str, float | None]:
        """Every measured figure, rounded to the millisecond."""
        out: dict[str, float | None] = {}
        for item in fields(self):
            if item.name == "stages":
                continue
            value = getattr(self, item.name)
            out[item.name] = None if value is None else round(float(value), 3)
        for stage, value in self.stages.items():
            out[stage] = round(value, 3)
        return out

    def line(self) -> str:
        """``queue_wait=0.000 llm_first_token=0.212 ...``, the figures that were measured."""
        order = (
            "queue_wait",
            "llm_first_token",
            "first_sentence",
            "safety",
            "job_queue_wait",
            "tts",
            "render",
            "encode",
            "first_clip_ready",
            "last_clip_ready",
            "first_clip_shown",
        )
        values = self.as_dict()
        return " ".join(f"{name}={values[name]:.3f}" for name in order if values[name] is not None)
