"""keyguard's own log hygiene: key shapes out of logged paths, repeated failures throttled."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard import KeyFormat, StorageError, generate_key
from keyguard._logsafe import FailureLog, KeyWarnings, redact_key_shapes
from keyguard.testing import FakeClock

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize(
    ("fmt", "environment"),
    [
        pytest.param(KeyFormat(), "live", id="default"),
        pytest.param(KeyFormat(), "test", id="test-environment"),
        pytest.param(KeyFormat(prefix="acme2", environments=("prod",)), "prod", id="other-format"),
    ],
)
@given(cut=st.integers(min_value=1, max_value=38), tail=st.text(alphabet=BASE62, max_size=10))
def test_any_key_shape_keeps_only_its_key_id(
    fmt: KeyFormat, environment: str, cut: int, tail: str
) -> None:
    key = generate_key(fmt, environment)
    head = key.token[: len(key.token) - 38]
    mangled = key.token[: len(head) + cut] + tail
    redacted = redact_key_shapes(f"/invoices/{mangled}/usage")
    assert redacted == f"/invoices/{head}[redacted]/usage"
    assert key.key_id in redacted


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/invoices/42", id="plain"),
        pytest.param("/files/my_report_2024.pdf", id="underscores"),
        pytest.param("/a/sk_live_short_abc", id="key-id-too-short"),
        pytest.param("/a/sk_live_M65wXtYRmqlf_", id="no-secret"),
    ],
)
def test_paths_without_a_secret_are_kept(path: str) -> None:
    assert redact_key_shapes(path) == path


def test_a_key_pasted_twice_or_percent_encoded() -> None:
    token = generate_key().token
    head = token[:-38]
    assert redact_key_shapes(f"/{token}{token}") == f"/{head}[redacted]"
    encoded = token.replace("_", "%5F")
    assert redact_key_shapes(f"/{encoded}") == f"/{encoded[:-38]}[redacted]"


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, Captured]]:
    logger = logging.getLogger("tests.logsafe")
    handler = Captured()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


def _raise(exc: Exception) -> None:
    raise exc


def _failure(cause: Exception) -> StorageError:
    """A StorageError raised from ``cause``, as a driver's failure reaches the flow."""
    try:
        _raise(cause)
    except Exception as exc:
        failure = StorageError("GetKey failed")
        failure.__cause__ = exc
        return failure
    raise AssertionError("not raised")  # pragma: no cover


def test_one_traceback_per_kind_and_interval_then_a_count(
    captured: tuple[logging.Logger, Captured], clock: FakeClock
) -> None:
    logger, handler = captured
    failures = FailureLog(logger, interval=60, clock=clock.monotonic)
    for _ in range(500):
        failures.failed("key store lookup failed", "M65wXtYRmqlf", _failure(ConnectionError()))
        clock.advance(0.1)
    assert len(handler.records) == 1
    first = handler.records[0]
    assert first.exc_info is not None
    assert first.levelno == logging.ERROR
    assert first.getMessage() == (
        "key store lookup failed for key M65wXtYRmqlf (StorageError<-ConnectionError); "
        "further failures of this kind in the next 60 s are counted"
    )
    clock.advance(20)  # 70 s after the first
    failures.failed("key store lookup failed", "other", _failure(ConnectionError()))
    count, second = handler.records[1:]
    assert count.getMessage() == (
        "key store lookup failed (StorageError<-ConnectionError): 499 more failures of this "
        "kind in the last 70 s, not logged one by one"
    )
    assert count.exc_info is None
    assert second.exc_info is not None
    clock.advance(59)
    failures.failed("key store lookup failed", "other", _failure(ConnectionError()))
    assert len(handler.records) == 3


def test_each_kind_gets_its_own_traceback(
    captured: tuple[logging.Logger, Captured], clock: FakeClock
) -> None:
    logger, handler = captured
    failures = FailureLog(logger, clock=clock.monotonic)
    for _ in range(3):
        failures.failed("key store lookup failed", "a", _failure(ConnectionError()))
        failures.failed("key store lookup failed", "a", _failure(TimeoutError()))
        failures.failed("key store lookup failed", "a", StorageError("no cause"))
        failures.failed("last-used write failed", None, _failure(ConnectionError()))
    kinds = [r.getMessage().partition("(")[2].partition(")")[0] for r in handler.records]
    assert kinds == [
        "StorageError<-ConnectionError",
        "StorageError<-TimeoutError",
        "StorageError",
        "StorageError<-ConnectionError",
    ]
    assert handler.records[3].getMessage().startswith("last-used write failed (")


def test_a_driver_error_is_named_with_its_module(
    captured: tuple[logging.Logger, Captured], clock: FakeClock
) -> None:
    logger, handler = captured
    import sqlalchemy.exc

    error = sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError())
    FailureLog(logger, clock=clock.monotonic).failed("lookup", None, _failure(error))
    assert "(StorageError<-sqlalchemy.exc.OperationalError)" in handler.records[0].getMessage()


