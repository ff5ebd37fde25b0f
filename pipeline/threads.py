"""Bridging blocking producers (TTS engines, STT models) in worker threads to asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import TypeVar

_T = TypeVar("_T")


async def stream_from_thread(
    executor: Executor, produce: Callable[[Callable[[_T], bool]], None]
) -> AsyncIterator[_T]:
    """Run ``produce(emit)`` in ``executor`` and yield each item it emits as soon as it does.

    ``emit`` returns False once the consumer has gone, so the producer can stop early. An error
    raised by ``produce`` is re-raised here after the items emitted before it.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[_T] | None] = asyncio.Queue()
    stopped = threading.Event()

    def emit(item: _T) -> bool:
        if stopped.is_set():
            return False
        loop.call_soon_threadsafe(queue.put_nowait, (item,))
        return True

    def finished(job: asyncio.Future[None]) -> None:
        if not job.cancelled():
            job.exception()  # marks it retrieved when nobody is left to await it
        queue.put_nowait(None)

    job = loop.run_in_executor(executor, produce, emit)
    job.add_done_callback(finished)
    try:
        while (entry := await queue.get()) is not None:
            yield entry[0]
        await job
    finally:
        stopped.set()
