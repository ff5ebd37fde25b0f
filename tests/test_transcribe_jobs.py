"""Transcription on a worker: eSpeak speech → ``TranscribeJob`` → a faster-whisper worker → the
words, through the memory queue and the real RabbitMQ, with the render jobs' expiry and
dead-letter rules."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from lipcast.config import Secrets, Settings, load_secrets, load_settings
from lipcast.wiring import build_stt, stt_queue_name
from pipeline.audio import AudioChunk, write_wav
from pipeline.errors import BackendError, ConfigError
from pipeline.jobs.queue import TRANSCRIBE_JOBS, JobExpiredError, JobFailedError
from pipeline.jobs.transcribe import TranscribeWorker
from pipeline.jobs.wire import (
    ERROR_EXPIRED,
    ERROR_FAILED,
    ERROR_INVALID,
    ERROR_POISON,
    TranscribeJob,
    TranscribeResult,
    encode,
)
from pipeline.jobs.worker import JobWorker
from pipeline.services.stt import STT, Transcript
from pipeline.services.stt.faster_whisper import FasterWhisperSTT
from pipeline.services.stt.queue import QueueSTT
from pipeline.speech.wer import word_error_rate
from tests.queue_support.harness import (
    BACKENDS,
    ROOT,
    Transport,
    open_transport,
    require_broker,
)
from tests.voice_support import SENTENCES, speak


class CountingSTT(STT):
    """faster-whisper, counting what it was asked to transcribe."""

    name = "counting"

    def __init__(self, inner: STT) -> None:
        self.inner = inner
        self.calls = 0

    async def transcribe(self, audio: AudioChunk, *, language: str | None = None) -> Transcript:
        self.calls += 1
        return await self.inner.transcribe(audio, language=language)


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperSTT:
    return FasterWhisperSTT()


@contextlib.asynccontextmanager
async def transcribe_transport(backend: str, **overrides: Any) -> AsyncIterator[Transport]:
    async with open_transport(backend, kind=TRANSCRIBE_JOBS, **overrides) as transport:
        yield transport


@contextlib.asynccontextmanager
async def serving(worker: JobWorker[Any, Any]) -> AsyncIterator[None]:
    """``worker`` running in a task until the block ends."""
    ready = asyncio.Event()
    task = asyncio.create_task(worker.run(on_ready=ready.set), name="test-stt-worker")
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait({task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    ready_wait.cancel()
    if task.done():
        task.result()
    try:
        yield
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


def transcribe_job(audio: bytes, *, ttl_s: float = 30.0, **fields: Any) -> TranscribeJob:
    now = time.time()
    job_id = f"stt-{uuid.uuid4().hex}"
    return TranscribeJob(
        job_id=job_id,
        turn_id=job_id,
        audio=audio,
        created_at=now,
        deadline=now + ttl_s,
        **fields,
    )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_speech_goes_to_a_worker_and_the_words_come_back(
    backend: str, whisper: FasterWhisperSTT
) -> None:
    stt = CountingSTT(whisper)
    async with transcribe_transport(backend) as t:
        requester = QueueSTT(queue=t.requester, timeout_s=30.0)
        worker = TranscribeWorker(t.worker_queue, stt, worker_id="gpu-1")
        async with serving(worker):
            pairs = []
            for sentence in SENTENCES[:3]:
                transcript = await requester.transcribe(await speak(sentence), language="en")
                pairs.append((sentence, transcript.text))
                assert transcript.audio_s > 0.5
                assert transcript.language == "en"
    assert word_error_rate(pairs) <= 0.2, pairs
    assert stt.calls == 3 and worker.stats.done == 3


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_result_carries_the_worker_and_its_timings(
    backend: str, whisper: FasterWhisperSTT
) -> None:
    async with (
        transcribe_transport(backend) as t,
        serving(TranscribeWorker(t.worker_queue, whisper, worker_id="gpu-7")),
    ):
        job = transcribe_job(write_wav(await speak(SENTENCES[4])), language="en")
        results = await (await t.requester.submit(job)).collect()
    assert len(results) == 1
    result = results[0]
    assert isinstance(result, TranscribeResult)
    assert result.worker == "gpu-7" and result.last and result.error is None
    assert "thank you" in result.text.lower()
    assert set(result.timings) == {"queue_wait", "stt"} and result.audio_duration_s > 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"version": 2}, b"RIFF", "unsupported_version"),
        ({"deadline": "soon"}, b"RIFF", "deadline"),
        ({}, b"", "audio"),  # no audio at all
    ],
)
async def test_an_invalid_transcribe_message_is_dead_lettered_with_its_reason(
    backend: str, headers: dict[str, object], body: bytes, expected: str
) -> None:
    stt = CountingSTT(FasterWhisperSTT())
    valid = encode(transcribe_job(b"RIFF"))
    broken = type(valid)(
        kind=valid.kind,
        headers={**valid.headers, **headers},  # type: ignore[dict-item]
        body=body,
        content_type=valid.content_type,
    )
    async with transcribe_transport(backend) as t, serving(TranscribeWorker(t.worker_queue, stt)):
        await t.inject(broken)
        dead = await t.dead_letters()
    assert dead[0].reason == ERROR_INVALID and expected in dead[0].detail, dead[0]
    assert dead[0].headers["job_id"] == valid.headers["job_id"]
    assert stt.calls == 0


@pytest.mark.parametrize("backend", BACKENDS)
async def test_audio_that_is_not_a_wav_fails_the_job_and_the_worker_goes_on(
    backend: str, whisper: FasterWhisperSTT
) -> None:
    stt = CountingSTT(whisper)
    async with transcribe_transport(backend) as t:
        requester = QueueSTT(queue=t.requester, timeout_s=30.0)
        async with serving(TranscribeWorker(t.worker_queue, stt)):
            stream = await t.requester.submit(transcribe_job(b"this is not a wav file"))
            with pytest.raises(JobFailedError, match="not a readable PCM WAV") as failed:
                await stream.collect()
            dead = await t.dead_letters()
            after = await requester.transcribe(await speak(SENTENCES[0]), language="en")
    assert failed.value.reason == ERROR_FAILED
    assert dead[0].reason == ERROR_FAILED and dead[0].job_id == stream.job_id
    assert "hear me" in after.text.lower()


class FlakySTT(CountingSTT):
    """Crashes on its first ``crashes`` transcriptions (a GPU hiccup), then transcribes."""

    def __init__(self, inner: STT, *, crashes: int) -> None:
        super().__init__(inner)
        self.crashes = crashes

    async def transcribe(self, audio: AudioChunk, *, language: str | None = None) -> Transcript:
        if self.calls < self.crashes:
            self.calls += 1
            raise RuntimeError("simulated CUDA error")
        return await super().transcribe(audio, language=language)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_crashed_attempt_is_tried_again_and_the_words_still_come_back(
    backend: str, whisper: FasterWhisperSTT
) -> None:
    stt = FlakySTT(whisper, crashes=1)
    async with transcribe_transport(backend) as t:
        requester = QueueSTT(queue=t.requester, timeout_s=30.0)
        worker = TranscribeWorker(t.worker_queue, stt)
        async with serving(worker):
            transcript = await requester.transcribe(await speak(SENTENCES[1]), language="en")
    assert word_error_rate([(SENTENCES[1], transcript.text)]) <= 0.2, transcript
    assert stt.calls == 2 and worker.stats.retried == 1 and worker.stats.done == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_speech_that_crashes_every_attempt_is_dead_lettered_as_poison(
    backend: str, whisper: FasterWhisperSTT
) -> None:
    stt = FlakySTT(whisper, crashes=99)
    async with transcribe_transport(backend, max_attempts=2) as t:
        requester = QueueSTT(queue=t.requester, timeout_s=30.0)
        async with serving(TranscribeWorker(t.worker_queue, stt)):
            with pytest.raises(BackendError, match="poison"):
                await requester.transcribe(await speak("Hello."))
            dead = await t.dead_letters()
    assert stt.calls == 2
    assert dead[0].reason == ERROR_POISON and "simulated CUDA error" in dead[0].detail


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_job_a_worker_takes_after_its_deadline_is_dropped_untranscribed(
    backend: str, whisper: FasterWhisperSTT
) -> None:
    stt = CountingSTT(whisper)
    late_clock = lambda: time.time() + 60  # noqa: E731 - the worker sees the deadline as passed
    async with transcribe_transport(backend) as t:
        async with serving(TranscribeWorker(t.worker_queue, stt, clock=late_clock)):
            stream = await t.requester.submit(transcribe_job(write_wav(await speak("Hello."))))
            with pytest.raises(JobExpiredError, match="deadline passed"):
                await stream.collect()
        dead = await t.dead_letters()
    assert stt.calls == 0
    assert dead[0].reason == ERROR_EXPIRED and dead[0].job_id == stream.job_id


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_job_nobody_took_in_time_expires_and_the_requester_is_told(
    backend: str, whisper: FasterWhisperSTT
) -> None:
    stt = CountingSTT(whisper)
    async with transcribe_transport(backend) as t:
        requester = QueueSTT(queue=t.requester, timeout_s=0.5)
        with pytest.raises(BackendError, match=r"no STT worker answered within 0\.5 s") as err:
            await requester.transcribe(await speak("Hello."))
        assert err.value.transient
        # A worker that starts afterwards never transcribes it: on RabbitMQ the broker drops
        # it at its expiration, in memory the worker sees the deadline passed.
        async with serving(TranscribeWorker(t.worker_queue, stt)):
            dead = await t.dead_letters()
    assert stt.calls == 0
    assert dead[0].reason == ERROR_EXPIRED


def test_the_queue_backend_needs_rabbitmq_and_uses_its_own_work_queue() -> None:
    memory = Settings.model_validate({"stt": {"backend": "queue"}})
    with pytest.raises(ConfigError, match=r'\[queue\] backend = "rabbitmq"'):
        build_stt(memory, Secrets())
    shared = Settings.model_validate(
        {"stt": {"backend": "queue"}, "queue": {"backend": "rabbitmq", "name": "studio"}}
    )
    stt = build_stt(shared, Secrets())
    assert isinstance(stt, QueueSTT)
    assert stt_queue_name(shared) == "studio.stt"
    assert "'studio.stt' on rabbitmq" in repr(stt)


def doctor_checks(settings: Settings) -> dict[str, Any]:
    from lipcast.cli import Context
    from lipcast.commands import doctor

    context = Context(settings=settings, secrets=Secrets(), config_path=None)
    return {check.topic: check for check in doctor.checks(context)}


def test_doctor_says_where_queued_speech_goes() -> None:
    memory = Settings.model_validate({"stt": {"backend": "queue"}})
    found = doctor_checks(memory)
    assert '[queue] backend = "rabbitmq"' in found["stt.queue"].detail
    shared = Settings.model_validate(
        {"stt": {"backend": "queue"}, "queue": {"backend": "rabbitmq", "name": "studio"}}
    )
    found = doctor_checks(shared)
    assert found["stt.queue"].status == "ok"
    assert "studio.stt" in found["stt.queue"].detail
    assert "lipcast worker --stt" in found["stt.queue"].detail


async def test_lipcast_worker_stt_transcribes_for_a_queue_requester(tmp_path: Path) -> None:
    """The commands a streamer runs: one bot.toml, `lipcast worker --stt` on the GPU machine,
    the adapters' process with [stt] backend = "queue"."""
    url = require_broker()
    name = f"lipcast.test.{uuid.uuid4().hex[:12]}"
    config = tmp_path / "bot.toml"
    config.write_text(
        f'[queue]\nbackend = "rabbitmq"\nname = "{name}"\n\n'
        '[stt]\nbackend = "queue"\n\n[stt.queue]\nbackend = "faster-whisper"\ntimeout_s = 60.0\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lipcast",
        "-c",
        str(config),
        "worker",
        "--stt",
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "LIPCAST_AMQP_URL": url, "PYTHONPATH": ROOT},
    )
    seen: list[str] = []
    stt: STT | None = None
    try:
        assert process.stderr is not None
        async with asyncio.timeout(60):
            while not any("transcribing with faster-whisper" in line for line in seen):
                raw = await process.stderr.readline()
                assert raw, f"the worker ended before it was ready: {seen}"
                seen.append(raw.decode().rstrip())
        assert f"'{name}.stt'" in seen[-1]
        settings = load_settings(config)
        stt = build_stt(settings, load_secrets(None))
        transcript = await stt.transcribe(await speak(SENTENCES[5]), language="en")
        assert word_error_rate([(SENTENCES[5], transcript.text)]) <= 0.2, transcript
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), 30)
        seen.extend(rest.decode().splitlines())
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert "jobs: 1 done" in seen[-1], seen
    finally:
        if stt is not None:
            await stt.aclose()
        if process.returncode is None:
            process.kill()
            await process.wait()
        async with await aio_pika.connect(url) as connection:
            channel = await connection.channel()
            stt_queue = f"{name}.stt"
            for queue in (stt_queue, f"{stt_queue}.dead", f"{stt_queue}.suspect"):
                await channel.queue_delete(queue)
            for exchange in (f"{stt_queue}.dead-letter", f"{stt_queue}.awaiting"):
                await channel.exchange_delete(exchange)
