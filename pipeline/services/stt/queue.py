"""Speech to text on a worker machine: each utterance travels as a ``TranscribeJob``.

``[stt] backend = "queue"`` makes this process a requester: ``transcribe`` sends the audio as a
16-bit mono WAV file to the STT work queue (``<[queue] name>.stt``), where ``lipcast worker
--stt`` on a GPU machine runs the real backend, and awaits the one
:class:`~pipeline.jobs.wire.TranscribeResult` by direct reply-to. The callers (the Discord
voice feature, voice messages) do not know the difference.
"""

from __future__ import annotations

import time
import uuid
from typing import ClassVar

from pipeline.audio import AudioChunk, write_wav
from pipeline.errors import BackendError
from pipeline.jobs.queue.base import JobExpiredError, JobFailedError, JobQueue
from pipeline.jobs.wire import TranscribeJob, TranscribeResult
from pipeline.services.stt.base import STT, Transcript, check_audio


class QueueSTT(STT):
    """Transcription by whichever STT worker takes the job from ``queue``."""

    name: ClassVar[str] = "queue"

    def __init__(
        self,
        *,
        queue: JobQueue[TranscribeJob, TranscribeResult],
        timeout_s: float = 15.0,
        priority: int = 5,
    ) -> None:
        self._queue = queue
        self._timeout_s = timeout_s
        self._priority = priority

    def __repr__(self) -> str:
        return (
            f"QueueSTT(queue={self._queue.options.name!r} on {self._queue.name}, "
            f"timeout_s={self._timeout_s:g})"
        )

    async def warm_up(self) -> None:
        """Connect to the job queue now, so the first utterance does not wait for it."""
        await self._queue.start()

    async def transcribe(self, audio: AudioChunk, *, language: str | None = None) -> Transcript:
        """Send ``audio`` to an STT worker and return its transcript."""
        check_audio(audio)
        await self._queue.start()
        now = time.time()
        job_id = f"stt-{uuid.uuid4().hex}"
        job = TranscribeJob(
            job_id=job_id,
            turn_id=job_id,
            audio=write_wav(audio),
            language=language,
            priority=self._priority,
            created_at=now,
            deadline=now + self._timeout_s,
        )
        stream = await self._queue.submit(job)
        try:
            results = await stream.collect()
        except JobExpiredError as err:
            raise BackendError(
                f"no STT worker answered within {self._timeout_s:g} s ([stt.queue] timeout_s) "
                f"on {self._queue.options.name!r}; is `lipcast worker --stt` running and "
                "keeping up?",
                transient=True,
            ) from err
        except JobFailedError as err:
            raise BackendError(
                f"the STT worker could not transcribe ({err.reason}): {err}; see that "
                "worker's log (lipcast worker --stt)",
                transient=False,
            ) from err
        finally:
            stream.close()
        result = results[-1]
        return Transcript(
            text=result.text.strip(),
            language=result.language or language,
            audio_s=result.audio_duration_s or audio.duration_s,
        )

    async def aclose(self) -> None:
        """Close the job queue's connection."""
        await self._queue.close()
