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
from dataclasses import dataclass
from typing import ClassVar

from pipeline.clips import Clip, Reply
from pipeline.errors import LipcastError
from pipeline.utterance import Listener, Utterance

__all__ = ["AdapterUnavailable", "ChatAdapter", "Listener", "Readiness"]


class AdapterUnavailable(LipcastError):
    """An adapter cannot start or has lost its platform for good (a missing or revoked token,
    a missing package). The message names the variable, command or package that fixes it and
    never holds a secret. Retrying without that fix cannot help."""


@dataclass(frozen=True, kw_only=True)
class Readiness:
    """One line of ``lipcast doctor`` about an adapter: can it start, and what is missing."""

    ok: bool  # False: the adapter cannot start as configured
    detail: str  # what was checked, or what is missing and the fix; never a secret
    warning: bool = False  # it can start, but something will not work (a missing scope)


class ChatAdapter(abc.ABC):
    """One platform: Twitch chat, Discord, the local console."""

    platform: ClassVar[str]
    # The reply router hands this adapter the clips of each reply (Discord posts the video).
    takes_video: ClassVar[bool] = False
    # The reply router hands this adapter each clip of its replies as it is released (voice).
    takes_clips: ClassVar[bool] = False
    # The adapter's library reconnects by itself: lipcast does not restart a run that ends.
    reconnects_itself: ClassVar[bool] = False
    # When this adapter's run ends, lipcast run ends (the console: /quit or end of input).
    ends_run: ClassVar[bool] = False

    @abc.abstractmethod
    async def run(self, listener: Listener) -> None:
        """Deliver messages to ``listener`` until the platform ends or :meth:`stop`."""

    async def deliver(self, reply: Reply) -> None:  # noqa: B027 - optional
        """Post a finished reply where its utterance came from (where the platform has chat)."""

    async def replying(self, utterance: Utterance) -> None:  # noqa: B027 - optional hook
        """The turn answering ``utterance`` began (Discord shows a typing indicator)."""

    async def play(self, clip: Clip) -> None:  # noqa: B027 - optional hook
        """A clip of a reply to this platform, as soon as it is next in line, in order
        (a voice channel speaks it). Called only when ``takes_clips`` is set."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """End :meth:`run` soon."""

    async def check(self) -> list[Readiness]:
        """Read-only checks for ``lipcast doctor`` (credentials, scopes, intents): nothing is
        changed, nothing joined, no secret shown."""
        return [Readiness(ok=True, detail=self.describe())]

    def describe(self) -> str:
        """One line for start-up and ``lipcast doctor``: where this adapter listens."""
        return self.platform
