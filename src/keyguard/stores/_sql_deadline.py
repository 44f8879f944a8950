"""Deadlines for PostgreSQL calls that a hung server would otherwise never end.

A PostgreSQL server that is stopped (``SIGSTOP``, a frozen VM, a network
partition that drops nothing) leaves its connections open: the kernel still
acknowledges every packet, so neither TCP keepalives nor libpq's
``tcp_user_timeout`` fire, and its ``statement_timeout`` never runs. psycopg
then waits on the socket without end, and cancelling an async query waits
for the server too (psycopg sends a cancel request and waits 5 s, twice).

What does end such a wait is the socket itself: :class:`Watchdog` is one
thread that shuts down the socket of a connection whose operation ran past
its deadline. psycopg wakes up at once with ``OperationalError`` (the server
"closed the connection"), SQLAlchemy drops the connection from its pool, and
the store reports :class:`~keyguard.StorageError`. The same mechanism serves
sync and async connections: the event loop sees the socket close like any
other. Connecting is bounded separately: libpq's ``connect_timeout`` counts
whole seconds from 2, so :func:`connect_within` runs a sync connect in a
short-lived thread and gives up on it after a fraction of a second (the
thread ends by itself within libpq's own timeout), and the async engine
connects under ``asyncio.timeout``, which psycopg honours promptly.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

__all__ = ["Alarm", "Watchdog", "connect_within", "pg_socket"]

C = TypeVar("C")

_THREAD_NAME: Final = "keyguard-sql-watchdog"
#: Seconds the watchdog keeps a beat after its last alarm, before it sleeps until the next.
_LINGER: Final = 10.0


def pg_socket(driver_connection: Any) -> int | None:
    """The socket of a psycopg (sync or async) connection, or None for another driver."""
    pgconn = getattr(driver_connection, "pgconn", None)
    if pgconn is None:
        return None
    try:
        fileno: int = pgconn.socket
    except Exception:  # a closed connection has no socket
        return None
    return fileno


class Alarm:
    """One armed deadline: the connection's socket (a duplicate of it) and when to cut it.

    The duplicate keeps the socket itself, not a file descriptor number that
    the connection may close and the process reuse, so cutting it can never
    hit another connection.
    """

    __slots__ = ("deadline", "fileno", "fired")

    def __init__(self, fileno: int, deadline: float) -> None:
        self.fileno = fileno
        self.deadline = deadline
        #: Whether the deadline passed and the socket was shut down.
        self.fired = False


class Watchdog:
    """Shuts down the sockets of operations past their deadline; one thread, started lazily.

    The thread sleeps until the nearest deadline. While alarms come and go it
    also wakes every shortest timeout, so that arming one never has to wake
    it (arming and disarming cost a lock and a ``dup``, no thread switch);
    ten seconds after the last alarm it sleeps until the next one.
    :meth:`close` stops it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._alarms: dict[int, Alarm] = {}  # id(alarm) -> alarm
        self._wake_at = float("inf")
        self._shortest = float("inf")
        self._last_armed = float("-inf")
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Watchdog(armed={len(self._alarms)})"

    def arm(self, fileno: int, timeout: float) -> Alarm:
        """Cut the socket ``fileno`` in ``timeout`` seconds unless :meth:`disarm` comes first."""
        now = self._clock()
        alarm = Alarm(os.dup(fileno), now + timeout)
        with self._cond:
            self._alarms[id(alarm)] = alarm
            self._last_armed = now
            self._shortest = min(self._shortest, timeout)
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
                self._thread.start()
            elif alarm.deadline < self._wake_at:
                self._cond.notify()
        return alarm

    def disarm(self, alarm: Alarm) -> bool:
        """Stop watching; True when the deadline had passed (the connection is cut)."""
        with self._cond:
            mine = self._alarms.pop(id(alarm), None) is not None
        if mine:
            os.close(alarm.fileno)
        return alarm.fired

    def close(self) -> None:
        """Stop the thread; alarms still armed are dropped (their sockets left alone)."""
        with self._cond:
            self._closed = True
            alarms, self._alarms = list(self._alarms.values()), {}
            thread, self._thread = self._thread, None
            self._cond.notify()
        for alarm in alarms:
            os.close(alarm.fileno)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = self._clock()
                nearest = float("inf")
                for key, alarm in list(self._alarms.items()):
                    if alarm.deadline <= now:
                        del self._alarms[key]
                        _cut(alarm)
                    else:
                        nearest = min(nearest, alarm.deadline)
                if nearest == float("inf") and now - self._last_armed < _LINGER:
                    nearest = now + self._shortest  # no later alarm can be due before this
                self._wake_at = nearest
                self._cond.wait(None if nearest == float("inf") else nearest - now)


def _cut(alarm: Alarm) -> None:
    """Shut the socket down both ways, so whoever waits on it wakes with an error."""
    alarm.fired = True
    sock = socket.socket(fileno=alarm.fileno)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the peer: the waiter is awake anyway
        pass
    finally:
        sock.close()


def connect_within(connect: Callable[[], C], timeout: float, discard: Callable[[C], object]) -> C:
    """``connect()`` within ``timeout`` seconds, or :class:`TimeoutError`.

    The connect runs in a thread of its own; one that is given up on keeps
    running until the driver's own timeout, and a connection it makes then
    is passed to ``discard``.
    """
    done = threading.Event()
    lock = threading.Lock()
    outcome: list[tuple[C | None, BaseException | None]] = []
    given_up = False

    def attempt() -> None:
        try:
            result: tuple[C | None, BaseException | None] = (connect(), None)
        except BaseException as exc:
            result = (None, exc)
        with lock:
            if not given_up:
                outcome.append(result)
                done.set()
                return
        if result[0] is not None:
            discard(result[0])

    threading.Thread(target=attempt, name="keyguard-sql-connect", daemon=True).start()
    done.wait(timeout)
    with lock:
        if not outcome:
            given_up = True
            raise TimeoutError(f"no connection within {timeout} s")
    connection, error = outcome[0]
    if error is not None:
        raise error
    return connection  # type: ignore[return-value]
