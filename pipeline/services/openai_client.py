"""One way to reach OpenAI, or a server speaking its API, for every backend that does.

The language model (:mod:`pipeline.services.llm`), OpenAI text-to-speech
(:mod:`pipeline.services.tts.openai`) and moderation (:mod:`pipeline.conversation.safety`) each
hold an :class:`OpenAIEndpoint`, which gives them the same three things:

* **the API-key rule**: OpenAI itself (host ``api.openai.com``) needs ``OPENAI_API_KEY``, and a
  missing one is a :class:`~pipeline.errors.ConfigError` at start-up; any other server (Ollama,
  LM Studio, vLLM, llama.cpp) gets a placeholder key, which such servers ignore;
* **one** ``AsyncOpenAI`` **client**, made on first use, with ``openai`` imported and the client
  built off the event loop (together they take most of a second);
* **errors that say what to do**: the ``openai`` package's exceptions become
  :class:`~pipeline.errors.BackendError`, ``transient`` where trying again can help (a rate
  limit, a 5xx, a timeout, a dropped connection) and permanent where it cannot (a refused key, a
  used-up quota, a bad request). No message ever contains the API key.

Only the package's public exception classes are named here, never those of the HTTP library it
is built on (``httpx2`` in openai 3, ``httpx`` before). openai turns that library's
errors into its own while it reads an event stream, but not while a caller reads a raw response
body; :meth:`OpenAIEndpoint.iter_body` does it there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from openai import APIStatusError, AsyncAPIResponse, AsyncOpenAI

OPENAI_HOST = "api.openai.com"
DEFAULT_BASE_URL = f"https://{OPENAI_HOST}/v1"
PLACEHOLDER_KEY = "not-needed"  # local compatible servers ignore the key; the client wants one
# Statuses worth another try: timeouts, conflicts, rate limits and the gateways' 5xx.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
_MAX_CONNECT_S = 5.0  # a server that takes longer to accept a connection is down
_MAX_DETAIL_CHARS = 200


def needs_api_key(base_url: str) -> bool:
    """True when ``base_url`` is OpenAI itself, which refuses requests without a key."""
    return urlsplit(base_url.strip()).hostname == OPENAI_HOST


class OpenAIEndpoint:
    """A server speaking the OpenAI API, as one backend uses it: key, client and errors.

    ``label`` names the backend in messages ("the language model"); the ``*_key`` arguments
    name the settings a message tells the user to check, e.g. ``"[llm] base_url"``, and
    ``needed_by`` the setting that asked for OpenAI, e.g. ``'[llm] backend = "openai"'``.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        max_retries: int,
        label: str,
        needed_by: str,
        base_url_key: str,
        timeout_key: str,
    ) -> None:
        if not api_key:
            if needs_api_key(base_url):
                raise ConfigError(
                    f"{needed_by} needs an API key: set OPENAI_API_KEY in the environment or in "
                    f".env (never in bot.toml), or point {base_url_key} at a local "
                    "OpenAI-compatible server such as http://127.0.0.1:11434/v1 (Ollama)"
                )
            api_key = PLACEHOLDER_KEY
        self.base_url = base_url.strip().rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.where = f"{label} at {self.base_url}"
        self._api_key = api_key
        self._base_url_key = base_url_key
        self._timeout_key = timeout_key
        self._client: AsyncOpenAI | None = None
        self._client_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"OpenAIEndpoint(base_url={self.base_url!r}, timeout_s={self.timeout_s})"

    async def client(self) -> AsyncOpenAI:
        """The client, made on the first call; concurrent first calls share one."""
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    # Importing openai and loading the TLS certificates take most of a second.
                    self._client = await asyncio.to_thread(self._build_client)
        return self._client

    def _build_client(self) -> AsyncOpenAI:
        import openai  # in a worker thread: see client()

        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            # read: the longest silence allowed, before the first byte or between two
            timeout=openai.Timeout(self.timeout_s, connect=min(self.timeout_s, _MAX_CONNECT_S)),
            max_retries=self.max_retries,
        )

    async def aclose(self) -> None:
        """Close the client's connections; the next request makes a new client."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def iter_body(self, response: AsyncAPIResponse[Any]) -> AsyncIterator[bytes]:
        """The body of a streamed response, as it arrives.

        A read that fails (the server hangs up, or is silent for longer than the timeout)
        raises openai's own ``APIConnectionError`` or ``APITimeoutError``, as openai does for
        event streams, so a caller catches the package's public exceptions only.
        """
        import openai

        body = response.iter_bytes()
        while True:
            try:
                data = await anext(body)
            except StopAsyncIteration:
                return
            except openai.OpenAIError:
                raise
            except Exception as err:  # the HTTP library's own error (httpx or httpx2)
                if _is_timeout(err):
                    raise openai.APITimeoutError(request=response.http_request) from err
                raise openai.APIConnectionError(request=response.http_request) from err
            yield data

    def retry_after(self, err: Exception) -> float | None:
        """Seconds the server asked to wait (``Retry-After`` or ``retry-after-ms``) in the
        response that ``err`` carries, or None; read as the ``openai`` package reads them."""
        response = getattr(err, "response", None)
        headers = getattr(response, "headers", None)
        if self._client is None or headers is None:
            return None
        # The package's own parser (it honours the header for its own retries, which are
        # off here so that a partial reply is never repeated): seconds, milliseconds, dates.
        return self._client._parse_retry_after_header(headers)

    def error(
        self,
        err: Exception,
        *,
        not_found: str,
        rejected: str,
        answering: bool = False,
        partial: bool = False,
    ) -> BackendError:
        """``err`` from the ``openai`` package, as a :class:`BackendError` that says what to do.

        ``not_found`` and ``rejected`` finish the message of a 404 and of another 4xx: what
        to check, e.g. ``"check [llm] model 'x' and base_url"``. ``answering``: the server had
        begun its answer; ``partial``: part of it was already handed on.
        """
        import openai

        where = self.where
        message: str
        transient = True
        if isinstance(err, openai.APITimeoutError):
            message = f"{where} sent nothing for {self.timeout_s:g} s ({self._timeout_key})"
        elif isinstance(err, openai.APIConnectionError):
            cause = err.__cause__ or err
            reason = str(cause) or type(cause).__name__
            if answering:
                message = f"{where} broke off while answering ({reason})"
            else:
                message = (
                    f"{where}: connection failed ({reason}); is {self._base_url_key} right and "
                    "the server up?"
                )
        elif isinstance(err, openai.APIStatusError):
            message, transient = self._status_error(err, not_found=not_found, rejected=rejected)
        elif isinstance(err, openai.APIError):  # an error event in a stream, a malformed answer
            message = f"{where} reported an error: {err.message}"
        else:
            message, transient = f"{where} failed: {type(err).__name__}: {err}", False
        if partial:
            message += "; the answer was cut off"
        return BackendError(self.redact(message), transient=transient)

    def _status_error(
        self, err: APIStatusError, *, not_found: str, rejected: str
    ) -> tuple[str, bool]:
        """The message for an HTTP error status, and whether trying again can help."""
        status, where = err.status_code, self.where
        detail = _server_message(err.body)
        said = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
        if status in (401, 403):
            return f"{where} refused the API key ({said}): check OPENAI_API_KEY", False
        if status == 429 and _error_code(err.body) == "insufficient_quota":
            return f"{where}: the account's quota is used up ({said}); check billing", False
        if status == 429:
            return f"{where} is rate limiting ({said})", True
        if status in RETRY_STATUSES or status >= 500:
            return f"{where} failed ({said})", True
        if status == 404:
            return f"{where} has no such model or endpoint ({said}); {not_found}", False
        return f"{where} rejected the request ({said}); {rejected}", False

    def redact(self, text: str) -> str:
        """``text`` with the API key, should a server or library have quoted it, blotted out."""
        if self._api_key != PLACEHOLDER_KEY:
            text = text.replace(self._api_key, "***")
        return text


def _is_timeout(err: BaseException) -> bool:
    # httpx's and httpx2's timeouts derive from their own TimeoutException, not TimeoutError.
    return isinstance(err, TimeoutError) or any(
        cls.__name__ == "TimeoutException" for cls in type(err).__mro__
    )


def _error_code(body: object) -> str | None:
    """The ``code`` (or ``type``) of an OpenAI error body, e.g. ``"insufficient_quota"``."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            code = inner.get("code") or inner.get("type")
            return str(code) if code else None
    return None


def _server_message(body: object) -> str:
    """The server's own words in an error body, on one line and short; "" when there are none."""
    message: object = body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        message = message or body.get("detail")  # FastAPI-style servers
    if not message:
        return ""
    text = " ".join(str(message).split())
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[: _MAX_DETAIL_CHARS - 3] + "..."
    return text
