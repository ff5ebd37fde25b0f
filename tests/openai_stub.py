"""A real HTTP server that speaks OpenAI's chat-completions API, for tests.

It streams replies as server-sent events at a set token rate, as ``stream=True`` does, and can
misbehave on purpose, one request at a time (:class:`Fault`): 429 with ``Retry-After``, 500, a
stall, a connection dropped mid-stream, malformed chunks, an error event, a used-up quota, a
refused key. It also answers ``POST /v1/moderations``, with a queue of faults of its own. The
tests talk to it with the real ``openai`` client over real sockets; nothing of the package is
replaced.

    stub = OpenAIStub(reply="Hello there. How are you?", tokens_per_s=200)
    base_url = await stub.start()        # http://127.0.0.1:PORT/v1
    stub.faults.append(Fault("rate_limit", retry_after="0.2"))
    ...
    await stub.close()
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

FaultKind = Literal[
    "rate_limit",  # 429 with Retry-After
    "quota",  # 429 insufficient_quota (not worth retrying)
    "server_error",  # 500
    "unauthorized",  # 401, quoting the key it was sent back (as careless servers do)
    "stall",  # after `after_tokens` tokens, send nothing more
    "disconnect",  # after `after_tokens` tokens, drop the connection
    "malformed",  # after `after_tokens` tokens, send a chunk that is not JSON
    "error_event",  # after `after_tokens` tokens, send {"error": ...} in the stream
    "html",  # 200 with an HTML page (a web UI or a login portal at the address)
    "json_body",  # 200 with a JSON body that is no completion (some other API)
    "no_chunks",  # 200, an event stream that ends without a single completion chunk
]

_TOKEN = re.compile(r"\s?\w{1,6}|\s?[^\w\s]|\s+")

MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def tokenize(text: str) -> list[str]:
    """Cut text into model-like tokens (about four characters each, spaces leading)."""
    tokens = _TOKEN.findall(text)
    assert "".join(tokens) == text
    return tokens


@dataclass(kw_only=True)
class Fault:
    """How one request goes wrong; queued in :attr:`OpenAIStub.faults`, used once each."""

    kind: FaultKind
    after_tokens: int = 0
    retry_after: str | None = "1"  # the Retry-After header of a 429 (None: no header)
    status: int | None = None  # override the HTTP status of server_error


Responder = Callable[[list[dict[str, Any]]], str]


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


@dataclass(kw_only=True)
class Exchange:
    """One request the stub received, and what it sent back."""

    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float  # time.monotonic()
    token_times: list[float] = field(default_factory=list)  # when each token was written
    tokens: list[str] = field(default_factory=list)
    status: int = 200


class OpenAIStub:
    """An OpenAI-compatible chat server on 127.0.0.1."""

    def __init__(
        self,
        *,
        reply: str | Responder = "Hello from the stub. This is a test reply.",
        tokens_per_s: float = 500.0,
        first_token_delay_s: float = 0.0,
        flagged_words: tuple[str, ...] = ("attack",),
    ) -> None:
        self.reply = reply
        self.tokens_per_s = tokens_per_s
        self.first_token_delay_s = first_token_delay_s
        self.flagged_words = flagged_words
        self.faults: list[Fault] = []
        self.exchanges: list[Exchange] = []
        self.moderation_inputs: list[str] = []
        self.moderation_fails = 0  # answer this many moderation requests with 500
        self.moderation_faults: list[Fault] = []  # status faults only: rate_limit ... unauthorized
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""

    # -- life cycle -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_get("/v1/models", self._models)
        return app

    async def start(self) -> str:
        """Listen on a free port of 127.0.0.1; return the base URL (ending in /v1)."""
        self._runner = web.AppRunner(self.app(), shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [exchange.body for exchange in self.exchanges]

    # -- handlers ---------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub-model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "the body is not JSON", "invalid_request_error")
        exchange = Exchange(body=body, headers=dict(request.headers), received_at=time.monotonic())
        self.exchanges.append(exchange)
        messages = body.get("messages")
        if not isinstance(messages, list) or not body.get("model"):
            exchange.status = 400
            return _error(400, "model and messages are required", "invalid_request_error")
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None and fault.kind in (
            "rate_limit",
            "quota",
            "server_error",
            "unauthorized",
        ):
            exchange.status = _fault_status(fault)
            return _fault_response(fault, _presented_key(request))
        if fault is not None and fault.kind in ("html", "json_body", "no_chunks"):
            return _not_openai(fault)
        text = self.reply(messages) if callable(self.reply) else self.reply
        if not body.get("stream"):
            return web.json_response(_completion(body["model"], text))
        return await self._stream(request, body["model"], tokenize(text), fault, exchange)

    async def _stream(
        self,
        request: web.Request,
        model: str,
        tokens: list[str],
        fault: Fault | None,
        exchange: Exchange,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await _send(response, _chunk(model, {"role": "assistant", "content": ""}))
        started = time.monotonic() + self.first_token_delay_s
        interval = 1.0 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0
        for index, token in enumerate(tokens):
            if fault is not None and index == fault.after_tokens:
                return await self._misbehave(request, response, fault)
            wait = started + index * interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await _send(response, _chunk(model, {"content": token}))
            exchange.tokens.append(token)
            exchange.token_times.append(time.monotonic())
        if fault is not None:
            return await self._misbehave(request, response, fault)
        await _send(response, _chunk(model, {}, finish_reason="stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _misbehave(
        self, request: web.Request, response: web.StreamResponse, fault: Fault
    ) -> web.StreamResponse:
        if fault.kind == "stall":
            await self._closing.wait()
            return response
        if fault.kind == "disconnect":
            transport = request.transport
            if transport is not None:
                transport.abort()
            return response
        if fault.kind == "malformed":
            await response.write(b'data: {"id": "chatcmpl-stub", "choices": [{"delta": {"cont\n\n')
        elif fault.kind == "error_event":
            await _send(
                response, {"error": {"message": "the model is overloaded", "type": "server_error"}}
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _moderations(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.moderation_fails > 0:
            self.moderation_fails -= 1
            return _error(500, "moderation is down", "server_error")
        if self.moderation_faults:
            return _fault_response(self.moderation_faults.pop(0), _presented_key(request))
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else [str(item) for item in inputs or []]
        self.moderation_inputs.extend(texts)
        results = []
        for text in texts:
            flagged = any(word in text.lower() for word in self.flagged_words)
            categories = {name: flagged and name == "violence" for name in MODERATION_CATEGORIES}
            scores = {name: (0.97 if categories[name] else 0.001) for name in MODERATION_CATEGORIES}
            results.append(
                {
                    "flagged": flagged,
                    "categories": categories,
                    "category_scores": scores,
                    "category_applied_input_types": {
                        name: ["text"] for name in MODERATION_CATEGORIES
                    },
                }
            )
        return web.json_response(
            {
                "id": "modr-stub",
                "model": body.get("model", "omni-moderation-latest"),
                "results": results,
            }
        )


def _chunk(
    model: str, delta: dict[str, Any], *, finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
    }


async def _send(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(data).encode() + b"\n\n")


def _error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": code, "param": None}}, status=status
    )


def _not_openai(fault: Fault) -> web.Response:
    if fault.kind == "html":
        page = (
            "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body>\n"
            + ("<p>Please sign in to continue.</p>\n" * 40)
            + "</body></html>\n"
        )
        return web.Response(text=page, content_type="text/html")
    if fault.kind == "json_body":
        return web.json_response({"status": "ok", "version": "1.2.3"})
    return web.Response(text=": keep-alive\n\ndata: [DONE]\n\n", content_type="text/event-stream")


def _fault_status(fault: Fault) -> int:
    return {"rate_limit": 429, "quota": 429, "unauthorized": 401}.get(
        fault.kind, fault.status or 500
    )


def _presented_key(request: web.Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ")


def _fault_response(fault: Fault, api_key: str) -> web.Response:
    if fault.kind == "rate_limit":
        response = _error(429, "Rate limit reached; slow down", "requests", "rate_limit_exceeded")
        if fault.retry_after is not None:
            response.headers["Retry-After"] = fault.retry_after
        return response
    if fault.kind == "quota":
        return _error(
            429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota"
        )
    if fault.kind == "unauthorized":
        return _error(
            401,
            f"Incorrect API key provided: {api_key}",
            "invalid_request_error",
            "invalid_api_key",
        )
    return _error(fault.status or 500, "The server had an error", "server_error")
