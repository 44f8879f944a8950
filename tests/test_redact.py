"""``RedactKeys``: keys taken out of other libraries' log records, the records still usable."""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    with pytest.raises(TypeError, match="collection of names"):
        RedactKeys(header_names="x-api-key")
    for bad_header in ([""], ["x key"], [None]):
        with pytest.raises(ValueError, match="not an HTTP header name"):
            RedactKeys(header_names=bad_header)  # type: ignore[list-item]


def test_repr_names_the_settings() -> None:
    assert repr(RedactKeys(query_param_names=["b", "A"], header_names=["X-Key"])) == (
        f"RedactKeys(key_format={KeyFormat()!r}, query_param_names=['a', 'b'], "
        "header_names=['x-key'])"
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


def _raise(exc: Exception) -> None:
    raise exc


def _leaks(text: str, secret: str = SECRET) -> list[str]:
    """The runs of 8 characters of ``secret`` found in ``text``."""
    return [secret[i : i + 8] for i in range(len(secret) - 7) if secret[i : i + 8] in text]


HEAD = f"{PREFIX}_{ENV}_{KEY_ID}_"
#: The token cut short (a character of the checksum, all of it, into the secret) and
#: lengthened (characters a client or a copy-paste added).
MANGLED = {
    **{f"cut-{n}": TOKEN[:-n] for n in (1, 2, 6, 7, 12, 24, 37)},
    "extended-base62": TOKEN + "x7Q",
    "extended-other": TOKEN + "-x.y",
    "doubled": TOKEN + TOKEN,
}
CONTEXTS = {
    "path": "GET /invoices/{} HTTP/1.1",
    "query-key-param": "GET /invoices?api_key={}&page=2 HTTP/1.1",
    "query-other-param": "GET /invoices?q={}&page=2 HTTP/1.1",
    "bare-query-string": "{}",
    "bearer": "Authorization: Bearer {}",
    "api-key-header": "(b'x-api-key', b'{}')",
    "bytes-repr": "'raw_path': b'/keys/{}/usage'",
    "json": '{{"token": "{}"}}',
}


@pytest.mark.parametrize("context", sorted(CONTEXTS))
@pytest.mark.parametrize("mangled", sorted(MANGLED))
def test_a_key_however_cut_or_lengthened_keeps_only_its_key_id(context: str, mangled: str) -> None:
    text = CONTEXTS[context].format(MANGLED[mangled])
    redacted = RedactKeys().redact(text)
    assert _leaks(redacted) == [], redacted
    assert KEY_ID in redacted or "[redacted]" in redacted
    assert RedactKeys().redact(redacted) == redacted  # a second filter changes nothing


@given(
    cut=st.integers(min_value=1, max_value=len(SECRET) + 6),
    tail=st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
    before=st.sampled_from(["", "/", "=", "x", "_", "%20"]),
)
def test_no_run_of_the_secret_survives(cut: int, tail: str, before: str) -> None:
    text = f"GET /a{before}{TOKEN[: len(HEAD) + cut]}{tail} done"
    redacted = RedactKeys().redact(text)
    assert _leaks(redacted) == []
    assert f"{HEAD}[redacted]" in redacted
    assert redacted.endswith(" done")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f"GET /x/{PREFIX}%5F{ENV}%5f{KEY_ID}%5F{SECRET}",
            f"GET /x/{PREFIX}%5F{ENV}%5f{KEY_ID}%5F[redacted]",
            id="percent-encoded-separators",
        ),
        pytest.param(
            "Authorization: Basic dXNlcjpzM2NyZXQ=",
            "Authorization: Basic [redacted]",
            id="basic-credentials",
        ),
        pytest.param(
            "headers=[(b'authorization', b'Basic dXNlcjpzM2NyZXQ='), (b'x-api-key', b'abc')]",
            "headers=[(b'authorization', b'Basic [redacted]'), (b'x-api-key', b'[redacted]')]",
            id="asgi-header-list",
        ),
        pytest.param(
            "{'HTTP_AUTHORIZATION': 'Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln', 'PATH_INFO': '/'}",
            "{'HTTP_AUTHORIZATION': 'Bearer [redacted]', 'PATH_INFO': '/'}",
            id="wsgi-environ",
        ),
        pytest.param(
            '{"X-Api-Key": "legacy-7.s3cret", "Accept": "*/*"}',
            '{"X-Api-Key": "[redacted]", "Accept": "*/*"}',
            id="json-headers",
        ),
        pytest.param("sent with bearer abc.def", "sent with bearer [redacted]", id="bearer-word"),
        pytest.param(
            f"X-API-Key: {TOKEN}",
            f"X-API-Key: {KEPT}",
            id="a-key-in-a-header-keeps-its-key-id",
        ),
        pytest.param(
            "GET /cb?next=/invoices?api_key=legacy-7.s3cret HTTP/1.1",
            "GET /cb?next=/invoices?api_key=[redacted] HTTP/1.1",
            id="a-parameter-inside-another-value",
        ),
        pytest.param("page=1&token=abc", "page=1&token=[redacted]", id="bare-query-string"),
        pytest.param("b'key=abc&x=1'", "b'key=[redacted]&x=1'", id="query-string-bytes"),
        pytest.param(
            "GET /?api_key=abc[redacted] HTTP/1.1",
            "GET /?api_key=[redacted] HTTP/1.1",
            id="a-value-posing-as-redacted",
        ),
        pytest.param(
            "authorization failed for 10.0.0.7; the X-API-Key header is missing",
            "authorization failed for 10.0.0.7; the X-API-Key header is missing",
            id="header-names-in-prose-kept",
        ),
        pytest.param(
            "GET /files/report.pdf?v=1.2 from api.example.com",
            "GET /files/report.pdf?v=1.2 from api.example.com",
            id="dotted-names-kept",
        ),
    ],
)
def test_credentials_in_other_places(text: str, expected: str) -> None:
    assert RedactKeys().redact(text) == expected
    assert RedactKeys().redact(expected) == expected


