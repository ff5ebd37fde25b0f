"""Speech-to-text backends, chosen by name in bot.toml (``[stt] backend``)."""

from __future__ import annotations

from pipeline.backends import BackendSpec
from pipeline.services.stt.base import STT, Transcript

STT_BACKENDS: dict[str, BackendSpec] = {
    "faster-whisper": BackendSpec(
        target="pipeline.services.stt.faster_whisper:FasterWhisperSTT",
        requires=("faster_whisper",),
        package="faster-whisper",
        extra="voice",
        description="Whisper on this machine (CTranslate2), offline; tiny.en ships with the extra",
    ),
    "openai": BackendSpec(
        target="pipeline.services.stt.openai:OpenAISTT",
        requires=("openai",),
        package="openai",
        description="OpenAI (or a compatible server, e.g. a local whisper server) transcriptions",
    ),
    "queue": BackendSpec(
        target="pipeline.services.stt.queue:QueueSTT",
        requires=("aio_pika",),
        package="aio-pika",
        description="on `lipcast worker --stt` machines, through the job queue (RabbitMQ)",
    ),
}

__all__ = ["STT", "STT_BACKENDS", "Transcript"]
