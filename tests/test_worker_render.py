"""The real render handler behind the job queue: a sentence goes in, a playable clip comes out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lipcast.config import Settings, load_secrets
from lipcast.wiring import build_job_handler
from lipsync.timeline import Timeline
from personas import builtin_persona_dir, load_persona
from pipeline.audio import AudioChunk
from pipeline.clips import TIMELINE_CONTENT_TYPE, pcm_sample_rate
from pipeline.jobs.queue import JobFailedError
from tests.media import probe
from tests.queue_support.harness import BACKENDS, make_job, open_transport, running_worker

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


async def test_a_sentence_job_comes_back_as_an_h264_aac_clip(backend: str) -> None:
    handler = build_job_handler(Settings(), load_secrets(None))
    job = make_job("Bonjour à tous, bienvenue !").model_copy(
        update={"persona": "teacher", "language": "fr"}
    )
    async with open_transport(backend) as t, running_worker(t.worker_queue, handler):
        parts = await (await t.requester.submit(job)).collect()
    speech, timeline_part, video = parts  # the speech as PCM, the sprite's timeline, the MP4
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