def test_split_keys_keep_their_identifier_where_a_credential_is_expected() -> None:
    redact = RedactKeys(KeyFormat(accept_split_keys=True))
    assert redact.redact("GET /x?api_key=legacy-7.s3cret HTTP/1.1") == (
        "GET /x?api_key=legacy-7.[redacted] HTTP/1.1"
    )
    assert redact.redact("X-API-Key: legacy-7.s3cret") == "X-API-Key: legacy-7.[redacted]"
    assert redact.redact("Authorization: Bearer legacy-7.s3cret") == (
        "Authorization: Bearer legacy-7.[redacted]"
    )
    # Elsewhere a split key looks like any dotted name, and is left alone.
    assert redact.redact("GET /files/legacy-7.s3cret") == "GET /files/legacy-7.s3cret"
    # Without split keys, the whole value goes.
    assert RedactKeys().redact("X-API-Key: legacy-7.s3cret") == "X-API-Key: [redacted]"


def test_another_api_key_header() -> None:
    redact = RedactKeys(header_names=["X-Client-Key"])
    assert redact.redact("x-client-key: abc") == "x-client-key: [redacted]"
    assert redact.redact("X-API-Key: abc") == "X-API-Key: abc"  # the names replace the default


def test_gunicorn_access_atoms_stay_gunicorn_atoms() -> None:
    from gunicorn.glogging import SafeAtoms  # the mapping gunicorn's access log formats

    atoms = SafeAtoms(
        {
            "h": "10.0.0.7",
            "r": f"GET /invoices?api_key={TOKEN[:-1]} HTTP/1.1",
            "u": TOKEN,  # the user name of Basic credentials, which gunicorn decodes
            "{authorization}i": "Basic dXNlcjpzM2NyZXQ=",
            "{http_x_api_key}e": "legacy-7.s3cret",
        }
    )
    fmt = '%(h)s "%(r)s" %(u)s %({Authorization}i)s %({x-forwarded-for}i)s %({http_x_api_key}e)s'
    record = _record(fmt, atoms)
    RedactKeys().filter(record)
    assert record.args is atoms  # the same mapping: it answers "-" for a missing atom
    assert record.getMessage() == (
        f'10.0.0.7 "GET /invoices?api_key={KEPT} HTTP/1.1" {KEPT} Basic [redacted] - [redacted]'
    )


def test_a_traceback_that_quotes_a_key(server_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = server_log
    logger.addFilter(RedactKeys())
    try:
        _raise(ValueError(f"no such invoice: /invoices/{TOKEN}"))
    except ValueError:
        logger.exception("Exception in ASGI application")
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text
    assert f"ValueError: no such invoice: /invoices/{KEPT}" in text
    assert _leaks(text) == []


def test_a_traceback_without_a_key_is_left_to_the_formatter() -> None:
    try:
        _raise(ValueError("nothing secret"))
    except ValueError:
        record = logging.LogRecord("s", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    RedactKeys().filter(record)
    assert record.exc_info is not None
    assert record.exc_text is None


def test_a_stack_that_quotes_a_key_is_redacted() -> None:
    record = _record("boom")
    record.stack_info = f'Stack (most recent call last):\n  File "x.py", line 1, in {TOKEN}'
    RedactKeys().filter(record)
    assert record.stack_info is not None
    assert _leaks(record.stack_info) == []


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("x=" + "a(" * 32_000 + "key", id="one-value-of-many-brackets"),
        pytest.param("?a=" * 21_000 + "key", id="many-parameters"),
        pytest.param("Bearer " * 9_000 + "key=", id="many-bearers"),
        pytest.param(TOKEN * 1_300, id="keys-run-together"),
    ],
)
def test_a_long_hostile_line_takes_linear_time(text: str) -> None:
    # A client writes the request line a server logs. At 64 KB a quadratic search takes
    # tens of seconds here; a linear one takes milliseconds.
    start = time.perf_counter()
    redacted = RedactKeys().redact(text)
    assert time.perf_counter() - start < 2.0
    assert _leaks(redacted) == []
