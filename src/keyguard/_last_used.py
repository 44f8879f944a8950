"""``last_used_at``: noted on the request path, written behind it by a background writer.

A request only *notes* a use in memory (:meth:`LastUsedRecorder.note`); the
batch of pending times is written by a writer of its own, never by the
request that happens to complete an interval:

- :class:`LastUsedThread` for a sync :class:`~keyguard.KeyManager` (WSGI): a
  daemon thread.
- :class:`LastUsedTask` for an :class:`~keyguard.AsyncKeyManager` (ASGI): a
  task on the event loop, which writes a large batch in chunks and lets the
  loop serve requests between two chunks.

Both are started lazily, by the first use the recorder notes, write at once
what is pending, then at most one batch per interval, and are stopped by the
manager's ``close()`` / ``aclose()``, which then writes whatever is still
pending. See docs/stores.md for what a crash costs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime
from typing import Final

from ._drive import Flow
from ._errors import StorageError
from ._steps import TouchKeys

__all__ = [
    "DEFAULT_LAST_USED_INTERVAL",
    "FLUSH_CHUNK",
    "LOOP_FLUSH_CHUNK",
    "LastUsedRecorder",
    "LastUsedTask",
    "LastUsedThread",
    "chunks",
    "touch_flow",
]

logger: Final = logging.getLogger("keyguard")

#: Seconds between two batches of last-used writes.
DEFAULT_LAST_USED_INTERVAL = 60.0
#: :meth:`LastUsedRecorder.note` keeps last-used times to this many seconds.
NOTE_RESOLUTION: Final = 1.0
#: Keys per ``store.touch`` call: one short transaction each, so that a large batch
#: never holds a database's write lock for long.
FLUSH_CHUNK: Final = 500
#: Keys per ``store.atouch`` call of the async writer, which lets the event loop serve
#: requests between two: a SQL store spends about 5 to 12 µs of the loop thread per key
#: (SQLAlchemy's parameter handling), so a chunk holds the loop for about a millisecond.
LOOP_FLUSH_CHUNK: Final = 100
#: Seconds without a use after which a writer thread ends (the next use starts another).
IDLE_SECONDS: Final = 10.0

Batch = dict[str, datetime]


def chunks(batch: Mapping[str, datetime], size: int = FLUSH_CHUNK) -> Iterator[Batch]:
    """``batch`` in dicts of at most ``size`` keys, made one at a time."""
    items = iter(batch.items())
    while chunk := dict(itertools.islice(items, size)):
        yield chunk


def touch_flow(recorder: LastUsedRecorder, batch: Mapping[str, datetime]) -> Flow[None]:
    """Write a batch of last-used times, :data:`FLUSH_CHUNK` keys per ``store.touch``.

    A chunk that fails goes back to the recorder with the rest of the batch,
    for the next batch to carry; this never raises (a failed write is logged).
    """
    parts = chunks(batch)
    for chunk in parts:
        try:
            yield from TouchKeys(chunk)
        except StorageError:
            kept = len(chunk)
            recorder.restore(chunk)
            for rest in parts:
                kept += len(rest)
                recorder.restore(rest)
            logger.warning("could not record the last use of %d keys; will retry", kept)
            return


class LastUsedRecorder:
    """Collects successful uses in memory, for a background writer to store in batches.

    Each key manager owns one and calls :meth:`note` after every successful
    authentication; its writer (a thread or a task, see ``_last_used``) takes
    the pending times with :meth:`flush` and writes them with
    ``store.touch(batch)``: the first use at once, then at most one batch per
    ``interval``. No request writes anything.

    What a crash costs: the times noted since the last batch, that is at most
    one interval of last-used data. Never a key: keys are written when they
    are created, not here.

    Args:
        interval: Seconds (real time) between two batches; 0 writes each use
            as soon as the writer gets to it.
        clock: Monotonic seconds: how often a key is noted (at most once per
            second, :data:`NOTE_RESOLUTION`).

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
        self._pending: Batch = {}
        self._noted: dict[str, float] = {}
        self._lock = threading.Lock()
        #: The writer's wake-up, called with every use recorded; set by :meth:`attach`.
        self._wake: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"LastUsedRecorder(interval={self.interval}, pending={len(self._pending)})"

    def __len__(self) -> int:
        return len(self._pending)

    def attach(self, wake: Callable[[], None]) -> None:
        """Have ``wake`` called whenever a use is recorded (the writer starts or wakes up).

        Raises:
            ValueError: Another writer is attached: a recorder serves one key manager.
        """
        if self._wake is not None:
            raise ValueError(
                "this LastUsedRecorder already serves another key manager; give each "
                "manager its own (last_used=<seconds> or LastUsedRecorder(...))"
            )
        self._wake = wake

    def record(self, key_id: str, when: datetime) -> None:
        """Note a use of ``key_id`` at ``when`` (a later time for the same key wins)."""
        with self._lock:
            previous = self._pending.get(key_id)
            if previous is None or previous < when:
                self._pending[key_id] = when
        wake = self._wake
        if wake is not None:
            wake()

    def note(self, key_id: str, now: Callable[[], datetime]) -> None:
        """:meth:`record` for the request path: a key noted less than a second ago
        (:data:`NOTE_RESOLUTION`) costs one clock read and one dict lookup, no lock.

        Args:
            key_id: The key that was used.
            now: Returns the wall-clock time; called only when the use is recorded.
        """
        mono = self._clock()
        if mono < self._noted.get(key_id, 0.0):
            return
        self._noted[key_id] = mono + NOTE_RESOLUTION
        self.record(key_id, now())

    def restore(self, batch: Mapping[str, datetime]) -> None:
        """Put back a batch whose write failed, so that the next batch carries it."""
        with self._lock:
            for key_id, when in batch.items():
                previous = self._pending.get(key_id)
                if previous is None or previous < when:
                    self._pending[key_id] = when

    def flush(self) -> Batch:
        """Hand out everything pending now (to be written)."""
        with self._lock:
            batch, self._pending = self._pending, {}
            # Bounded by the keys used within one interval; a key is noted again afterwards.
            self._noted = {}
        return batch


