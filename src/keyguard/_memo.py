"""The bounded memo behind what the request path remembers of what it verified.

The token memo of API keys (:class:`~keyguard.TokenMemo`), the JWT verifier's
verified tokens and the token endpoint's verified client secrets all keep,
under a digest, what one check proved, so that a repeat costs no parse and no
hash. Each is bounded, and forgets its oldest entry first, in O(1).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BoundedMemo"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """At most ``max_size`` entries; past it, the oldest goes first, in O(1).

    Reads are the dict's own ``get``, as they run on every request; writes
    hold a lock, so that threads never push the memo past its bound.

    Args:
        max_size: The most entries kept, at least 1.
        argument: The name ``max_size`` has where the caller got it, for the error.

    Raises:
        ValueError: ``max_size`` is not a whole number of at least 1.
    """

    __slots__ = ("_entries", "_lock", "get", "max_size")

    def __init__(self, max_size: int, *, argument: str = "max_size") -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"{argument} must be a whole number of at least 1, got {max_size!r}")
        self.max_size = max_size
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        #: The entry of a key, or None.
        self.get: Callable[[K], V | None] = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={len(self)}, max_size={self.max_size})"

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` under ``key``, forgetting the oldest entry past the bound."""
        entries = self._entries
        with self._lock:
            entries[key] = value
            if len(entries) > self.max_size:
                entries.popitem(last=False)

    def forget(self, key: K) -> None:
        """Forget ``key``'s entry, if any."""
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()
