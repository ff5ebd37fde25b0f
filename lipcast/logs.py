"""Logging set-up, with a filter that blanks every known secret value."""

from __future__ import annotations

import logging
from collections.abc import Iterable

REDACTED = "***"

# The AMQP client libraries report every dropped connection as ERRORs with tracebacks, then
# recover; the job queue logs each drop and each reconnection once itself.
TRANSPORT_LOGGERS = ("aiormq", "aio_pika")
_DROP_ERRORS = frozenset(
    {"AMQPConnectionError", "ChannelInvalidStateError", "ConnectionError", "TimeoutError"}
)
_DROP_WORDS = (
    "connection close",
    "no active transport",
    "closed",
    "reconnect",
    "reader exited",
    "creating transport",  # a refused connection; lipcast reports it in one line itself
    "connectionerror",
)


class RedactSecrets(logging.Filter):
    """Replace secret values wherever they appear in a record's final message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in self._secrets:
            message = message.replace(secret, REDACTED)
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, REDACTED)
        record.msg, record.args = message, None
        return True


class QuietTransportDrops(logging.Filter):
    """Drop what aiormq and aio-pika log about a lost connection (kept at ``-vv``).

    A dropped connection or closed channel is expected while the broker restarts or closes
    connections, and they report it as ERRORs with tracebacks. Anything else of theirs (a
    connection blocked by a broker alarm, say) still shows, without its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(TRANSPORT_LOGGERS):
            return True
        if record.levelno < logging.ERROR and "blocked" not in record.getMessage():
            return False  # reconnecting chatter; a broker alarm's "blocked" still shows
        if _about_a_drop(record):
            return False
        record.exc_info = None
        record.exc_text = None
        return True


def _about_a_drop(record: logging.LogRecord) -> bool:
    if record.exc_info and record.exc_info[1] is not None:
        names = {cls.__name__ for cls in type(record.exc_info[1]).__mro__}
        if names & _DROP_ERRORS:
            return True
    message = record.getMessage().lower()
    return any(word in message for word in _DROP_WORDS)


def setup_logging(verbosity: int, secrets: Iterable[str]) -> None:
    """Log to stderr at WARNING, INFO (-v) or DEBUG (-vv), secrets redacted.

    Below ``-vv`` the AMQP libraries' reports of dropped connections are left out
    (:class:`QuietTransportDrops`).
    """
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if verbosity < 2:
        handler.addFilter(QuietTransportDrops())
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
