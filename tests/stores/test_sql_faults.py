"""A hung PostgreSQL never hangs a caller: every call ends within its documented bound.

The database is the tests' own (``private_postgres``), frozen with SIGSTOP: the
kernel keeps its connections open and accepts new ones, and nothing answers,
which is what a stopped server, a frozen VM or a silent network look like.
Times are real (the bounds are about real waits); the circuit breaker runs on
a fake clock, so no test waits for it to half-open.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from keyguard import CircuitBreaker, CircuitOpenError, KeyManager, StorageError
from keyguard.stores import CachedKeyStore
from keyguard.stores.sql import SQLKeyStore
from keyguard.testing import FakeClock, sample_record

from .._services import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

#: The store's timeouts in these tests, each well under a second (the defaults are 0.5 s).
TIMEOUT = 0.3
#: What a call may take beyond its timeout: thread start-up and scheduling on a busy machine.
SLACK = 0.5


@pytest.fixture
def circuit_clock() -> FakeClock:
    return FakeClock()


def make_store(server: PostgresServer, clock: FakeClock, **options: Any) -> SQLKeyStore:
    timeouts = {"connect_timeout": TIMEOUT, "statement_timeout": TIMEOUT, "pool_timeout": TIMEOUT}
    return SQLKeyStore(
        server.url,
        circuit=CircuitBreaker(failure_threshold=3, reset_timeout=2.0, clock=clock.monotonic),
        **{**timeouts, **options},
    )


@pytest.fixture
def frozen(private_postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The private server, thawed again however the test ends."""
    try:
        yield private_postgres
    finally:
        private_postgres.thaw()


@pytest.fixture
def store(private_postgres: PostgresServer, circuit_clock: FakeClock) -> Iterator[SQLKeyStore]:
    store = make_store(private_postgres, circuit_clock)
    store.create_schema()
    yield store
    store.close()


@pytest.fixture
async def astore(
    private_postgres: PostgresServer, circuit_clock: FakeClock
) -> AsyncIterator[SQLKeyStore]:
    store = make_store(private_postgres, circuit_clock)
    await store.acreate_schema()
    yield store
    await store.aclose()


#: Longer than any bound under test: a call still running then is a hang, and fails the test.
HANG = 10.0


