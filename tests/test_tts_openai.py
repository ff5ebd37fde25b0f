"""OpenAI backend against real local HTTP servers that speak the audio.speech protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import openai
import pytest
from aiohttp import web

from pipeline.audio import AudioChunk, concat
from pipeline.errors import BackendError, ConfigError, InputError
from pipeline.services.tts.base import Voice
from pipeline.services.tts.openai import OpenAITTS
from tests.conftest import ServeApp

API_KEY = "sk-test-0123456789abcdefSECRET"
ENGLISH = Voice(language="en")


def sine_pcm(seconds: float, rate: int = 24_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * 220 * t)
    return (wave * 32767).astype("<i2").tobytes()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def start(serve_app: ServeApp, handler: Handler) -> str:
    app = web.Application()
    app.router.add_post("/v1/audio/speech", handler)
    return await serve_app(app) + "/v1"


async def start_raw(answer: bytes) -> tuple[str, asyncio.Server]:
    """A TCP server that reads the request head, writes ``answer`` and hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/v1", server


def backend(base_url: str, **options: Any) -> OpenAITTS:
    options = {"api_key": API_KEY, "max_retries": 0, "timeout_s": 2.0, **options}
    return OpenAITTS(base_url=base_url, **options)


async def speak(
    tts: OpenAITTS, text: str = "Hello there.", voice: Voice = ENGLISH
) -> list[AudioChunk]:
    try:
        return [chunk async for chunk in tts.synthesize(text, voice)]
    finally:
        await tts.aclose()


async def failure(tts: OpenAITTS) -> BackendError:
    with pytest.raises(BackendError) as caught:
        await speak(tts)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(caught.value)
    return caught.value


def json_error(status: int, message: str, code: str | None = None) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        body = {"error": {"message": message, "type": "error", "code": code}}
        return web.json_response(body, status=status)

    return handler


class SpeechServer:
    """audio.speech returning PCM in odd-sized pieces; records what clients sent."""

    def __init__(self, pcm: bytes, piece: int = 1001) -> None:
        self.pcm = pcm
        self.piece = piece
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.release = asyncio.Event()  # the second half waits for it when hold_back is set
        self.hold_back = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await response.prepare(request)
        half = len(self.pcm) // 2 | 1  # odd: a sample straddles the pause
        for offset in range(0, len(self.pcm), self.piece):
            if self.hold_back and offset >= half:
                await self.release.wait()
            await response.write(self.pcm[offset : offset + self.piece])
        await response.write_eof()
        return response


async def test_streams_pcm_and_sends_the_documented_request(serve_app: ServeApp) -> None:
    pcm = sine_pcm(1.5)
    server = SpeechServer(pcm)
    url = await start(serve_app, server.handle)
    tts = backend(url, model="gpt-4o-mini-tts", voice="alloy")

    chunks = await speak(tts, "  Hello there, chat!  ", Voice(language="en", name="coral"))

    assert server.requests == [
        {
            "model": "gpt-4o-mini-tts",
            "voice": "coral",
            "input": "Hello there, chat!",
            "response_format": "pcm",
        }
    ]
    assert server.headers[0]["Authorization"] == f"Bearer {API_KEY}"
    audio = concat(chunks)
    assert audio.sample_rate == 24_000
    assert len(chunks) > 1
    assert np.array_equal(audio.samples, AudioChunk.from_pcm16(pcm, 24_000).samples)


async def test_first_chunk_arrives_before_the_body_ends(serve_app: ServeApp) -> None:
    server = SpeechServer(sine_pcm(1.0))
    server.hold_back = True
    tts = backend(await start(serve_app, server.handle))

    stream = tts.synthesize("Hello there.", ENGLISH)
    first = await anext(stream)
    assert not server.release.is_set()
    server.release.set()
    rest = [chunk async for chunk in stream]
    await tts.aclose()

    assert first.duration_s > 0
    assert concat([first, *rest]).duration_s == pytest.approx(1.0, abs=1e-4)


async def test_default_voice_and_speed(serve_app: ServeApp) -> None:
    server = SpeechServer(sine_pcm(0.2))
    tts = backend(await start(serve_app, server.handle), voice="nova")
    await speak(tts, voice=Voice(language="de", speed=1.25))
    assert server.requests[0]["voice"] == "nova"
    assert server.requests[0]["speed"] == 1.25


async def test_missing_key_is_refused_for_openai_itself() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAITTS(api_key=None)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAITTS(base_url="https://api.openai.com/v1/", api_key="")


async def test_missing_key_is_fine_for_a_local_server(serve_app: ServeApp) -> None:
    server = SpeechServer(sine_pcm(0.2))
    tts = OpenAITTS(base_url=await start(serve_app, server.handle), api_key=None, max_retries=0)
    chunks = await speak(tts)
    assert concat(chunks).duration_s == pytest.approx(0.2, abs=1e-3)
    assert server.headers[0]["Authorization"].startswith("Bearer ")


def test_repr_never_shows_the_key() -> None:
    tts = OpenAITTS(api_key=API_KEY)
    assert API_KEY not in repr(tts)
    assert API_KEY not in str(tts)


