"""The adapter seam: a platform adapter turns platform events into utterances, and replies back.

An adapter implements :class:`ChatAdapter`:

* ``run(listener)`` connects to the platform and hands each viewer message to the
  :class:`~pipeline.utterance.Listener` (the pipeline's router) as an
  :class:`~pipeline.utterance.Utterance`, and each moderator command as a
  :class:`~pipeline.utterance.Control`. It returns when the platform connection ends for good
  or :meth:`ChatAdapter.stop` was called. A start that cannot succeed (no token, a refused
  login, a missing package) raises :class:`AdapterUnavailable` with the fix in one line;
  lipcast reports it and keeps the other adapters running.
* ``deliver(reply)`` posts a finished turn where its utterance came from: the text as a reply
  to the viewer's message where the platform has replies, and the video for platforms that
  post it (``takes_video``).

Adapters know nothing of LLMs, queues, rendering or priorities: they fill in the viewer's
flags and the pipeline decides.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from pipeline.clips import Reply
from pipeline.errors import LipcastError
from pipeline.utterance import Listener

__all__ = ["AdapterUnavailable", "ChatAdapter", "Listener"]


class AdapterUnavailable(LipcastError):
    """An adapter cannot start or has lost its platform for good (a missing or revoked token,
    a missing package). The message names the variable, command or package that fixes it and
    never holds a secret. Retrying without that fix cannot help."""


class ChatAdapter(abc.ABC):
    """One platform: Twitch chat, Discord, the local console."""

    platform: ClassVar[str]
    # The reply router hands this adapter the clips of each reply (Discord posts the video).
    takes_video: ClassVar[bool] = False
    # The adapter's library reconnects by itself: lipcast does not restart a run that ends.
    reconnects_itself: ClassVar[bool] = False
    # When this adapter's run ends, lipcast run ends (the console: /quit or end of input).
    ends_run: ClassVar[bool] = False

    @abc.abstractmethod
    async def run(self, listener: Listener) -> None:
        """Deliver messages to ``listener`` until the platform ends or :meth:`stop`."""

    async def deliver(self, reply: Reply) -> None:  # noqa: B027 - optional
        """Post a finished reply where its utterance came from (where the platform has chat)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """End :meth:`run` soon."""

    def describe(self) -> str:
        """One line for start-up and ``lipcast doctor``: where this adapter listens."""
        return self.platform
