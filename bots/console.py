"""The ``console`` adapter: chat with the persona from a terminal, as any viewer.

Each line typed is one chat message. ``name: message`` speaks as ``name`` for that line;
a plain line speaks as the current viewer. Commands start with ``/``::

    /user NAME   speak as NAME from now on        /mod   toggle the moderator flag
    /sub         toggle the subscriber flag        /bits N  cheer N bits with the next line
    /skip        stop the reply on air             /clear drop the replies waiting
    /pause       refuse messages until /resume     /persona NAME [LANGUAGE]  switch persona
    /lang CODE   your language                     /forget  forget what you said
    /quit        stop lipcast (so does Ctrl-D)     /help  this list

The console's commands are the broadcaster's, whatever /mod says; /mod sets the flag that
the next chat lines carry.

Replies are printed as the persona's lines. Lines are read on a daemon thread, so a prompt
waiting for input never holds up shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import threading
from collections.abc import AsyncIterator
from typing import ClassVar, TextIO

from bots.base import ChatAdapter, Listener
from pipeline.clips import Reply
from pipeline.utterance import Admission, Control, ControlName, Utterance

HELP_TEXT = (
    "type a chat line (or 'name: message'); /user NAME, /mod, /sub, /bits N, /skip, /clear, "
    "/pause, /resume, /persona NAME [LANGUAGE], /lang CODE, /forget, /quit, /help"
)
_CONTROLS: dict[str, ControlName] = {
    "skip": "skip",
    "clear": "clear",
    "pause": "pause",
    "resume": "resume",
    "persona": "persona",
    "lang": "language",
    "forget": "forget",
}
_SPEAKER = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,24}):\s+(.+)$")


async def stdin_lines(stream: TextIO | None = None) -> AsyncIterator[str]:
    """Lines of ``stream`` (standard input by default), read on a daemon thread."""
    source = stream or sys.stdin
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in source:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError, RuntimeError):
            pass  # the stream or the loop closed
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="lipcast-console-input", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line


class ConsoleAdapter(ChatAdapter):
    """Chat lines from a terminal (or any text stream) as the ``console`` platform."""

    platform: ClassVar[str] = "console"
    ends_run: ClassVar[bool] = True  # /quit or the end of input ends lipcast run

    def __init__(
        self,
        *,
        lines: AsyncIterator[str] | None = None,
        out: TextIO | None = None,
        user: str = "viewer",
        channel: str = "console",
        persona_name: str = "persona",
    ) -> None:
        self._lines = lines
        self._out = out or sys.stdout
        self.user = user
        self.channel = channel
        self.persona_name = persona_name
        self.moderator = False
        self.subscriber = False
        self._bits = 0
        self._stopped = asyncio.Event()

    def _say(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    async def run(self, listener: Listener) -> None:
        lines = self._lines if self._lines is not None else stdin_lines()
        self._say(f"console chat as {self.user!r}: {HELP_TEXT}")
        async for raw in _until(lines, self._stopped):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("/"):
                name, _, argument = line[1:].partition(" ")
                name, argument = name.lower(), argument.strip()
                if name in ("quit", "exit"):
                    return
                control = _CONTROLS.get(name)
                if control is None:
                    self._setting(name, argument)
                    continue
                # The person at the console runs the show: its commands are the broadcaster's.
                origin = self._utterance(self.user, line, broadcaster=True)
                command = Control(name=control, origin=origin, argument=argument)
                self._report(await listener.control(command))
                continue
            user, text = self.user, line
            speaker = _SPEAKER.match(line)
            if speaker is not None:
                user, text = speaker.group(1), speaker.group(2)
            utterance = self._utterance(user, text)
            self._bits = 0
            self._report(await listener.hear(utterance))

    def _utterance(self, user: str, text: str, *, broadcaster: bool = False) -> Utterance:
        return Utterance(
            platform=self.platform,
            channel=self.channel,
            channel_name=self.channel,
            user=user.lower(),
            user_name=user,
            text=text,
            moderator=self.moderator,
            broadcaster=broadcaster,
            subscriber=self.subscriber,
            bits=self._bits,
        )

    def _report(self, admission: Admission) -> None:
        if admission.reason == "command":
            self._say(f"  ({admission.detail})")
        elif not admission.accepted:
            detail = f": {admission.detail}" if admission.detail else ""
            self._say(f"  (not answered: {admission.reason.replace('_', ' ')}{detail})")

    def _setting(self, name: str, argument: str) -> None:
        """Change who the console speaks as (/user, /mod, /sub, /bits); else print the help."""
        if name == "user" and argument:
            self.user = argument[:25]
            self._say(f"  (now speaking as {self.user!r})")
        elif name == "mod":
            self.moderator = not self.moderator
            self._say(f"  (moderator: {'on' if self.moderator else 'off'})")
        elif name == "sub":
            self.subscriber = not self.subscriber
            self._say(f"  (subscriber: {'on' if self.subscriber else 'off'})")
        elif name == "bits" and argument.isdigit():
            self._bits = int(argument)
            self._say(f"  (the next line cheers {self._bits} bits)")
        else:
            self._say(f"  {HELP_TEXT}")

    def describe(self) -> str:
        return f"chat typed in this terminal, as {self.user!r}"

    async def deliver(self, reply: Reply) -> None:
        if reply.text:
            self._say(f"{reply.persona_name or self.persona_name}: {reply.text}")

    async def stop(self) -> None:
        self._stopped.set()


async def _until(lines: AsyncIterator[str], stopped: asyncio.Event) -> AsyncIterator[str]:
    """``lines`` until they end or ``stopped`` is set."""
    iterator = aiter(lines)

    async def next_line() -> str:
        return await anext(iterator)

    stop = asyncio.create_task(stopped.wait(), name="console-stop")
    try:
        while True:
            pending = asyncio.create_task(next_line(), name="console-next-line")
            done, _ = await asyncio.wait({pending, stop}, return_when=asyncio.FIRST_COMPLETED)
            if pending not in done:
                pending.cancel()
                return
            try:
                line = pending.result()
            except StopAsyncIteration:
                return
            yield line
    finally:
        stop.cancel()
