"""Every on-air check in one place: :class:`SafetyGuard`, configured once per persona and
channel, and the moderators' log it feeds."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.conversation.safety.folding import fold, words
from pipeline.conversation.safety.layers import ModerationLayer
from pipeline.conversation.safety.lexicon import DEFAULT_LANGUAGES, default_phrases
from pipeline.conversation.safety.matcher import PhraseMatcher
from pipeline.conversation.safety.secrets import SecretGuard
from pipeline.conversation.safety.verdict import ALLOWED, Verdict
from pipeline.errors import BackendError

log = logging.getLogger(__name__)
moderation_log = logging.getLogger("lipcast.moderation")


def blocked_phrases(
    *,
    phrases: Iterable[str] = (),
    default_lists: Sequence[str] = DEFAULT_LANGUAGES,
    unblocked: Iterable[str] = (),
) -> list[str]:
    """The default list of ``default_lists`` less ``unblocked`` entries, and ``phrases``."""
    removed = {_key(entry) for entry in unblocked}
    defaults = [
        entry
        for entry in default_phrases(tuple(dict.fromkeys(default_lists)))
        if _key(entry) not in removed
    ]
    return [*defaults, *phrases]


def _key(entry: str) -> str:
    return " ".join(word.plain for word in words(fold(entry.strip("* "))))


@dataclass(kw_only=True)
class SafetyGuard:
    """Blocked phrases, secrets and the moderation layers, in that order."""

    phrases: PhraseMatcher
    secrets: SecretGuard = field(default_factory=lambda: SecretGuard(()))
    layers: tuple[ModerationLayer, ...] = ()  # run on viewers' messages
    reply_layers: tuple[ModerationLayer, ...] = ()  # run on each sentence of a reply
    fail_closed: bool = True  # a layer that cannot be reached blocks the text
    context_chars: int = 200  # how much of the reply so far a sentence is checked with

    @classmethod
    def build(
        cls,
        *,
        phrases: Sequence[str],
        secrets: Iterable[str] = (),
        moderator: ModerationLayer | None = None,
        moderate_replies: bool = False,
        fail_closed: bool = True,
        default_lists: Sequence[str] = DEFAULT_LANGUAGES,
        unblocked: Iterable[str] = (),
        allowed_words: Iterable[str] = (),
        private: Iterable[str] = (),
        layers: Sequence[ModerationLayer] = (),
        reply_layers: Sequence[ModerationLayer] = (),
    ) -> SafetyGuard:
        """A guard for ``phrases`` on top of the default list of ``default_lists`` (less the
        ``unblocked`` entries), never blocking ``allowed_words``; ``secrets`` and ``private``
        details (e-mail addresses, names, addresses) are never said. ``moderator`` is one more
        layer on viewers' messages (and on replies with ``moderate_replies``)."""
        private = list(private)
        message_layers = [*layers]
        sentence_layers = [*reply_layers]
        if moderator is not None:
            message_layers.append(moderator)
            if moderate_replies:
                sentence_layers.append(moderator)
        return cls(
            phrases=PhraseMatcher(
                blocked_phrases(
                    phrases=[*phrases, *private],
                    default_lists=default_lists,
                    unblocked=unblocked,
                ),
                allowed_words=allowed_words,
            ),
            secrets=SecretGuard([*secrets, *private]),
            layers=tuple(message_layers),
            reply_layers=tuple(sentence_layers),
            fail_closed=fail_closed,
        )

    def check_text(self, text: str) -> Verdict:
        """Blocked phrases and secrets, without the (networked) moderation layers."""
        if self.secrets.leaks(text):
            return Verdict(ok=False, reason="secret", detail="part of a secret")
        phrase = self.phrases.find(text)
        if phrase is not None:
            return Verdict(ok=False, reason="blocked_phrase", detail=phrase)
        return ALLOWED

    async def check_viewer(self, text: str) -> Verdict:
        """A viewer's message, before it reaches the language model."""
        verdict = self.check_text(text)
        if verdict.ok:
            verdict = await self._run_layers(self.layers, text)
        return verdict

    async def check_reply(self, sentence: str, *, said_before: str = "") -> Verdict:
        """One sentence of the reply, before text-to-speech.

        ``said_before`` is the reply approved so far: a phrase split over two sentences
        ("... b. A d ...") is caught in the sentence that completes it.
        """
        tail = said_before[-self.context_chars :]
        verdict = self.check_text(f"{tail} {sentence}" if tail else sentence)
        if verdict.ok:
            verdict = await self._run_layers(self.reply_layers, sentence)
        return verdict

    async def _run_layers(self, layers: Sequence[ModerationLayer], text: str) -> Verdict:
        for layer in layers:
            try:
                verdict = await layer.check(text)
            except (BackendError, TimeoutError) as err:
                log.warning("moderation layer %s unavailable: %s", layer.name, err)
                if self.fail_closed:
                    return Verdict(
                        ok=False,
                        reason="moderation_unavailable",
                        detail=f"{layer.name}: {err}",
                        layer=layer.name,
                    )
                continue
            if not verdict.ok:
                detail = f"{layer.name}: {verdict.detail}" if verdict.detail else layer.name
                return Verdict(
                    ok=False, reason=verdict.reason or "moderation", detail=detail, layer=layer.name
                )
        return ALLOWED

    async def aclose(self) -> None:
        """Close every layer once."""
        closed: set[int] = set()
        for layer in (*self.layers, *self.reply_layers):
            if id(layer) not in closed:
                closed.add(id(layer))
                await layer.aclose()
