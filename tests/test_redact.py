"""``RedactKeys``: keys taken out of other libraries' log records, the records still usable."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from keyguard import KeyFormat, KeyManager, RedactKeys
from keyguard.stores import MemoryKeyStore

TOKEN = KeyManager(MemoryKeyStore()).create("acme").token
PREFIX, ENV, KEY_ID, _ = TOKEN.split("_")
KEPT = f"{PREFIX}_{ENV}_{KEY_ID}_[redacted]"
SECRET = TOKEN[len(PREFIX) + len(ENV) + len(KEY_ID) + 3 :]


def _record(msg: Any, args: Any = ()) -> logging.LogRecord:
    return logging.LogRecord("server", logging.INFO, __file__, 1, msg, args, None)


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        pytest.param(
            '%s - "%s %s HTTP/%s" %d',
            ("10.0.0.7:5123", "GET", f"/invoices?api_key={TOKEN}", "1.1", 400),
            f'10.0.0.7:5123 - "GET /invoices?api_key={KEPT} HTTP/1.1" 400',
            id="uvicorn",
        ),
        pytest.param(
            '%(h)s "%(r)s" %(s)s',
            {"h": "10.0.0.7", "r": f"GET /invoices?page=2&token={TOKEN} HTTP/1.1", "s": "400"},
            f'10.0.0.7 "GET /invoices?page=2&token={KEPT} HTTP/1.1" 400',
            id="gunicorn",
        ),
        pytest.param(
            '10.0.0.7 - - [01/Dec/2026 10:00:00] "%s" %s %s\n',
            (f"GET /invoices?key={TOKEN} HTTP/1.1", "400", "-"),
            f'10.0.0.7 - - [01/Dec/2026 10:00:00] "GET /invoices?key={KEPT} HTTP/1.1" 400 -\n',
            id="werkzeug",
        ),
        pytest.param(
            f"GET /invoices?api_key={TOKEN}",
            (),
            f"GET /invoices?api_key={KEPT}",
            id="already-formatted",
        ),
        pytest.param(
            f"sent Authorization: Bearer {TOKEN} to %s",
            ("billing",),
            f"sent Authorization: Bearer {KEPT} to billing",
            id="a-key-in-a-format",
        ),
        pytest.param(
            "GET %s",
            (f"/keys/{TOKEN}/usage",),
            f"GET /keys/{KEPT}/usage",
            id="a-key-in-the-path",
        ),
        pytest.param(
            "GET %s",
            ("/invoices?API_KEY=legacy-7.s3cret&Api%5FKey=x&access%5ftoken=y",),
            "GET /invoices?API_KEY=[redacted]&Api%5FKey=[redacted]&access%5ftoken=[redacted]",
            id="names-in-any-case-and-encoded",
        ),
        pytest.param(
            "GET %s",
            ("/search?q=key&monkey=1&keys=2&api_key=&page=3",),
            "GET /search?q=key&monkey=1&keys=2&api_key=&page=3",
            id="other-parameters-kept",
        ),
        pytest.param(
            "GET %s%s",
            ("/invoices?apikey=abc%20def", " done"),
            "GET /invoices?apikey=[redacted] done",
            id="encoded-value",
        ),
    ],
)
def test_records_of_each_shape(msg: str, args: Any, expected: str) -> None:
    record = _record(msg, args)
    assert RedactKeys().filter(record) is True
    message = record.getMessage()
    assert message == expected
    assert SECRET not in message


def test_argument_types_are_kept_for_formatters_that_unpack_them() -> None:
    record = _record('%s - "%s %s HTTP/%s" %d', ("a", "GET", f"/?token={TOKEN}", "1.1", 400))
    RedactKeys().filter(record)
    assert isinstance(record.args, tuple)
    assert record.args[2:] == (f"/?token={KEPT}", "1.1", 400)


def test_a_key_of_another_format_and_other_names() -> None:
    fmt = KeyFormat(prefix="acme", environments=("prod",))
    token = KeyManager(MemoryKeyStore(), key_format=fmt).create("acme").token
    redact = RedactKeys(fmt, query_param_names=["credential"])
    assert redact.redact(f"/x?credential=abc&api_key=def {TOKEN} {token}") == (
        f"/x?credential=[redacted]&api_key=def {TOKEN} {token.rsplit('_', 1)[0]}_[redacted]"
    )


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        pytest.param(ValueError(f"boom {TOKEN}"), (), f"boom {KEPT}", id="a-message-not-a-string"),
        pytest.param(
            "GET %s",
            ([f"/?key={TOKEN}"],),
            f"GET ['/?key={KEPT}']",
            id="inside-a-list",
        ),
        pytest.param(
            "GET /invoices?api_key=%s HTTP/1.1",
            ("legacy-7.s3cret",),
            "GET /invoices?api_key=[redacted] HTTP/1.1",
            id="split-between-format-and-argument",
        ),
    ],
)
def test_a_key_left_in_the_text_makes_the_record_its_redacted_text(
    msg: Any, args: Any, expected: str
) -> None:
    record = _record(msg, args)
    RedactKeys().filter(record)
    assert (record.msg, record.args) == (expected, ())


def test_a_record_that_cannot_be_formatted_passes_with_its_arguments_redacted() -> None:
    record = _record("%s %s", (f"?key={TOKEN}",))  # one argument short
    assert RedactKeys().filter(record) is True
    with pytest.raises(TypeError):
        record.getMessage()  # the handler reports it, as it would without the filter
    assert (record.msg, record.args) == ("%s %s", (f"?key={KEPT}",))


def test_bad_names_are_refused() -> None:
    with pytest.raises(TypeError, match="collection of names"):
        RedactKeys(query_param_names="api_key")
    for bad in ([""], [None]):
        with pytest.raises(ValueError, match="non-empty string"):
            RedactKeys(query_param_names=bad)  # type: ignore[list-item]


def test_repr_names_the_settings() -> None:
    assert repr(RedactKeys(query_param_names=["b", "A"])) == (
        f"RedactKeys(key_format={KeyFormat()!r}, query_param_names=['a', 'b'])"
    )


@pytest.fixture
def server_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    logger = logging.getLogger("tests.redact.server")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()


def test_on_a_logger_every_handler_writes_the_redacted_line(
    server_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = server_log
    logger.addFilter(RedactKeys())
    logger.info('"%s" %s', f"GET /invoices?api_key={TOKEN} HTTP/1.1", 400)
    logger.info(f"bearer {TOKEN}")
    assert stream.getvalue() == f'"GET /invoices?api_key={KEPT} HTTP/1.1" 400\nbearer {KEPT}\n'