def timed(call: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """How long ``call`` took, and what it raised; a call that hangs fails the test."""
    outcome: list[tuple[float, BaseException | None]] = []

    def run() -> None:
        start = time.monotonic()
        try:
            call()
        except Exception as exc:
            outcome.append((time.monotonic() - start, exc))
        else:
            outcome.append((time.monotonic() - start, None))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    if not outcome:
        pytest.fail(f"the call still waited after {HANG} s: it hangs")
    return outcome[0]


async def atimed(call: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """See :func:`timed`."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(HANG):
            await call()
    except TimeoutError:
        pytest.fail(f"the call still waited after {HANG} s: it hangs")
    except Exception as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def test_a_pooled_connection_to_a_hung_server_fails_within_the_statement_timeout(
    store: SQLKeyStore, frozen: PostgresServer, circuit_clock: FakeClock
) -> None:
    record = sample_record()
    store.add(record)
    assert store.get(record.key_id) == record  # the pool now holds a live connection
    frozen.freeze()
    for _ in range(3):
        took, error = timed(lambda: store.get(record.key_id))
        assert isinstance(error, StorageError)
        assert not isinstance(error, CircuitOpenError)
        assert TIMEOUT * 0.9 <= took <= TIMEOUT + SLACK
    # Three failures in a row: the circuit is open, and calls fail without touching the server.
    took, error = timed(lambda: store.get(record.key_id))
    assert isinstance(error, CircuitOpenError)
    assert error.retry_after == pytest.approx(2.0)
    assert took < 0.05
    assert store.circuit is not None
    assert store.circuit.state == "open"

    frozen.thaw()
    circuit_clock.advance(2.0)
    assert store.get(record.key_id) == record  # the probe finds the server back
    assert store.circuit.state == "closed"
    assert store.get(record.key_id) == record


def test_a_new_connection_to_a_hung_server_fails_within_the_connect_timeout(
    private_postgres: PostgresServer, frozen: PostgresServer, circuit_clock: FakeClock
) -> None:
    store = make_store(private_postgres, circuit_clock)
    try:
        frozen.freeze()
        took, error = timed(lambda: store.get("AAAAAAAAAAAA"))
        assert isinstance(error, StorageError)
        assert "timeout" in str(error)
        assert TIMEOUT * 0.9 <= took <= TIMEOUT + SLACK
        frozen.thaw()
        assert store.get("AAAAAAAAAAAA") is None
    finally:
        store.close()


def test_waiting_for_a_busy_pool_is_bounded_and_does_not_open_the_circuit(
    private_postgres: PostgresServer, frozen: PostgresServer, circuit_clock: FakeClock
) -> None:
    store = make_store(
        private_postgres,
        circuit_clock,
        statement_timeout=2 * TIMEOUT,  # the one connection stays busy past the pool wait
        engine_options={"pool_size": 1, "max_overflow": 0},
    )
    try:
        store.create_schema()
        assert store.get("AAAAAAAAAAAA") is None
        frozen.freeze()
        holding: list[tuple[float, BaseException | None]] = []
        holder = threading.Thread(target=lambda: holding.append(timed(lambda: store.get("x"))))
        holder.daemon = True
        holder.start()
        # The holder has the only connection (it is stuck in its query) for up to TIMEOUT.
        deadline = time.monotonic() + TIMEOUT / 2
        while store.engine.pool.checkedout() == 0 and time.monotonic() < deadline:
            time.sleep(0.005)  # waiting for the other thread to check out, not for the server
        took, error = timed(lambda: store.get("AAAAAAAAAAAA"))
        holder.join()
        assert isinstance(error, StorageError)
        assert "TimeoutError" in str(error)  # SQLAlchemy's pool timeout
        assert took <= TIMEOUT + SLACK
        assert holding[0][0] <= 2 * TIMEOUT + SLACK
        assert isinstance(holding[0][1], StorageError)
        assert store.circuit is not None
        assert store.circuit.state == "closed"  # one real failure, one wait: not an outage
    finally:
        frozen.thaw()
        store.close()


def test_the_server_comes_back_without_a_restart(
    store: SQLKeyStore, frozen: PostgresServer, circuit_clock: FakeClock
) -> None:
    """Connections cut at their deadline are dropped from the pool, never reused."""
    record = sample_record()
    store.add(record)
    results: list[tuple[float, BaseException | None]] = []
    threads = [
        threading.Thread(target=lambda: results.append(timed(lambda: store.get(record.key_id))))
        for _ in range(4)
    ]
    frozen.freeze()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(took <= TIMEOUT + SLACK for took, _ in results)
    assert all(isinstance(error, StorageError) for _, error in results)
    frozen.thaw()
    circuit_clock.advance(2.0)
    for _ in range(10):
        assert store.get(record.key_id) == record
    assert store.engine.pool.checkedout() == 0


@pytest.mark.anyio
async def test_async_calls_to_a_hung_server_end_within_their_bounds(
    astore: SQLKeyStore, frozen: PostgresServer, circuit_clock: FakeClock
) -> None:
    record = sample_record()
    await astore.aadd(record)
    assert await astore.aget(record.key_id) == record
    frozen.freeze()
    # A pooled connection (its query is cut), then new ones (their connect gives up).
    outcomes = await asyncio.gather(*(atimed(lambda: astore.aget(record.key_id)) for _ in range(3)))
    for took, error in outcomes:
        assert isinstance(error, StorageError)
        assert took <= TIMEOUT + SLACK
    took, error = await atimed(lambda: astore.aget(record.key_id))
    assert isinstance(error, CircuitOpenError)
    assert took < 0.05
    frozen.thaw()
    circuit_clock.advance(2.0)
    assert await astore.aget(record.key_id) == record
    assert await astore.aget(record.key_id) == record


def test_a_cached_key_is_served_stale_during_an_outage_within_the_bound(
    store: SQLKeyStore, frozen: PostgresServer
) -> None:
    clock = FakeClock()
    cache = CachedKeyStore(store, ttl=5.0, stale_ttl=30.0, clock=clock.monotonic)
    manager = KeyManager(cache, clock=clock, last_used=None)
    issued = manager.create("acme")
    assert manager.authenticate(issued.token)
    clock.advance(6.0)  # past the TTL: the next request asks the store
    frozen.freeze()
    took, _ = timed(lambda: manager.authenticate(issued.token))
    assert manager.authenticate(issued.token)  # served from the stale entry
    assert took <= TIMEOUT + SLACK
    unknown = "sk_live_M65wXtYRmqlf_YvcmInz8IPd6wyHrsvMXo8eaDATs2aRs2o7KnQ"
    denial = manager.authenticate(unknown)
    assert not denial
    assert denial.reason.value == "store_unavailable"  # type: ignore[union-attr]
    clock.advance(30.0)  # beyond the bound: no longer served
    denial = manager.authenticate(issued.token)
    assert not denial
    assert denial.reason.value == "store_unavailable"  # type: ignore[union-attr]
