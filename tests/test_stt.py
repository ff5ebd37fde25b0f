"""The speech-to-text seam: faster-whisper with the bundled tiny.en, and the OpenAI backend
against a real local HTTP server that speaks the transcription API (and transcribes with
faster-whisper, as a local whisper server does)."""

from __future__ import annotations

import io
import wave
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from lipcast.config import Secrets, Settings, parse_settings
from lipcast.wiring import build_stt
from pipeline.audio import AudioChunk, read_wav
from pipeline.errors import BackendError, ConfigError, InputError
from pipeline.services.stt.faster_whisper import FasterWhisperSTT
from pipeline.services.stt.openai import OpenAISTT
from pipeline.speech.wer import word_error_rate
from tests.conftest import ServeApp
from tests.voice_support import SENTENCES, speak

API_KEY = "sk-test-stt-0123456789SECRET"


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperSTT:
    return FasterWhisperSTT()


async def test_faster_whisper_transcribes_synthesised_speech(whisper: FasterWhisperSTT) -> None:
    pairs = []
    for sentence in SENTENCES[:3]:
        transcript = await whisper.transcribe(await speak(sentence), language="en")
        pairs.append((sentence, transcript.text))
        assert transcript.audio_s > 0.5
    assert word_error_rate(pairs) <= 0.2, pairs


async def test_faster_whisper_refuses_too_little_audio(whisper: FasterWhisperSTT) -> None:
    with pytest.raises(InputError, match="too little audio"):
        await whisper.transcribe(AudioChunk(samples=np.zeros(100, np.float32), sample_rate=16000))


async def test_faster_whisper_bad_model_folder_names_the_key(tmp_path: Any) -> None:
    stt = FasterWhisperSTT(model=str(tmp_path))
    try:
        with pytest.raises(ConfigError, match=r"\[stt.faster_whisper\] model"):
            await stt.warm_up()
    finally:
        await stt.aclose()


def test_build_stt_follows_bot_toml() -> None:
    settings = Settings.model_validate({"stt": {"backend": "openai"}})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_stt(settings, Secrets())
    local = Settings.model_validate(
        {"stt": {"backend": "openai", "openai": {"base_url": "http://127.0.0.1:9/v1"}}}
    )
    assert isinstance(build_stt(local, Secrets()), OpenAISTT)
    assert isinstance(build_stt(Settings(), Secrets()), FasterWhisperSTT)


class WhisperServer:
    """``POST /v1/audio/transcriptions`` as OpenAI answers it, transcribing with tiny.en."""

    def __init__(self, stt: FasterWhisperSTT) -> None:
        self.stt = stt
        self.requests: list[dict[str, Any]] = []
        self.status = 200

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        return app

    async def transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        data = upload.file.read()
        fields = {key: value for key, value in form.items() if key != "file"}
        self.requests.append(
            {"fields": fields, "auth": request.headers.get("Authorization"), "wav": data}
        )
        if self.status == 401:
            key = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"bad key {key}"}}, status=401)
        if self.status != 200:
            return web.json_response({"error": {"message": "no"}}, status=self.status)
        transcript = await self.stt.transcribe(read_wav(data), language=str(fields["language"]))
        return web.json_response({"text": transcript.text})


async def test_openai_backend_uploads_wav_and_returns_text(
    serve_app: ServeApp, whisper: FasterWhisperSTT
) -> None:
    server = WhisperServer(whisper)
    base = await serve_app(server.app()) + "/v1"
    stt = OpenAISTT(base_url=base, model="whisper-local", api_key=API_KEY, max_retries=0)
    try:
        transcript = await stt.transcribe(await speak(SENTENCES[0]), language="en")
    finally:
        await stt.aclose()
    assert word_error_rate([(SENTENCES[0], transcript.text)]) == 0.0
    sent = server.requests[0]
    assert sent["fields"] == {"model": "whisper-local", "response_format": "json", "language": "en"}
    assert sent["auth"] == f"Bearer {API_KEY}"
    with wave.open(io.BytesIO(sent["wav"])) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
    assert API_KEY not in repr(stt)


@pytest.mark.parametrize(
    ("status", "match", "transient"),
    [
        (401, "refused the API key", False),
        (404, r"check \[stt.openai\] model 'whisper-local'", False),
        (503, "failed", True),
    ],
)
async def test_openai_backend_errors_say_what_to_do(
    serve_app: ServeApp, whisper: FasterWhisperSTT, status: int, match: str, transient: bool
) -> None:
    server = WhisperServer(whisper)
    server.status = status
    base = await serve_app(server.app()) + "/v1"
    stt = OpenAISTT(base_url=base, model="whisper-local", api_key=API_KEY, max_retries=0)
    try:
        with pytest.raises(BackendError, match=match) as caught:
            await stt.transcribe(await speak("Hello."))
    finally:
        await stt.aclose()
    assert caught.value.transient is transient
    assert API_KEY not in str(caught.value)


async def test_openai_backend_unreachable_server(refused_url: str) -> None:
    stt = OpenAISTT(base_url=refused_url + "/v1", api_key=API_KEY, max_retries=0, timeout_s=2)
    try:
        with pytest.raises(
            BackendError, match=r"connection failed.*\[stt.openai\] base_url"
        ) as err:
            await stt.transcribe(await speak("Hello."))
    finally:
        await stt.aclose()
    assert err.value.transient


def test_voice_feature_is_built_from_voice_and_stt_sections() -> None:
    from lipcast.wiring import build_voice_feature

    settings = Settings.model_validate(
        {"voice": {"end_silence_ms": 700, "barge_in": "duck", "text_channel": "123456789"}}
    )
    feature = build_voice_feature(settings, Secrets())
    assert feature.options.segmenter.end_silence_ms == 700
    assert feature.options.barge_in == "duck"
    assert feature.options.text_channel == 123456789
    with pytest.raises(ConfigError, match=r"voice\.text_channel"):
        parse_settings({"voice": {"text_channel": "#general"}}, source="bot.toml")
