"""The channel's own AutoMod as an on-air check: would Twitch hold this sentence in chat?

Twitch's "Check AutoMod Status" endpoint (``POST /helix/moderation/enforcements/status``,
twitchio's ``PartialUser.check_automod_status``) answers with the channel's AutoMod level and
blocked terms; it needs the broadcaster's token with ``moderation:read``. Twitch limits it per
channel (5 a minute, 50 an hour for ordinary channels; 10/100 for affiliates; 30/300 for
partners), so a refusal for rate is answered like an unreachable AutoMod: blocked when
``fail_closed`` (the default), let through otherwise.

:class:`AutoModCheck` has the shape of a safety layer (``name`` and ``async check(text)``
returning a :class:`~pipeline.conversation.safety.Verdict`); the time each check takes is kept in
``last_latency_s`` for the turn's timings. It answers for itself when AutoMod cannot be
reached (``fail_closed``), so the guard it is plugged into need not know Twitch's limits.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bots.twitch.adapter import describe_error
from pipeline.conversation.safety import Verdict

if TYPE_CHECKING:
    import twitchio

log = logging.getLogger(__name__)
_ids = itertools.count(1)


class AutoModCheck:
    """Checks text against the AutoMod settings of the channel ``broadcaster_id``.

    ``client`` gives the logged-in twitchio client that holds the broadcaster's token (the
    Twitch adapter's, while it runs), or None when there is none. ``broadcaster_id`` is the
    channel's user id, or gives it once known (the adapter learns it at start-up).
    """

    name: str = "automod"

    def __init__(
        self,
        client: Callable[[], twitchio.Client | None],
        broadcaster_id: str | Callable[[], str | None],
        *,
        fail_closed: bool = True,
    ) -> None:
        self._client = client
        self.broadcaster_id = broadcaster_id
        self.fail_closed = fail_closed
        self.last_latency_s = 0.0

    async def check(self, text: str) -> Verdict:
        """``ok`` when AutoMod would let ``text`` into chat; reason ``"automod"`` when it
        would hold it, ``"automod_unavailable"`` when it cannot say (and ``fail_closed``)."""
        from twitchio import AutomodCheckMessage
        from twitchio.exceptions import HTTPException

        started = time.perf_counter()
        message_id = f"lipcast-{next(_ids)}"
        client = self._client()
        channel = self.broadcaster_id if isinstance(self.broadcaster_id, str) else None
        if channel is None and callable(self.broadcaster_id):
            channel = self.broadcaster_id()
        if client is None or channel is None:
            return self._unavailable("not connected to Twitch")
        broadcaster = client.create_partialuser(channel)
        try:
            statuses = await broadcaster.check_automod_status(
                AutomodCheckMessage(id=message_id, text=text), token_for=channel
            )
        except (HTTPException, OSError, TimeoutError) as err:
            self.last_latency_s = time.perf_counter() - started
            why = describe_error(err)
            log.warning("AutoMod check failed (%s)", why)
            return self._unavailable(why)
        self.last_latency_s = time.perf_counter() - started
        status = next((s for s in statuses if s.msg_id == message_id), None)
        if status is None:
            return self._unavailable("no answer for the text")
        if not status.permitted:
            return Verdict(ok=False, reason="automod", detail="held by the channel's AutoMod")
        return Verdict(ok=True)

    async def aclose(self) -> None:
        """Nothing to release: the adapter's twitchio client is the adapter's to close."""

    def _unavailable(self, why: str) -> Verdict:
        if self.fail_closed:
            return Verdict(ok=False, reason="automod_unavailable", detail=why)
        return Verdict(ok=True)
