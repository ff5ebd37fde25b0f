"""The speech-to-text worker: transcribes :class:`~pipeline.jobs.wire.TranscribeJob` messages.

It shares the render worker's loop (:class:`~pipeline.jobs.worker.JobWorker`): expired jobs are
dropped and dead-lettered as ``expired``, a permanent error (audio that is not a WAV file, a
model that cannot load) fails the job as ``failed``, any other error is another attempt until
``max_attempts`` makes the job ``poison``. Each job is answered with one
:class:`~pipeline.jobs.wire.TranscribeResult`.

The audio arrives as a 16-bit PCM WAV file (``audio/wav``), the format
:func:`pipeline.audio.write_wav` makes; the STT backend resamples it as it needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.audio import read_wav
from pipeline.errors import InputError
from pipeline.jobs.queue.base import Delivery, JobQueue
from pipeline.jobs.wire import TranscribeJob, TranscribeResult
from pipeline.jobs.worker import JobWorker
from pipeline.services.stt.base import STT

WAV_CONTENT_TYPES = ("audio/wav", "audio/x-wav", "audio/wave")


class TranscribeWorker(JobWorker[TranscribeJob, TranscribeResult]):
    """Consume transcribe jobs from ``queue`` and answer each with ``stt``'s transcript."""

    def __init__(
        self,
        queue: JobQueue[TranscribeJob, TranscribeResult],
        stt: STT,
        *,
        prefetch: int = 1,
        concurrency: int = 1,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            queue, prefetch=prefetch, concurrency=concurrency, worker_id=worker_id, clock=clock
        )
        self._stt = stt

    async def _run_job(
        self, delivery: Delivery[TranscribeJob, TranscribeResult], started: float
    ) -> bool:
        """Transcribe the job's audio and send the one result; False if nobody awaits it."""
        job = delivery.job
        if job.content_type.split(";")[0].strip().lower() not in WAV_CONTENT_TYPES:
            raise InputError(
                f"transcribe job {job.job_id}: audio of type {job.content_type!r}; a worker "
                "takes audio/wav (16-bit PCM)"
            )
        audio = read_wav(job.audio)
        transcript = await self._stt.transcribe(audio, language=job.language)
        finished = self._clock()
        result = TranscribeResult(
            job_id=job.job_id,
            text=transcript.text,
            language=transcript.language,
            audio_duration_s=audio.duration_s,
            timings={
                "queue_wait": max(0.0, started - job.created_at),
                "stt": max(0.0, finished - started),
            },
            worker=self.worker_id,
            attempt=delivery.attempt,
        )
        return await delivery.reply(result)
