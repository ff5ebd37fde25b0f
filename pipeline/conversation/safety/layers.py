"""Moderation layers: checks a streamer turns on, run after the local matcher.

A layer has a ``name`` (shown to the moderators when it blocks something) and an async
``check`` that returns a :class:`~.verdict.Verdict`. The OpenAI moderation endpoint is one
(:class:`OpenAIModeration`); the Twitch adapter's AutoMod check is another, plugged in by the
platform wiring. A layer that cannot be reached raises :class:`~pipeline.errors.BackendError`
(or ``TimeoutError``); the guard then blocks or allows the text as ``fail_closed`` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pipeline.conversation.safety.verdict import ALLOWED, Verdict
from pipeline.services.openai_client import OpenAIEndpoint


@runtime_checkable
class ModerationLayer(Protocol):
    """One moderation service: a name for the moderators' log and an async check."""

    name: str

    async def check(self, text: str) -> Verdict:
        """``ALLOWED``, or a Verdict saying why ``text`` may not go on air."""
        ...

    async def aclose(self) -> None:
        """Release what the layer holds (connections)."""
        ...


@dataclass(frozen=True, kw_only=True)
class ModerationResult:
    flagged: bool
    categories: tuple[str, ...] = ()


class OpenAIModeration:
    """The moderation endpoint of OpenAI (or a compatible server), through the openai package."""

    name = "openai_moderation"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str = "omni-moderation-latest",
        timeout_s: float = 5.0,
    ) -> None:
        self._endpoint = OpenAIEndpoint(
            base_url=base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=1,
            label="moderation",
            needed_by="[safety] moderation = true",
            base_url_key="[safety] moderation_base_url",
            timeout_key="[safety] moderation_timeout_s",
        )
        self._model = model

    def __repr__(self) -> str:
        return f"OpenAIModeration(base_url={self._endpoint.base_url!r}, model={self._model!r})"

    async def classify(self, text: str) -> ModerationResult:
        """The endpoint's answer for ``text``: flagged or not, and in which categories."""
        client = await self._endpoint.client()
        import openai  # loaded by client()

        try:
            response = await client.moderations.create(input=text, model=self._model)
        except openai.OpenAIError as err:
            raise self._endpoint.error(
                err,
                not_found=(
                    f"check [safety] moderation_model {self._model!r} and moderation_base_url "
                    "(the server needs a moderations endpoint)"
                ),
                rejected=f"check [safety] moderation_model {self._model!r}",
            ) from err
        flagged = False
        categories: list[str] = []
        for result in response.results:
            if result.flagged:
                flagged = True
                raw = result.categories.model_dump(by_alias=True)
                categories.extend(name for name, value in raw.items() if value)
        return ModerationResult(flagged=flagged, categories=tuple(sorted(set(categories))))

    async def check(self, text: str) -> Verdict:
        """Blocked when the endpoint flags ``text`` (the categories are the detail)."""
        result = await self.classify(text)
        if result.flagged:
            return Verdict(ok=False, reason="moderation", detail=", ".join(result.categories))
        return ALLOWED

    async def aclose(self) -> None:
        await self._endpoint.aclose()
