"""A small thread-safe LRU cache for what renderers prepare once per avatar."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class PreparedCache(Generic[T]):
    """Keeps the ``size`` most recently used values; ``get_or_make`` fills a miss.

    The value is made outside the lock, so a slow preparation never blocks other renders; two
    threads missing the same key at once may both make it, and the later one is kept.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._values: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = make()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self._size:
                self._values.popitem(last=False)
        return value
