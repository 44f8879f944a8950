"""CircuitBreaker: opens after failures in a row, fails fast, lets one probe through, closes."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest

from keyguard import CircuitBreaker, CircuitOpenError, KeyManager, StorageError
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_timeout=2.0, name="db", clock=clock.monotonic)


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.failed(breaker.admit())


def test_a_closed_breaker_lets_calls_through(breaker: CircuitBreaker) -> None:
    assert breaker.state == "closed"
    assert breaker.admit() is False  # not a probe
    breaker.succeeded(probe=False)
    assert breaker.state == "closed"


def test_failures_in_a_row_open_it_and_a_success_in_between_resets_the_count(
    breaker: CircuitBreaker,
) -> None:
    fail(breaker, 2)
    breaker.succeeded(breaker.admit())
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker)
    assert breaker.state == "open"


def test_an_open_breaker_fails_fast_with_the_wait_until_the_probe(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.advance(0.5)
    with pytest.raises(CircuitOpenError, match=r"db: not called for 1\.5 s") as caught:
        breaker.admit()
    assert caught.value.retry_after == pytest.approx(1.5)
    assert isinstance(caught.value, StorageError)


def test_after_the_reset_timeout_exactly_one_call_probes(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.advance(2.0)
    assert breaker.admit() is True
    assert breaker.state == "half-open"
    with pytest.raises(CircuitOpenError):
        breaker.admit()  # another call while the probe runs
    breaker.succeeded(probe=True)
    assert breaker.state == "closed"
    assert breaker.admit() is False


def test_a_failed_probe_opens_it_again_for_the_whole_timeout(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.advance(2.0)
    breaker.failed(breaker.admit())
    assert breaker.state == "open"
    clock.advance(1.9)
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    clock.advance(0.1)
    assert breaker.admit() is True


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(lambda b: b.abandoned(probe=True), id="abandoned"),
        pytest.param(lambda b: None, id="never-reported"),
    ],
)
def test_a_probe_that_proves_nothing_hands_the_probe_on(
    breaker: CircuitBreaker, clock: FakeClock, outcome: Any
) -> None:
    fail(breaker, 3)
    clock.advance(2.0)
    assert breaker.admit() is True
    outcome(breaker)
    if breaker.state == "half-open":  # never reported: the next caller waits out its lease
        with pytest.raises(CircuitOpenError):
            breaker.admit()
        clock.advance(2.0)
    assert breaker.admit() is True


def test_outcomes_of_calls_made_before_it_opened_change_nothing(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    late = breaker.admit()  # a slow call, started while closed
    fail(breaker, 3)
    breaker.succeeded(late)
    assert breaker.state == "open"
    clock.advance(2.0)
    probe = breaker.admit()
    breaker.failed(late)
    breaker.abandoned(late)
    assert breaker.state == "half-open"
    breaker.succeeded(probe)
    assert breaker.state == "closed"


def test_many_threads_one_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.advance(2.0)
    probes: list[bool] = []
    refused: list[CircuitOpenError] = []
    start = threading.Barrier(8)

    def call() -> None:
        start.wait()
        try:
            probes.append(breaker.admit())
        except CircuitOpenError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert probes == [True]
    assert len(refused) == 7


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"failure_threshold": 0}, ValueError, id="zero-threshold"),
        pytest.param({"failure_threshold": 1.5}, TypeError, id="fractional-threshold"),
        pytest.param({"failure_threshold": True}, TypeError, id="bool-threshold"),
        pytest.param({"reset_timeout": 0}, ValueError, id="zero-timeout"),
        pytest.param({"reset_timeout": float("nan")}, ValueError, id="nan-timeout"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        CircuitBreaker(**options)


def test_the_error_pickles_with_its_wait() -> None:
    error = pickle.loads(pickle.dumps(CircuitOpenError("db: open", retry_after=1.25)))  # noqa: S301 (our own bytes)
    assert isinstance(error, CircuitOpenError)
    assert (str(error), error.retry_after) == ("db: open", 1.25)


class RefusingStore(MemoryKeyStore):
    """A store behind an open circuit: every lookup is refused at once."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        super().__init__()
        self.breaker = breaker

    def get(self, key_id: str) -> Any:
        self.breaker.admit()
        return super().get(key_id)


def test_a_request_refused_by_an_open_circuit_is_a_503_with_the_wait(
    breaker: CircuitBreaker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = KeyManager(RefusingStore(breaker), clock=clock, last_used=None)
    issued = manager.create("acme")
    caplog.set_level("INFO", logger="keyguard")
    fail(breaker, 3)
    assert [r.getMessage() for r in caplog.records] == [
        "db failed 3 times in a row; not called for 2.0 s (circuit open)"
    ]
    caplog.clear()
    clock.advance(0.7)
    for _ in range(3):
        denial = manager.authenticate(issued.token)
        assert not denial
        assert denial.reason.value == "store_unavailable"  # type: ignore[union-attr]
        assert denial.retry_after == pytest.approx(1.3)  # type: ignore[union-attr]
    assert caplog.records == []  # refusals are not logged one by one
    clock.advance(1.3)
    breaker.failed(breaker.admit())  # a probe that fails
    clock.advance(2.0)
    breaker.succeeded(breaker.admit())  # one that succeeds
    assert [r.getMessage() for r in caplog.records] == [
        "db still fails; not called for another 2.0 s",
        "db answers again; circuit closed",
    ]
