"""A Silero TTS HTTP server (the protocol of silero-api-server): one WAV per request.

``POST {url}/tts/generate`` with ``{"speaker": ..., "text": ...}`` answers with a WAV file;
``GET {url}/tts/speakers`` lists the voices. The server renders the whole text before it
answers, so each request yields a single chunk.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any, ClassVar

import aiohttp

from pipeline.audio import AudioChunk, read_wav
from pipeline.errors import BackendError, InputError
from pipeline.services.tts.base import TTS, Voice

# Speakers of Silero's published models, by persona language.
DEFAULT_SPEAKERS = {
    "en": "en_0",
    "de": "eva_k",
    "fr": "fr_0",
    "es": "es_0",
    "ru": "xenia",
    "uk": "mykyta",
    "uz": "dilnavoz",
    "tt": "dilyara",
    "xal": "erdni",
}
_SPEAKER_KEYS = ("voice_id", "speaker", "name", "id")


class SileroTTS(TTS):
    """Speech from a Silero TTS server; ``Voice.name`` is a speaker such as ``"en_0"``."""

    name: ClassVar[str] = "silero"

    def __init__(
        self,
        *,
        url: str = "http://127.0.0.1:8020",
        timeout_s: float = 20.0,
        token: str | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._token = token
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"SileroTTS(url={self._url!r}, timeout_s={self._timeout_s})"

    async def synthesize(self, text: str, voice: Voice) -> AsyncGenerator[AudioChunk, None]:
        """Speak ``text`` with the persona's speaker (or the language's default speaker)."""
        cleaned = text.strip()
        if not cleaned:
            raise InputError("nothing to say: the text is empty")
        speaker = voice.name or DEFAULT_SPEAKERS.get(voice.language.lower())
        if not speaker:
            raise BackendError(
                f"no default Silero speaker for language {voice.language!r}: set the persona's "
                f"[voice] silero to one of the server's speakers (GET {self._url}/tts/speakers)"
            )
        body = await self._request(
            "POST", "/tts/generate", json={"speaker": speaker, "text": cleaned}
        )
        yield self._decode_wav(body, speaker)

    async def speakers(self) -> list[str]:
        """The speaker names the server offers."""
        body = await self._request("GET", "/tts/speakers")
        try:
            listing = json.loads(body)
        except ValueError as err:
            raise BackendError(
                f"the Silero TTS server at {self._url} sent no JSON speaker list: {_excerpt(body)}"
            ) from err
        names = _speaker_names(listing)
        if names is None:
            raise BackendError(
                f"the Silero TTS server at {self._url} sent a speaker list of an unknown form: "
                f"{_excerpt(body)}"
            )
        return names

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, **kwargs: Any) -> bytes:
        """The body of a 200 answer, or a BackendError that says what went wrong."""
        url = f"{self._url}{path}"
        try:
            async with self._get_session().request(method, url, **kwargs) as response:
                body = await response.read()
                status = response.status
        except TimeoutError as err:
            raise BackendError(
                f"the Silero TTS server at {url} did not answer within {self._timeout_s:g} s",
                transient=True,
            ) from err
        except aiohttp.ClientConnectorError as err:
            raise BackendError(
                f"cannot reach the Silero TTS server at {self._url} ({err.os_error}); is it "
                "running? Check [tts.silero] url",
                transient=True,
            ) from err
        except aiohttp.ClientError as err:
            raise BackendError(
                f"the Silero TTS server at {url} broke off the answer: {err or type(err).__name__}",
                transient=True,
            ) from err
        if status != 200:
            hint = "; is [tts.silero] url the server's base address?" if status == 404 else ""
            raise BackendError(
                f"the Silero TTS server at {url} answered HTTP {status}: {_excerpt(body)}{hint}",
                transient=status >= 500 or status in (408, 429),
            )
        return body

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s), headers=headers
            )
        return self._session

    def _decode_wav(self, body: bytes, speaker: str) -> AudioChunk:
        if not (body[:4] == b"RIFF" and body[8:12] == b"WAVE"):
            # silero-api-server reports a failed synthesis as a 200 with a JSON error object.
            raise BackendError(
                f"the Silero TTS server at {self._url} sent no WAV audio for speaker "
                f"{speaker!r}: {_excerpt(body)} (is the speaker one the server offers?)"
            )
        try:
            audio = read_wav(body)
        # The wave module raises a bare RuntimeError for a chunk size beyond the data.
        except (InputError, RuntimeError) as err:
            raise BackendError(
                f"the Silero TTS server at {self._url} sent a broken WAV file "
                f"({err or 'a chunk runs past the end of the data'})"
            ) from err
        if len(audio.samples) == 0:
            raise BackendError(f"the Silero TTS server at {self._url} sent an empty WAV file")
        return audio


def _speaker_names(listing: object) -> list[str] | None:
    """Names from a list of strings or of objects, or from {"speakers": [...]}; else None."""
    if isinstance(listing, dict):
        listing = listing.get("speakers", listing.get("voices"))
    if not isinstance(listing, list):
        return None
    names = []
    for entry in listing:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, dict):
            name = next((entry[key] for key in _SPEAKER_KEYS if entry.get(key)), None)
            if name is None:
                return None
            names.append(str(name))
        else:
            return None
    return names


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = " ".join(body[: limit * 4].decode("utf-8", errors="replace").split())
    if not text:
        return "(empty body)"
    return text if len(text) <= limit else text[:limit] + "..."
