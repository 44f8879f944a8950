"""The deadline pieces of the SQL store, on plain sockets and threads (no database)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from keyguard.stores._sql_deadline import Watchdog, connect_within


@pytest.fixture
def watchdog() -> Iterator[Watchdog]:
    watchdog = Watchdog()
    yield watchdog
    watchdog.close()


def test_a_socket_past_its_deadline_is_cut_and_its_reader_wakes(watchdog: Watchdog) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        start = time.monotonic()
        alarm = watchdog.arm(ours.fileno(), 0.2)
        assert ours.recv(1) == b""  # blocks, as a query on a hung server, until cut
        took = time.monotonic() - start
        assert 0.15 <= took < 2.0
        assert watchdog.disarm(alarm) is True


def test_a_disarmed_alarm_leaves_the_socket_alone(watchdog: Watchdog) -> None:
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    with a, a_peer, b, b_peer:
        assert watchdog.disarm(watchdog.arm(a.fileno(), 0.05)) is False
        later = watchdog.arm(b.fileno(), 0.3)
        assert b.recv(1) == b""  # cut at 0.3 s, long after the first deadline
        assert watchdog.disarm(later) is True
        a_peer.sendall(b"x")
        assert a.recv(1) == b"x"  # the disarmed one still works


def _watchdog_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "keyguard-sql-watchdog"}


def test_the_watchdog_stops_on_close_and_starts_again() -> None:
    others = _watchdog_threads()  # another test's store left open is not this one's doing
    watchdog = Watchdog()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        watchdog.disarm(watchdog.arm(ours.fileno(), 5.0))
        assert _watchdog_threads() - others, "arming started a thread"
        watchdog.close()
        assert not _watchdog_threads() - others
        alarm = watchdog.arm(ours.fileno(), 0.1)
        assert ours.recv(1) == b""
        assert watchdog.disarm(alarm) is True
    watchdog.close()


def test_a_connect_that_takes_too_long_is_given_up_and_its_connection_discarded() -> None:
    release = threading.Event()
    discarded = threading.Event()
    made: list[object] = []

    def slow_connect() -> object:
        release.wait(10)
        made.append(object())
        return made[-1]

    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"within 0\.1 s"):
        connect_within(slow_connect, 0.1, lambda conn: discarded.set())
    assert time.monotonic() - start < 2.0
    release.set()
    assert discarded.wait(10)


@pytest.mark.parametrize(
    ("connect", "outcome"),
    [
        pytest.param(lambda: "conn", "conn", id="connected"),
        pytest.param(lambda: 1 / 0, ZeroDivisionError, id="failed"),
    ],
)
def test_a_prompt_connect_returns_or_raises_as_it_did(connect: object, outcome: object) -> None:
    if isinstance(outcome, type):
        with pytest.raises(outcome):
            connect_within(connect, 5.0, lambda conn: None)  # type: ignore[arg-type]
    else:
        assert connect_within(connect, 5.0, lambda conn: None) == outcome  # type: ignore[arg-type]
