"""A stand-in language model for the benchmarks: the smallest OpenAI-compatible chat server.

It listens on 127.0.0.1 and streams each reply as server-sent events at a fixed token rate
(about four characters a token), so the real openai client, splitter and pipeline run against
it exactly as against a real model. The reply is fixed, or made from the request's messages
(``reply`` as a function), so many simultaneous conversations each get their own answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

Messages = list[dict[str, Any]]
_TOKEN = re.compile(r"\s?\w{1,6}|\s?[^\w\s]|\s+")


def tokenize(text: str) -> list[str]:
    """Model-like tokens of ``text`` (about four characters each, spaces leading)."""
    tokens: list[str] = _TOKEN.findall(text)
    assert "".join(tokens) == text
    return tokens


def last_user_text(messages: Messages) -> str:
    """The text of the last user message in a chat request."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


class StandInChatServer:
    """Streams ``reply`` (or ``reply(messages)``) at ``tokens_per_s``."""

    def __init__(
        self,
        reply: str | Callable[[Messages], str],
        *,
        tokens_per_s: float,
        first_token_s: float = 0.0,
        split: Callable[[str], list[str]] = tokenize,  # how a reply is cut into tokens
    ) -> None:
        self.reply = reply
        self.split = split
        self.interval = 1.0 / tokens_per_s
        self.first_token_s = first_token_s
        self.requests = 0
        self.sent_at: list[float] = []  # Unix time each token of the latest reply was written
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Start listening; returns the ``base_url`` for ``[llm]``."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests += 1
        text = self.reply if isinstance(self.reply, str) else self.reply(body["messages"])
        model = str(body.get("model", "bench"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        started = time.monotonic() + self.first_token_s
        self.sent_at = []
        for index, token in enumerate(self.split(text)):
            delay = started + index * self.interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await response.write(_event(model, {"content": token}))
            self.sent_at.append(time.time())
        await response.write(_event(model, {}, finish="stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _event(model: str, delta: dict[str, str], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"