async def test_rejected_key_is_permanent_and_never_echoed(serve_app: ServeApp) -> None:
    handler = json_error(401, f"Incorrect API key provided: {API_KEY}.", "invalid_api_key")
    error = await failure(backend(await start(serve_app, handler)))
    assert not error.transient
    assert "check OPENAI_API_KEY" in str(error)
    assert "401" in str(error)


async def test_rate_limit_is_transient(serve_app: ServeApp) -> None:
    handler = json_error(429, "Rate limit reached for requests", "rate_limit_exceeded")
    error = await failure(backend(await start(serve_app, handler)))
    assert error.transient
    assert "Rate limit reached" in str(error)


async def test_exhausted_quota_is_permanent(serve_app: ServeApp) -> None:
    handler = json_error(429, "You exceeded your current quota.", "insufficient_quota")
    error = await failure(backend(await start(serve_app, handler)))
    assert not error.transient
    assert "billing" in str(error)


async def test_server_error_is_transient(serve_app: ServeApp) -> None:
    error = await failure(
        backend(await start(serve_app, json_error(500, "The server had an error")))
    )
    assert error.transient
    assert "HTTP 500" in str(error)


async def test_bad_request_is_permanent_and_quotes_the_server(serve_app: ServeApp) -> None:
    handler = json_error(400, "Invalid voice 'robot'.", "invalid_value")
    error = await failure(backend(await start(serve_app, handler)))
    assert not error.transient
    assert "Invalid voice 'robot'" in str(error)
    assert "voice 'alloy'" in str(error)


async def test_server_that_stalls_before_answering_times_out(serve_app: ServeApp) -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response()

    error = await failure(backend(await start(serve_app, stall), timeout_s=0.3))
    assert error.transient
    assert "timeout" in str(error)


async def test_server_that_stalls_mid_stream_times_out(serve_app: ServeApp) -> None:
    server = SpeechServer(sine_pcm(1.0))
    server.hold_back = True  # never released
    tts = backend(await start(serve_app, server.handle), timeout_s=0.3)

    received = []
    with pytest.raises(BackendError) as caught:
        async for chunk in tts.synthesize("Hello there.", ENGLISH):
            received.append(chunk)
    await tts.aclose()
    assert received  # what came before the stall was delivered
    assert caught.value.transient
    assert "timeout" in str(caught.value)
    # the HTTP library's own error is raised as openai's, as openai does for event streams
    assert isinstance(caught.value.__cause__, openai.APITimeoutError)


async def test_server_that_hangs_up_before_answering() -> None:
    url, server = await start_raw(b"")
    async with server:
        error = await failure(backend(url))
    assert error.transient
    assert "connection failed" in str(error)


async def test_server_that_hangs_up_mid_body() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: audio/pcm\r\nContent-Length: 96000\r\n\r\n"
    url, server = await start_raw(head + sine_pcm(0.1))
    async with server:
        error = await failure(backend(url))
    assert error.transient
    assert "broke off" in str(error)
    assert isinstance(error.__cause__, openai.APIConnectionError)
    assert "peer closed connection" in str(error)  # the transport's own words, as the reason


async def test_html_instead_of_audio_points_at_base_url(serve_app: ServeApp) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>Welcome</body></html>", content_type="text/html")

    error = await failure(backend(await start(serve_app, page)))
    assert not error.transient
    assert "text/html" in str(error)
    assert "base_url" in str(error)


async def test_wav_file_instead_of_raw_pcm_is_refused(serve_app: ServeApp) -> None:
    async def wav(request: web.Request) -> web.Response:
        body = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(200)
        return web.Response(body=body, content_type="application/octet-stream")

    error = await failure(backend(await start(serve_app, wav)))
    assert "instead of raw PCM" in str(error)


async def test_empty_body_is_a_transient_error(serve_app: ServeApp) -> None:
    async def empty(request: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="audio/pcm")

    error = await failure(backend(await start(serve_app, empty)))
    assert error.transient
    assert "no audio" in str(error)


async def test_connection_refused_is_transient_and_names_the_url(refused_url: str) -> None:
    error = await failure(backend(refused_url + "/v1"))
    assert error.transient
    assert refused_url in str(error)


async def test_text_checks_happen_before_any_request() -> None:
    tts = backend("http://127.0.0.1:9/v1")
    with pytest.raises(InputError):
        await speak(tts, "   ")
    with pytest.raises(InputError, match="too long"):
        await speak(tts, "word " * 1000)


async def test_client_is_reused_and_closed(serve_app: ServeApp) -> None:
    server = SpeechServer(sine_pcm(0.1))
    tts = backend(await start(serve_app, server.handle))
    for _ in range(3):
        assert [chunk async for chunk in tts.synthesize("Hi.", ENGLISH)]
    await tts.aclose()
    await tts.aclose()  # twice is harmless
    assert len(server.requests) == 3


async def test_concurrent_first_requests_share_one_client(serve_app: ServeApp) -> None:
    server = SpeechServer(sine_pcm(0.3))
    tts = backend(await start(serve_app, server.handle))
    results = await asyncio.gather(*(speak_without_closing(tts) for _ in range(4)))
    await tts.aclose()
    assert [concat(chunks).duration_s for chunks in results] == [pytest.approx(0.3)] * 4


async def speak_without_closing(tts: OpenAITTS) -> list[AudioChunk]:
    return [chunk async for chunk in tts.synthesize("Hi.", ENGLISH)]