class LastUsedThread:
    """The writer of a sync key manager: a daemon thread named ``keyguard-last-used``.

    Started by the first use noted (:meth:`wake`), it writes what is pending at
    once, then at most one batch per ``interval`` seconds; after
    :data:`IDLE_SECONDS` without a use it ends, and the next use starts a new
    one (so an idle or forgotten manager holds no thread). :meth:`close` stops
    it after the batch it is writing; the manager then writes the rest
    itself. A forked process starts its own writer at its first use.

    Args:
        recorder: Where the pending times are.
        write: Writes one batch (a failure goes back to the recorder; never raises).
    """

    def __init__(self, recorder: LastUsedRecorder, write: Callable[[Batch], None]) -> None:
        self.recorder = recorder
        self._write = write
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._due = threading.Event()
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"LastUsedThread(running={self.running})"

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def wake(self) -> None:
        """Have what is pending written: start the thread, or wake it up."""
        with self._lock:
            thread = self._thread
            if thread is not None and thread.is_alive():
                if not self._due.is_set():
                    self._due.set()
                return
            due, stop = threading.Event(), threading.Event()
            due.set()
            thread = threading.Thread(
                target=self._run, args=(due, stop), name="keyguard-last-used", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:  # the interpreter is shutting down: close() writes the rest
                return
            self._thread, self._due, self._stop = thread, due, stop

    def _run(self, due: threading.Event, stop: threading.Event) -> None:
        recorder = self.recorder
        while True:
            if not due.wait(IDLE_SECONDS):
                with self._lock:
                    if not due.is_set():  # idle: end; the next use starts a new thread
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
            due.clear()
            batch = recorder.flush()
            if batch:
                try:
                    self._write(batch)
                except Exception:  # a bug in a store: keep the times, keep the writer
                    recorder.restore(batch)
                    logger.exception("writing the last use of %d keys failed", len(batch))
            if stop.wait(recorder.interval):
                return

    def close(self) -> None:
        """Stop the thread, after the batch it is writing (nothing pending is lost)."""
        with self._lock:
            thread, self._thread = self._thread, None
            stop, due = self._stop, self._due
        if thread is not None:
            stop.set()
            due.set()
            thread.join()


class LastUsedTask:
    """The writer of an async key manager: a task on the loop that noted the first use.

    It writes what is pending at once, in chunks of :data:`LOOP_FLUSH_CHUNK`
    keys with a turn of the event loop between two, then waits ``interval``
    seconds before the next batch; with nothing pending it ends, and the next
    use starts a new one. If its loop ends (cancelling it), what it had not
    written goes back to the recorder, and the next use on another loop
    starts the writer there. :meth:`aclose` stops it.

    Args:
        recorder: Where the pending times are.
        write: Writes one chunk (a failure goes back to the recorder; never raises).
    """

    def __init__(
        self, recorder: LastUsedRecorder, write: Callable[[Batch], Awaitable[None]]
    ) -> None:
        self.recorder = recorder
        self._write = write
        self._task: asyncio.Task[None] | None = None
        self._sleeping = False
        self._closing = False

    def __repr__(self) -> str:
        return f"LastUsedTask(running={self.running})"

    @property
    def running(self) -> bool:
        task = self._task
        return task is not None and not task.done() and not task.get_loop().is_closed()

    def wake(self) -> None:
        """Start the task on the running loop unless one runs: a use is pending."""
        task = self._task
        if task is not None and not task.done() and not task.get_loop().is_closed():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop here: the next use on one, or aclose(), writes it
            return
        self._closing = False
        self._task = loop.create_task(self._run(), name="keyguard-last-used")

    async def _run(self) -> None:
        recorder = self.recorder
        while True:
            batch = recorder.flush()
            if not batch:
                return
            await self._write_all(batch)
            if self._closing:
                return
            self._sleeping = True
            try:
                await asyncio.sleep(recorder.interval)
            finally:
                self._sleeping = False

    async def _write_all(self, batch: Batch) -> None:
        parts = chunks(batch, LOOP_FLUSH_CHUNK)
        unwritten: Batch = {}
        try:
            for chunk in parts:
                unwritten = chunk
                try:
                    await self._write(chunk)
                except Exception:  # a bug in a store: keep the times, keep the writer
                    self.recorder.restore(chunk)
                    logger.exception("writing the last use of %d keys failed", len(chunk))
                unwritten = {}
                await asyncio.sleep(0)  # let the loop serve requests between two chunks
        except BaseException:  # cancelled with its loop: nothing unwritten is lost
            self.recorder.restore(unwritten)
            for rest in parts:
                self.recorder.restore(rest)
            raise

    async def aclose(self) -> None:
        """Stop the task, after the chunk it is writing (nothing pending is lost)."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        loop = task.get_loop()
        if loop.is_closed():
            return
        if loop is not asyncio.get_running_loop():
            # Another loop's task: stopped there; whatever it holds goes back to the recorder.
            loop.call_soon_threadsafe(task.cancel)
            return
        self._closing = True
        if self._sleeping:
            task.cancel()
        await asyncio.wait({task})
