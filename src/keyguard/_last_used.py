"""When to write ``last_used_at``: at most once per key per interval, in batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final

__all__ = ["DEFAULT_LAST_USED_INTERVAL", "LastUsedRecorder"]

#: Seconds between two batches of last-used writes.
DEFAULT_LAST_USED_INTERVAL = 60.0
#: :meth:`LastUsedRecorder.note` keeps last-used times to this many seconds.
NOTE_RESOLUTION: Final = 1.0


class LastUsedRecorder:
    """Collects successful uses in memory and hands them out as one batch per interval.

    A key manager calls :meth:`record` after every successful authentication
    and, when it returns a batch, writes it with one ``store.touch(batch)``.
    So each key is written at most once per ``interval``, and a request that
    is not the one completing an interval does no write at all. The first use
    after the recorder is made is written at once.

    What a crash costs: the times recorded since the last batch, that is at
    most one interval of last-used data (when traffic pauses, the pending
    times wait for the next request or :meth:`flush`). Never a key: keys
    are written when they are created, not here.

    Args:
        interval: Seconds between two batches.
        clock: Monotonic seconds.

    Raises:
        ValueError: ``interval`` is negative.
    """

    def __init__(
        self,
        interval: float = DEFAULT_LAST_USED_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval >= 0:
            raise ValueError("interval must be a number of seconds, 0 or more")
        self.interval = interval
        self._clock = clock
        self._pending: dict[str, datetime] = {}
        self._noted: dict[str, float] = {}
        self._last_batch = float("-inf")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LastUsedRecorder(interval={self.interval}, pending={len(self._pending)})"

    def __len__(self) -> int:
        return len(self._pending)

    def record(self, key_id: str, when: datetime) -> dict[str, datetime] | None:
        """Note a use of ``key_id`` at ``when``; return the batch to write, when one is due."""
        now = self._clock()
        with self._lock:
            previous = self._pending.get(key_id)
            if previous is None or previous < when:
                self._pending[key_id] = when
            if now - self._last_batch < self.interval:
                return None
            self._last_batch = now
            batch, self._pending = self._pending, {}
            self._noted = {}
        return batch

    def note(self, key_id: str, now: Callable[[], datetime]) -> dict[str, datetime] | None:
        """:meth:`record` for the request path: a key noted less than a second ago
        (:data:`NOTE_RESOLUTION`) costs no clock read and no lock until a batch is due.

        Args:
            key_id: The key that was used.
            now: Returns the wall-clock time; called only when the use is recorded.
        """
        mono = self._clock()
        # _noted holds, per key, when it is worth noting again; an empty batch is never due
        # before _last_batch + interval, so both checks are plain comparisons.
        if mono < self._noted.get(key_id, 0.0) and mono - self._last_batch < self.interval:
            return None
        self._noted[key_id] = mono + NOTE_RESOLUTION
        return self.record(key_id, now())

    def restore(self, batch: Mapping[str, datetime]) -> None:
        """Put back a batch whose write failed, so that the next batch carries it."""
        with self._lock:
            for key_id, when in batch.items():
                previous = self._pending.get(key_id)
                if previous is None or previous < when:
                    self._pending[key_id] = when

    def flush(self) -> dict[str, datetime]:
        """Hand out everything pending now (on shutdown)."""
        with self._lock:
            batch, self._pending = self._pending, {}
        return batch
