"""Silero backend against real local HTTP servers that speak silero-api-server's protocol."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from pipeline.audio import AudioChunk, write_wav
from pipeline.errors import BackendError, InputError
from pipeline.services.tts.base import Voice
from pipeline.services.tts.silero import SileroTTS
from tests.conftest import ServeApp

ENGLISH = Voice(language="en")
SPEAKERS = ["en_0", "en_117", "eva_k", "fr_0"]


def sine_wav(seconds: float, rate: int = 48_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return write_wav(AudioChunk(samples=samples, sample_rate=rate))


class SileroServer:
    """``/tts/generate`` and ``/tts/speakers`` as silero-api-server answers them."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_post("/tts/generate", self.generate)
        self.app.router.add_get("/tts/speakers", self.speakers)

    async def generate(self, request: web.Request) -> web.Response:
        voice = await request.json()
        self.requests.append(voice)
        self.headers.append(dict(request.headers))
        if voice["speaker"] not in SPEAKERS:
            # silero-api-server *returns* an HTTPException, which FastAPI sends as a 200 JSON body.
            return web.json_response({"status_code": 500, "detail": voice["speaker"]})
        return web.Response(body=sine_wav(0.75), content_type="audio/wav")

    async def speakers(self, request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        listing = [
            {"name": name, "voice_id": name, "preview_url": f"{base}/samples/{name}.wav"}
            for name in SPEAKERS
        ]
        return web.json_response(listing)


async def start(serve_app: ServeApp, **routes: Any) -> str:
    """A server with only the given handlers: generate=..., speakers=..."""
    app = web.Application()
    if "generate" in routes:
        app.router.add_post("/tts/generate", routes["generate"])
    if "speakers" in routes:
        app.router.add_get("/tts/speakers", routes["speakers"])
    return await serve_app(app)


async def speak(
    tts: SileroTTS, voice: Voice = ENGLISH, text: str = "Hello there."
) -> list[AudioChunk]:
    try:
        return [chunk async for chunk in tts.synthesize(text, voice)]
    finally:
        await tts.aclose()


async def failure(tts: SileroTTS) -> BackendError:
    with pytest.raises(BackendError) as caught:
        await speak(tts)
    return caught.value


async def test_speaks_through_the_server_protocol(serve_app: ServeApp) -> None:
    server = SileroServer()
    tts = SileroTTS(url=await serve_app(server.app) + "/", timeout_s=2.0, token="t0ken")

    chunks = await speak(tts, Voice(language="en", name="en_117"), "  Hi *chat*!  ")

    assert server.requests == [{"speaker": "en_117", "text": "Hi *chat*!"}]
    assert server.headers[0]["Content-Type"].startswith("application/json")
    assert server.headers[0]["Authorization"] == "Bearer t0ken"
    assert len(chunks) == 1
    assert chunks[0].sample_rate == 48_000
    assert chunks[0].duration_s == pytest.approx(0.75)
    assert float(np.max(np.abs(chunks[0].samples))) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(("language", "speaker"), [("en", "en_0"), ("DE", "eva_k"), ("fr", "fr_0")])
async def test_default_speaker_per_language(
    serve_app: ServeApp, language: str, speaker: str
) -> None:
    server = SileroServer()
    chunks = await speak(SileroTTS(url=await serve_app(server.app)), Voice(language=language))
    assert server.requests[0]["speaker"] == speaker
    assert len(chunks) == 1


async def test_language_without_a_default_speaker_says_what_to_set() -> None:
    with pytest.raises(BackendError, match=r"language 'it'.*\[voice\] silero.*/tts/speakers"):
        await speak(SileroTTS(url="http://127.0.0.1:9"), Voice(language="it"))


async def test_lists_speakers(serve_app: ServeApp) -> None:
    tts = SileroTTS(url=await serve_app(SileroServer().app))
    try:
        assert await tts.speakers() == SPEAKERS
    finally:
        await tts.aclose()


@pytest.mark.parametrize(
    "listing",
    [
        ["en_0", "en_1"],
        [{"speaker": "en_0"}, {"speaker": "en_1"}],
        [{"name": "en_0"}, {"name": "en_1", "language": "en"}],
        {"speakers": ["en_0", "en_1"]},
    ],
)
async def test_speaker_lists_in_other_shapes(serve_app: ServeApp, listing: object) -> None:
    async def speakers(request: web.Request) -> web.Response:
        return web.json_response(listing)

    tts = SileroTTS(url=await start(serve_app, speakers=speakers))
    try:
        assert await tts.speakers() == ["en_0", "en_1"]
    finally:
        await tts.aclose()


@pytest.mark.parametrize(
    ("body", "expected"), [(b"<html>hi</html>", "no JSON"), (b'{"a": 1}', "unknown form")]
)
async def test_unreadable_speaker_lists(serve_app: ServeApp, body: bytes, expected: str) -> None:
    async def speakers(request: web.Request) -> web.Response:
        return web.Response(body=body)

    tts = SileroTTS(url=await start(serve_app, speakers=speakers))
    try:
        with pytest.raises(BackendError, match=expected):
            await tts.speakers()
    finally:
        await tts.aclose()


async def test_unknown_speaker_reported_as_200_json_is_an_error(serve_app: ServeApp) -> None:
    tts = SileroTTS(url=await serve_app(SileroServer().app))
    with pytest.raises(BackendError, match=r"no WAV audio for speaker 'robot'.*detail") as caught:
        await speak(tts, Voice(language="en", name="robot"))
    assert not caught.value.transient


async def test_server_error_is_transient_with_status_and_excerpt(serve_app: ServeApp) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(
            status=500, text="Internal Server Error: CUDA out of memory " + "x" * 500
        )

    error = await failure(SileroTTS(url=await start(serve_app, generate=broken)))
    assert error.transient
    assert "HTTP 500" in str(error)
    assert "CUDA out of memory" in str(error)
    assert len(str(error)) < 400


async def test_client_error_is_permanent(serve_app: ServeApp) -> None:
    async def unprocessable(request: web.Request) -> web.Response:
        return web.json_response({"detail": [{"msg": "field required"}]}, status=422)

    error = await failure(SileroTTS(url=await start(serve_app, generate=unprocessable)))
    assert not error.transient
    assert "HTTP 422" in str(error)
    assert "field required" in str(error)


async def test_wrong_url_path_is_a_404(serve_app: ServeApp) -> None:
    error = await failure(SileroTTS(url=await start(serve_app)))
    assert "HTTP 404" in str(error)
    assert "/tts/generate" in str(error)
    assert "[tts.silero] url" in str(error)


async def test_server_that_stalls_times_out(serve_app: ServeApp) -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response()

    error = await failure(SileroTTS(url=await start(serve_app, generate=stall), timeout_s=0.3))
    assert error.transient
    assert "within 0.3 s" in str(error)


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # hangs up before answering
        b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: 90000\r\n\r\nRIFF",
    ],
)
async def test_server_that_hangs_up(answer: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        error = await failure(SileroTTS(url=f"http://127.0.0.1:{port}"))
    assert error.transient
    assert "broke off" in str(error)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\x00\x01garbage" * 20, "no WAV audio"),
        (b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", "broken WAV"),
        (write_wav(AudioChunk(samples=np.zeros(0, np.float32), sample_rate=24_000)), "empty WAV"),
    ],
)
async def test_garbage_bodies(serve_app: ServeApp, body: bytes, expected: str) -> None:
    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="audio/wav")

    error = await failure(SileroTTS(url=await start(serve_app, generate=garbage)))
    assert expected in str(error)


async def test_connection_refused_is_transient_and_names_the_url(refused_url: str) -> None:
    error = await failure(SileroTTS(url=refused_url))
    assert error.transient
    assert refused_url in str(error)
    assert "[tts.silero] url" in str(error)


async def test_empty_text_is_an_input_error() -> None:
    with pytest.raises(InputError):
        await speak(SileroTTS(url="http://127.0.0.1:9"), text=" \n ")


async def test_one_session_reused_then_closed(serve_app: ServeApp) -> None:
    server = SileroServer()
    tts = SileroTTS(url=await serve_app(server.app))
    for _ in range(3):
        assert [chunk async for chunk in tts.synthesize("Hi.", ENGLISH)]
    assert await tts.speakers() == SPEAKERS
    await tts.aclose()
    await tts.aclose()
    assert len(server.requests) == 3
