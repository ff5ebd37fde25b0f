"""The openai LLM backend: the real openai client against a real local server
(tests/openai_stub)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator

import pytest

from pipeline.errors import ConfigError
from pipeline.services.llm import (
    ChatMessage,
    GenerationOptions,
    LLMError,
    OpenAIChatLLM,
    ReasoningFilter,
    RetryPolicy,
)
from tests.openai_stub import Fault, OpenAIStub

REPLY = "Hello there, chat. This is the second sentence. And a third one."
MESSAGES = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="hi")]


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    server = OpenAIStub(reply=REPLY, tokens_per_s=2000)
    await server.start()
    yield server
    await server.close()


def llm_for(stub: OpenAIStub, **options: object) -> OpenAIChatLLM:
    settings: dict[str, object] = {"model": "stub-model", "timeout_s": 0.5, "retries": 2}
    settings.update(options)
    return OpenAIChatLLM(base_url=stub.base_url, api_key="sk-test", **settings)  # type: ignore[arg-type]


async def collect(llm: OpenAIChatLLM, **kwargs: object) -> str:
    try:
        return "".join([piece async for piece in llm.stream(MESSAGES, **kwargs)])  # type: ignore[arg-type]
    finally:
        await llm.aclose()


async def test_streams_the_reply_in_pieces(stub: OpenAIStub) -> None:
    llm = llm_for(stub)
    pieces = [piece async for piece in llm.stream(MESSAGES)]
    await llm.aclose()
    assert "".join(pieces) == REPLY
    assert len(pieces) > 5  # streamed, not one block


async def test_request_carries_model_temperature_and_max_tokens(stub: OpenAIStub) -> None:
    llm = llm_for(stub, temperature=0.3, max_tokens=99)
    await collect(llm)
    body = stub.requests[0]
    assert body["model"] == "stub-model"
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 99
    assert body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert stub.exchanges[0].headers["Authorization"] == "Bearer sk-test"


async def test_a_persona_overrides_model_temperature_and_max_tokens(stub: OpenAIStub) -> None:
    llm = llm_for(stub)
    await collect(llm, options=GenerationOptions(model="other", temperature=1.5, max_tokens=42))
    body = stub.requests[0]
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("other", 1.5, 42)


async def test_429_waits_as_long_as_retry_after_says(stub: OpenAIStub) -> None:
    stub.faults.append(Fault(kind="rate_limit", retry_after="0.6"))
    llm = llm_for(stub, retry=RetryPolicy(retries=2, base_s=0.01, max_s=0.02))
    started = time.monotonic()
    assert await collect(llm) == REPLY
    assert len(stub.exchanges) == 2
    waited = stub.exchanges[1].received_at - stub.exchanges[0].received_at
    assert waited >= 0.6
    assert time.monotonic() - started < 5.0  # not hung: far below any timeout


async def test_429_without_retry_after_backs_off_with_jitter(stub: OpenAIStub) -> None:
    stub.faults.extend([Fault(kind="rate_limit", retry_after=None)] * 2)
    llm = llm_for(stub, retry=RetryPolicy(retries=2, base_s=0.1, max_s=1.0))
    assert await collect(llm) == REPLY
    first, second, third = (exchange.received_at for exchange in stub.exchanges)
    assert 0.05 <= second - first <= 0.3  # 0.1 s ceiling, half of it guaranteed
    assert 0.1 <= third - second <= 0.5  # doubled


async def test_5xx_is_retried(stub: OpenAIStub) -> None:
    stub.faults.extend([Fault(kind="server_error"), Fault(kind="server_error", status=503)])
    llm = llm_for(stub, retry=RetryPolicy(retries=2, base_s=0.01))
    assert await collect(llm) == REPLY
    assert [exchange.status for exchange in stub.exchanges] == [500, 503, 200]


async def test_retries_run_out(stub: OpenAIStub) -> None:
    stub.faults.extend([Fault(kind="server_error")] * 3)
    llm = llm_for(stub, retry=RetryPolicy(retries=2, base_s=0.01))
    with pytest.raises(LLMError, match="HTTP 500") as caught:
        await collect(llm)
    assert caught.value.transient and not caught.value.partial
    assert len(stub.exchanges) == 3


@pytest.mark.parametrize(
    ("kind", "message"),
    [("quota", "quota is used up"), ("unauthorized", "check OPENAI_API_KEY")],
)
async def test_permanent_errors_are_not_retried(stub: OpenAIStub, kind: str, message: str) -> None:
    stub.faults.append(Fault(kind=kind))  # type: ignore[arg-type]
    llm = llm_for(stub)
    with pytest.raises(LLMError, match=message) as caught:
        await collect(llm)
    assert not caught.value.transient
    assert len(stub.exchanges) == 1


async def test_unknown_model_names_the_config_key(stub: OpenAIStub) -> None:
    stub.faults.append(Fault(kind="server_error", status=404))
    llm = llm_for(stub)
    with pytest.raises(LLMError, match=r"\[llm\] model"):
        await collect(llm)


async def test_a_stall_before_the_first_token_times_out_and_is_retried(stub: OpenAIStub) -> None:
    stub.faults.append(Fault(kind="stall", after_tokens=0))
    llm = llm_for(stub, timeout_s=0.3, retry=RetryPolicy(retries=1, base_s=0.01))
    started = time.monotonic()
    assert await collect(llm) == REPLY
    assert 0.3 <= time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("stall", r"sent nothing for 0\.3 s \(\[llm\] timeout_s\)"),
        ("disconnect", "broke off while answering"),
        ("malformed", "malformed stream chunk"),
        ("error_event", "reported an error: the model is overloaded"),
    ],
)
async def test_a_fault_mid_stream_keeps_what_was_said_and_is_not_repeated(
    stub: OpenAIStub, kind: str, message: str
) -> None:
    stub.faults.append(Fault(kind=kind, after_tokens=4))  # type: ignore[arg-type]
    llm = llm_for(stub, timeout_s=0.3)
    received: list[str] = []
    with pytest.raises(LLMError, match=message) as caught:
        async for piece in llm.stream(MESSAGES):
            received.append(piece)
    await llm.aclose()
    assert caught.value.partial and caught.value.transient
    assert str(caught.value).endswith("the answer was cut off")
    assert "".join(received) == "".join(stub.exchanges[0].tokens)
    assert REPLY.startswith("".join(received)) and received
    assert len(stub.exchanges) == 1  # a retry would have repeated the start of the reply


@pytest.mark.parametrize("kind", ["disconnect", "malformed"])
async def test_a_fault_before_any_text_is_retried(stub: OpenAIStub, kind: str) -> None:
    stub.faults.append(Fault(kind=kind, after_tokens=0))  # type: ignore[arg-type]
    llm = llm_for(stub, retry=RetryPolicy(retries=1, base_s=0.01))
    assert await collect(llm) == REPLY
    assert len(stub.exchanges) == 2


async def test_the_deadline_stops_retrying(stub: OpenAIStub) -> None:
    stub.faults.append(Fault(kind="rate_limit", retry_after="5"))
    llm = llm_for(stub)
    started = time.monotonic()
    with pytest.raises(LLMError, match="no time left"):
        await collect(llm, deadline=time.monotonic() + 1.0)
    assert time.monotonic() - started < 0.5


async def test_a_retry_after_beyond_reason_is_not_waited_for(stub: OpenAIStub) -> None:
    stub.faults.append(Fault(kind="rate_limit", retry_after="3600"))
    llm = llm_for(stub)
    with pytest.raises(LLMError, match="3600 s"):
        await collect(llm)


async def test_connection_refused_says_what_to_check(refused_url: str) -> None:
    llm = OpenAIChatLLM(
        base_url=refused_url + "/v1", model="m", timeout_s=0.5, retry=RetryPolicy(retries=0)
    )
    with pytest.raises(LLMError, match=r"\[llm\] base_url"):
        await collect(llm)


def test_openai_without_a_key_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIChatLLM(base_url="https://api.openai.com/v1")
    with pytest.raises(ConfigError, match=r"\[llm\] base_url"):
        OpenAIChatLLM(base_url="HTTPS://API.OpenAI.com/v1/", api_key="")


def test_other_servers_need_no_key() -> None:
    """Only the host counts: "api.openai.com" elsewhere in the URL is another server."""
    for base_url in (
        "http://127.0.0.1:11434/v1",
        "http://127.0.0.1:8080/api.openai.com/v1",
        "https://api.openai.com.example.net/v1",
    ):
        assert OpenAIChatLLM(base_url=base_url).base_url == base_url


async def test_a_refused_key_is_never_echoed(stub: OpenAIStub) -> None:
    secret = "sk-proj-0123456789abcdefSECRET"
    stub.faults.append(Fault(kind="unauthorized"))  # the stub quotes the key it was sent
    llm = OpenAIChatLLM(base_url=stub.base_url, api_key=secret, model="stub-model")
    with pytest.raises(LLMError, match=r"Incorrect API key provided: \*\*\*") as caught:
        await collect(llm)
    assert secret not in str(caught.value) and secret not in repr(caught.value)


def test_the_api_key_never_shows_in_repr() -> None:
    llm = OpenAIChatLLM(base_url="https://api.openai.com/v1", api_key="sk-very-secret-key")
    assert "sk-very-secret" not in repr(llm) and "sk-very-secret" not in llm.describe()


async def test_think_blocks_are_not_spoken(stub: OpenAIStub) -> None:
    stub.reply = "<think>The user greets me; plan a reply.</think>Hello there, friend."
    llm = llm_for(stub)
    assert await collect(llm) == "Hello there, friend."


def test_reasoning_filter_across_pieces() -> None:
    filtering = ReasoningFilter()
    pieces = ["Hi <th", "ink>secret plan</thi", "nk> there <", "b>"]
    assert "".join(filtering.feed(piece) for piece in pieces) + filtering.flush() == "Hi  there <b>"


async def test_retry_after_as_a_date_is_read_the_way_openai_reads_it(stub: OpenAIStub) -> None:
    when = email.utils.formatdate(time.time() + 2.0, usegmt=True)  # seconds resolution
    stub.faults.append(Fault(kind="rate_limit", retry_after=when))
    llm = llm_for(stub, retry=RetryPolicy(retries=1, base_s=0.01, max_s=0.02))
    assert await collect(llm) == REPLY
    first, second = stub.exchanges
    assert second.received_at - first.received_at >= 0.9


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("html", "answered with text/html"),
        ("json_body", "answered with application/json"),
        ("no_chunks", "answered with an event stream without a completion chunk"),
    ],
)
async def test_an_answer_that_is_not_openai_is_an_error_that_says_so(
    stub: OpenAIStub, kind: str, said: str
) -> None:
    stub.faults.append(Fault(kind=kind))  # type: ignore[arg-type]
    llm = llm_for(stub)
    with pytest.raises(LLMError) as caught:
        await collect(llm)
    message = str(caught.value)
    assert said in message and "[llm] base_url" in message
    assert "\n" not in message
    assert not caught.value.transient
    assert len(stub.exchanges) == 1  # permanent: not retried
