"""Wire messages: encoding, validation on receipt, and how results are put back in order."""

from __future__ import annotations

import asyncio
import time

import pytest
from pamqp import decode as amqp_decode
from pamqp import encode as amqp_encode

from pipeline.jobs.queue import (
    JobExpiredError,
    JobFailedError,
    QueueOptions,
    ResultStream,
    ResultTimeoutError,
)
from pipeline.jobs.wire import (
    ERROR_EXPIRED,
    ERROR_POISON,
    Envelope,
    RenderJob,
    RenderResult,
    TranscribeJob,
    TranscribeResult,
    WireError,
    WireMessage,
    decode,
    encode,
)
from tests.queue_support.harness import make_job


def _through_amqp(envelope: Envelope) -> Envelope:
    """The envelope after its headers went through a real AMQP field table, both ways."""
    raw = amqp_encode.field_table(envelope.headers)  # type: ignore[arg-type]
    _, headers = amqp_decode.field_table(raw)
    return Envelope(
        kind=envelope.kind,
        headers=headers,  # type: ignore[arg-type]
        body=envelope.body,
        content_type=envelope.content_type,
    )


NOW = 1_767_225_600.123456


@pytest.mark.parametrize(
    "message",
    [
        RenderJob(
            job_id="j1",
            turn_id="t1",
            seq=3,
            text="Grüß euch, Chat! 👋",
            persona="teacher",
            language="de",
            priority=7,
            created_at=NOW,
            deadline=NOW + 12.5,
        ),
        RenderResult(
            job_id="j1",
            part=2,
            last=True,
            media=b"\x00\x01mp4",
            duration_s=2.48,
            timings={"tts": 0.0125, "render": 0.31, "encode": 0.09},
            worker="gpu-1:42",
            attempt=2,
        ),
        TranscribeJob(
            job_id="s1",
            turn_id="t9",
            audio=b"RIFF....WAVE",
            content_type="audio/wav",
            created_at=NOW,
            deadline=NOW + 5,
        ),
        TranscribeResult(job_id="s1", text="hello there", language="en", audio_duration_s=1.5),
    ],
    ids=lambda message: message.KIND,
)
def test_every_message_survives_a_real_amqp_round_trip_exactly(message: WireMessage) -> None:
    envelope = _through_amqp(encode(message))
    assert envelope.kind == message.KIND
    assert decode(envelope, type(message)) == message


def test_a_job_keeps_its_text_in_the_body_and_its_metadata_in_headers() -> None:
    envelope = encode(make_job("Hello chat"))
    assert envelope.body == b"Hello chat"
    assert envelope.content_type.startswith("text/plain")
    assert "text" not in envelope.headers and envelope.headers["version"] == 1
    assert isinstance(envelope.headers["deadline"], str)  # floats travel as decimal strings


def test_media_is_the_body_and_stays_out_of_reprs() -> None:
    result = RenderResult(job_id="j", part=0, last=True, media=b"x" * 200_000)
    envelope = encode(result)
    assert envelope.body == result.media and envelope.content_type == "video/mp4"
    assert "xxxx" not in repr(result)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"kind": "render_result"}, "wrong_kind"),
        ({"headers": {"version": 2}}, "unsupported_version"),
        ({"headers": {"version": True}}, "unsupported_version"),
        ({"headers": {"priority": 12}}, "malformed"),
        ({"headers": {"job_id": "no spaces allowed"}}, "malformed"),
        ({"headers": {"deadline": "1.0"}}, "malformed"),  # before created_at
        ({"body": b""}, "malformed"),
        ({"body": b"\xc3\x28"}, "malformed"),
    ],
)
def test_invalid_messages_are_refused_with_a_reason(change: dict[str, object], reason: str) -> None:
    valid = encode(make_job())
    envelope = Envelope(
        kind=str(change.get("kind", valid.kind)),
        headers={**valid.headers, **change.get("headers", {})},  # type: ignore[dict-item]
        body=change.get("body", valid.body),  # type: ignore[arg-type]
        content_type=valid.content_type,
    )
    with pytest.raises(WireError) as caught:
        decode(envelope, RenderJob)
    assert caught.value.reason == reason


def test_unknown_headers_are_ignored_so_fields_can_be_added() -> None:
    valid = encode(make_job())
    headers = {**valid.headers, "x-death": [{"reason": "rejected"}], "future_field": "ok"}
    envelope = Envelope(kind=valid.kind, headers=headers, body=valid.body)  # type: ignore[arg-type]
    assert decode(envelope, RenderJob).text == "Hello chat!"


def _part(job: RenderJob, part: int, *, last: bool = False) -> RenderResult:
    return RenderResult(job_id=job.job_id, part=part, last=last, media=bytes([part]))


async def test_a_stream_reorders_parts_and_drops_duplicates() -> None:
    job = make_job()
    stream = ResultStream(job, timeout_s=5)
    for number in (2, 0, 0, 1):
        stream.deliver(_part(job, number, last=number == 2))
    stream.deliver(_part(job, 1))  # late duplicate of a part already buffered
    parts = await stream.collect()
    assert [part.part for part in parts] == [0, 1, 2]
    assert stream.duplicates == 2 and stream.finished


async def test_an_error_part_ends_the_stream_after_the_parts_before_it() -> None:
    job = make_job()
    stream = ResultStream(job, timeout_s=5)
    stream.deliver(_part(job, 0))
    stream.deliver(RenderResult.failure(job.job_id, part=0, reason=ERROR_POISON, error="boom"))
    assert (await anext(stream)).part == 0
    with pytest.raises(JobFailedError, match="boom") as caught:
        await anext(stream)
    assert caught.value.reason == ERROR_POISON


async def test_an_expired_error_part_raises_job_expired() -> None:
    job = make_job()
    stream = ResultStream(job, timeout_s=5)
    stream.deliver(RenderResult.failure(job.job_id, part=0, reason=ERROR_EXPIRED, error="late"))
    with pytest.raises(JobExpiredError):
        await stream.collect()


async def test_a_stream_times_out_on_a_missing_part_and_calls_back_once() -> None:
    job = make_job()
    closed: list[ResultStream] = []
    stream = ResultStream(job, timeout_s=0.05, on_close=closed.append)
    stream.deliver(_part(job, 1, last=True))  # part 0 never comes
    with pytest.raises(ResultTimeoutError, match="part 0"):
        await stream.collect()
    assert closed == [stream]
    stream.close()
    assert closed == [stream]


async def test_waiting_for_the_first_part_stops_at_the_deadline() -> None:
    job = make_job(ttl_s=0.05)
    stream = ResultStream(job, timeout_s=30)
    started = time.monotonic()
    with pytest.raises(JobExpiredError):
        await stream.collect()
    assert time.monotonic() - started < 1


async def test_parts_arriving_while_the_requester_waits_wake_it() -> None:
    job = make_job()
    stream = ResultStream(job, timeout_s=5)
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, stream.deliver, _part(job, 0, last=True))
    assert [part.part for part in await stream.collect()] == [0]


@pytest.mark.parametrize("persona", ["../etc", "/home/me/persona", "a/b", ".hidden", "x" * 101])
def test_a_job_cannot_name_a_folder_on_the_workers_disk(persona: str) -> None:
    with pytest.raises(ValueError, match="persona"):
        type(make_job()).model_validate(make_job().model_dump() | {"persona": persona})


def test_queue_options_never_show_the_broker_password() -> None:
    options = QueueOptions(url="amqp://lipcast:hunter2pass@broker:5672/")
    assert "hunter2pass" not in repr(options) and "hunter2pass" not in str(options)
