"""Many personal conversations at once through the real pipeline, a real RabbitMQ and two
real ``lipcast worker`` processes (eSpeak, sprite, x264): every reply arrives whole, in order,
at the adapter and channel it came from, and nothing is crossed between conversations."""

from __future__ import annotations

import uuid

import pytest

from lipcast.benchmarks.conversations import (
    Group,
    bench_settings,
    converse,
    standin_reply,
    tally,
    worker_processes,
)
from lipcast.benchmarks.standin_llm import StandInChatServer
from lipcast.config import Settings, load_secrets
from tests.media import probe
from tests.queue_support.harness import require_broker

pytestmark = pytest.mark.broker


async def test_twenty_conversations_two_personas_two_languages_arrive_whole_and_uncrossed() -> None:
    url = require_broker()
    secrets = load_secrets(None)
    settings = bench_settings(
        Settings(), url=url, queue=f"lipcast.test.{uuid.uuid4().hex[:12]}", deadline_s=180.0
    )
    settings = settings.model_copy(
        update={"render": settings.render.model_copy(update={"size": 256})}
    )
    groups = [
        Group(platform="twitch", persona="cohost"),
        Group(platform="discord", persona="teacher", language="de"),
    ]
    model = StandInChatServer(standin_reply, tokens_per_s=300)
    llm_url = await model.start()
    try:
        async with worker_processes(settings, secrets, 2):
            asked, crossed = await converse(
                settings, secrets, count=20, groups=groups, llm_url=llm_url, within_s=180.0
            )
    finally:
        await model.close()
    figures = tally(asked, sentences=2)
    assert (figures["delivered"], figures["lost"], figures["duplicated"]) == (20, 0, 0)
    assert (figures["out_of_order"], crossed) == (0, 0)
    languages = {"twitch": ("cohost", "en"), "discord": ("teacher", "de")}
    for item in asked:
        reply = item.reply
        assert reply is not None
        # back to the platform, channel and message it answers
        assert reply.utterance.platform == item.utterance.platform
        assert reply.utterance.channel == item.utterance.channel
        assert reply.utterance.message_id == item.utterance.message_id
        assert item.tag in reply.text
        persona, language = languages[item.utterance.platform]
        for _, clip in item.clips:
            assert (clip.turn.persona_id, clip.turn.language) == (persona, language)
            assert clip.audio is not None and clip.audio.duration_s > 0.3
        assert [clip.seq for clip in reply.clips] == [0, 1]
    # a clip is a real H.264 + AAC file whose picture and speech last as long as its PCM
    clip = asked[0].clips[0][1]
    info = probe(clip.media)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert clip.audio is not None
    assert abs(info.audio_seconds - clip.audio.duration_s) < 0.1
