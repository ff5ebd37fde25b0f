"""The real render handler behind the job queue: a sentence goes in, a playable clip comes out."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipcast.config import Settings, load_secrets
from lipcast.wiring import build_job_handler, build_tts, encode_options
from lipsync.avatar import hex_to_rgb
from lipsync.sprite import SpriteRenderer
from lipsync.timeline import Timeline
from personas import builtin_persona_dir, load_persona
from pipeline.audio import AudioChunk
from pipeline.clips import TIMELINE_CONTENT_TYPE, pcm_sample_rate
from pipeline.jobs.queue import JobFailedError
from pipeline.jobs.render import ClipRenderer, RenderJobHandler
from tests.media import decode_frames, probe
from tests.queue_support.harness import BACKENDS, make_job, open_transport, running_worker

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


async def test_a_sentence_job_comes_back_as_an_h264_aac_clip(backend: str) -> None:
    handler = build_job_handler(Settings(), load_secrets(None))
    job = make_job("Bonjour à tous, bienvenue !").model_copy(
        update={"persona": "teacher", "language": "fr"}
    )
    arrived: list[float] = []
    async with open_transport(backend) as t, running_worker(t.worker_queue, handler):
        parts = []
        async for part in await t.requester.submit(job):
            parts.append(part)
            arrived.append(time.monotonic())
    speech, timeline_part, video = parts  # the speech as PCM, the sprite's timeline, the MP4
    # The speech and the timeline come before the frames are drawn: the overlay need not wait.
    assert arrived[2] - arrived[1] >= 0.5 * (video.timings["render"] + video.timings["encode"])
    clip = video.media
    info = probe(clip)
    timeline = Timeline.from_json(timeline_part.media)
    assert timeline_part.content_type == TIMELINE_CONTENT_TYPE
    assert timeline.frames == info.frames
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert abs(info.video_seconds - info.audio_seconds) <= 1 / 25
    assert abs(video.duration_s - info.audio_seconds) <= 1 / 25
    assert {"tts", "render", "encode", "queue_wait"} <= set(video.timings)
    # The clip carries its audio as PCM, so a voice sink never decodes AAC.
    rate = pcm_sample_rate(speech.content_type)
    assert rate is not None and not speech.last
    pcm = AudioChunk.from_pcm16(speech.media, rate)
    assert abs(pcm.duration_s - info.audio_seconds) <= 0.05
    assert float(abs(pcm.samples).max()) > 0.1  # speech, not silence


async def test_without_a_file_to_make_only_the_speech_and_the_timeline_come_back(
    backend: str,
) -> None:
    handler = build_job_handler(Settings(), load_secrets(None))
    job = make_job("Hello chat, the overlay draws me live.").model_copy(update={"mp4": False})
    async with open_transport(backend) as t, running_worker(t.worker_queue, handler):
        parts = await (await t.requester.submit(job)).collect()
    speech, timeline_part = parts  # no video part: no frame was drawn or encoded
    assert timeline_part.last and timeline_part.content_type == TIMELINE_CONTENT_TYPE
    assert "encode" not in timeline_part.timings and "tts" in timeline_part.timings
    rate = pcm_sample_rate(speech.content_type)
    assert rate is not None
    pcm = AudioChunk.from_pcm16(speech.media, rate)
    timeline = Timeline.from_json(timeline_part.media)
    assert timeline.frames == round(pcm.duration_s * timeline.fps)
    assert max(m.openness for m in timeline.mouths) > 0.5  # the mouth follows the voice
    assert timeline.mouths[-1].openness == 0.0  # and the clip ends with it closed


async def test_an_unknown_persona_fails_the_job_with_its_reason(backend: str) -> None:
    handler = build_job_handler(Settings(), load_secrets(None))
    job = make_job("hello").model_copy(update={"persona": "nobody"})
    async with open_transport(backend) as t, running_worker(t.worker_queue, handler):
        stream = await t.requester.submit(job)
        with pytest.raises(JobFailedError, match="unknown persona 'nobody'"):
            await stream.collect()


async def test_a_persona_loaded_from_any_folder_is_found_by_its_name(
    backend: str, tmp_path: Path
) -> None:
    folder = tmp_path / "somewhere" / "my-host"
    shutil.copytree(builtin_persona_dir() / "cohost", folder)
    handler = build_job_handler(
        Settings(), load_secrets(None), personas=[load_persona(str(folder))]
    )
    job = make_job("Hello from my own persona.").model_copy(update={"persona": "my-host"})
    async with open_transport(backend) as t, running_worker(t.worker_queue, handler):
        parts = await (await t.requester.submit(job)).collect()
    assert probe(parts[-1].media).audio_seconds > 0.5


class _VideoOnly:
    """The sprite renderer seen as a video renderer (no timeline), as wav2lip is."""

    name = "video-only"

    def __init__(self) -> None:
        self._sprite = SpriteRenderer(size=256)
        self.fps, self.size = self._sprite.fps, self._sprite.size

    def render(self, *args: Any, **kwargs: Any) -> Iterator[np.ndarray]:
        return self._sprite.render(*args, **kwargs)


async def test_a_video_renderers_clip_comes_back_in_half_second_fragments(backend: str) -> None:
    settings = Settings()
    secrets = load_secrets(None)
    clips = ClipRenderer(
        tts=build_tts(settings, secrets),
        tts_name="espeak",
        renderer=_VideoOnly(),
        encode=encode_options(settings),
    )
    handler = RenderJobHandler(clips, lambda name, language: load_persona(name))
    job = make_job("A photo-like persona's sentence streams while it renders.")
    async with open_transport(backend) as t, running_worker(t.worker_queue, handler):
        parts = await (await t.requester.submit(job)).collect()
    speech, *video = parts
    assert pcm_sample_rate(speech.content_type) is not None
    assert len(video) >= 4, "the MP4 did not come in fragments"
    assert all(part.content_type == "video/mp4" for part in video) and video[-1].last
    assert {"tts", "render", "encode"} <= set(video[-1].timings)
    info = probe(b"".join(part.media for part in video))
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.frames == round(video[-1].duration_s * 25)
    assert abs(info.video_seconds - info.audio_seconds) <= 1 / 25 + 0.03


async def test_a_sentence_carries_on_the_head_motion_of_the_one_before_it(backend: str) -> None:
    handler = build_job_handler(Settings(), load_secrets(None))
    first = make_job("Hello chat, welcome back to the stream.", seq=0)
    async with open_transport(backend) as t, running_worker(t.worker_queue, handler):
        speech, timeline_a, _ = await (await t.requester.submit(first)).collect()
        second = make_job("Today we talk about verbs.", seq=1).model_copy(
            update={"start_s": speech.duration_s}
        )
        _, timeline_b, video = await (await t.requester.submit(second)).collect()
    a, b = Timeline.from_json(timeline_a.media), Timeline.from_json(timeline_b.media)
    assert b.start_frame == a.start_frame + a.frames  # one take: B's first frame follows A's last
    step = max(abs(x - y) for x, y in zip(a.pose(a.frames - 1), b.pose(0), strict=True))
    restart = max(abs(x - y) for x, y in zip(a.pose(a.frames - 1), a.pose(0), strict=True))
    assert step < 0.2 < restart  # a frame's sway apart, where starting over jumps
    # The MP4 is drawn from that pose: its first frame is the renderer's frame there.
    renderer = SpriteRenderer()
    clip = handler._clips
    persona = load_persona("cohost")
    avatar = clip.avatar(persona)
    silence = np.zeros(2205, dtype=np.float32)  # a closed mouth, as both clips begin
    background = hex_to_rgb(persona.spec.avatar.background)
    drawn = {
        start: next(
            renderer.render(silence, 22050, avatar, start_frame=start, background=background)
        ).astype(float)
        for start in (0, b.start_frame)
    }
    shown = decode_frames(video.media)[0].astype(float)
    here, there = (float(np.abs(shown - drawn[start]).mean()) for start in (b.start_frame, 0))
    assert here < there / 2  # H.264's own loss against a head moved by a restart
