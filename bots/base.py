"""The adapter seam: a platform adapter turns platform events into utterances, and back.

An adapter implements :class:`ChatAdapter`: ``run`` delivers each viewer message to a
:class:`Listener` (the conversation) as an :class:`~pipeline.utterance.Utterance` and returns
when the platform connection ends or :meth:`ChatAdapter.stop` is called; ``send_text`` posts
the persona's reply in a channel. Adapters know nothing of LLMs, queues or rendering.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Protocol

from pipeline.conversation.turns import Admission
from pipeline.utterance import Utterance


class Listener(Protocol):
    """What an adapter talks to: the conversation."""

    async def hear(self, utterance: Utterance) -> Admission:
        """Take a viewer's message; say whether it will be answered, and why not."""
        ...

    def skip(self, turn_id: str | None = None) -> bool:
        """Stop the reply in progress (a moderator's command)."""
        ...

    def clear(self) -> int:
        """Drop the messages waiting for an answer (a moderator's command)."""
        ...


class ChatAdapter(abc.ABC):
    """One platform: Twitch chat, a Discord channel, the local console."""

    platform: ClassVar[str]

    @abc.abstractmethod
    async def run(self, listener: Listener) -> None:
        """Deliver messages to ``listener`` until the platform ends or :meth:`stop`."""

    async def send_text(self, channel: str, text: str) -> None:  # noqa: B027 - optional
        """Post the persona's reply text in ``channel`` (where the platform has chat)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """End :meth:`run` soon."""