def test_the_oldest_kind_is_forgotten_first(
    captured: tuple[logging.Logger, Captured], clock: FakeClock
) -> None:
    logger, handler = captured
    failures = FailureLog(logger, clock=clock.monotonic, max_kinds=2)
    for what in ("a", "b", "c", "a"):  # "a" was forgotten when "c" came: logged again
        failures.failed(what, None, StorageError())
    assert [r.getMessage()[0] for r in handler.records] == ["a", "b", "c", "a"]
    failures.failed("c", None, StorageError())
    assert len(handler.records) == 4


def test_a_warning_without_traceback_and_a_disabled_level(
    captured: tuple[logging.Logger, Captured], clock: FakeClock
) -> None:
    logger, handler = captured
    failures = FailureLog(logger, clock=clock.monotonic)
    failures.failed("busy", "k", StorageError(), level=logging.WARNING, with_traceback=False)
    assert [(r.levelno, r.exc_info) for r in handler.records] == [(logging.WARNING, None)]
    logger.setLevel(logging.ERROR)
    failures.failed("quiet", "k", StorageError(), level=logging.WARNING)
    logger.setLevel(logging.DEBUG)
    failures.failed("quiet", "k", StorageError(), level=logging.WARNING)
    assert len(handler.records) == 2  # nothing was counted while the level was off


def test_reset_logs_the_next_failure_in_full(
    captured: tuple[logging.Logger, Captured], clock: FakeClock
) -> None:
    logger, handler = captured
    failures = FailureLog(logger, clock=clock.monotonic)
    failures.failed("a", None, StorageError())
    failures.failed("a", None, StorageError())
    failures.reset()
    failures.failed("a", None, StorageError())
    assert len(handler.records) == 2
    assert repr(failures) == "FailureLog('tests.logsafe', interval=60.0)"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"interval": -1}, "interval", id="negative-interval"),
        pytest.param({"interval": True}, "interval", id="bool-interval"),
        pytest.param({"max_kinds": 0}, "max_kinds", id="no-kinds"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FailureLog(logging.getLogger("x"), **kwargs)  # type: ignore[arg-type]


def test_key_warnings_once_per_key_and_interval_then_a_count(
    captured: tuple[logging.Logger, Captured], clock: FakeClock
) -> None:
    logger, handler = captured
    warnings = KeyWarnings(logger, interval=300, clock=clock.monotonic)
    assert warnings.warn("M65wXtYRmqlf", "missing pepper", "key %s lacks %r", "M65wXtYRmqlf", "v1")
    for _ in range(40):
        clock.advance(7)  # 280 s in all: within the interval
        assert not warnings.warn("M65wXtYRmqlf", "missing pepper", "key %s lacks %r", "x", "v1")
    warnings.warn("M65wXtYRmqlf", "unknown hash", "key %s: other kind", "M65wXtYRmqlf")
    warnings.warn("AAAAAAAAAAAA", "missing pepper", "key %s lacks %r", "AAAAAAAAAAAA", "v1")
    assert [r.getMessage() for r in handler.records] == [
        "key M65wXtYRmqlf lacks 'v1'",
        "key M65wXtYRmqlf: other kind",
        "key AAAAAAAAAAAA lacks 'v1'",
    ]
    assert {r.levelno for r in handler.records} == {logging.WARNING}
    clock.advance(20)  # 300 s after the first
    assert warnings.warn("M65wXtYRmqlf", "missing pepper", "key %s lacks %r", "M65wXtYRmqlf", "v1")
    assert handler.records[-1].getMessage() == (
        "key M65wXtYRmqlf lacks 'v1'; 40 more times since the last warning"
    )


def test_key_warnings_forget_the_oldest_key_first(
    captured: tuple[logging.Logger, Captured], clock: FakeClock
) -> None:
    logger, handler = captured
    warnings = KeyWarnings(logger, interval=300, clock=clock.monotonic, max_keys=3)
    for key_id in ("k1", "k2", "k3", "k4"):
        assert warnings.warn(key_id, "kind", "key %s", key_id)
    assert len(warnings) == 3  # bounded: k1 was forgotten
    assert not warnings.warn("k4", "kind", "key %s", "k4")
    assert warnings.warn("k1", "kind", "key %s", "k1")  # forgotten, so logged again
    assert len(warnings) == 3
    assert [r.getMessage() for r in handler.records] == [
        "key k1",
        "key k2",
        "key k3",
        "key k4",
        "key k1",
    ]
    warnings.reset()
    assert len(warnings) == 0


def test_key_warnings_on_a_silenced_logger_cost_nothing(clock: FakeClock) -> None:
    logger = logging.getLogger("tests.logsafe.silenced")
    logger.setLevel(logging.ERROR)
    try:
        warnings = KeyWarnings(logger, clock=clock.monotonic)
        assert not warnings.warn("k1", "kind", "key %s", "k1")
        assert len(warnings) == 0
    finally:
        logger.setLevel(logging.NOTSET)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"interval": -1}, "interval", id="negative-interval"),
        pytest.param({"interval": "5"}, "interval", id="text-interval"),
        pytest.param({"max_keys": 0}, "max_keys", id="no-keys"),
        pytest.param({"max_keys": 2.5}, "max_keys", id="fractional-keys"),
    ],
)
def test_key_warnings_bad_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KeyWarnings(logging.getLogger("x"), **kwargs)  # type: ignore[arg-type]
