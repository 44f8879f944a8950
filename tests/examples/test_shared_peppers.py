"""The CLI and the example apps read KEYGUARD_PEPPERS the same way, through the library's
``HmacSecretHasher.from_environment``: a key the CLI makes works in the app, and an app
that lacks the key's pepper refuses it and says why in its log."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator

import pytest

from examples import _billing
from keyguard import HmacSecretHasher, cli, parse_key
from keyguard._hashing import stored_hash_warnings
from keyguard.stores.sql import SQLKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import Request, wsgi_call
from tests.examples.conftest import Load, MakeKey

OLD = base64.b64encode(b"o" * 32).decode()
NEW = base64.b64encode(b"n" * 32).decode()


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    saved = stored_hash_warnings.clock
    stored_hash_warnings.clock = FakeClock().monotonic
    stored_hash_warnings.reset()
    yield
    stored_hash_warnings.clock = saved
    stored_hash_warnings.reset()


def _stored_hash(database_url: str, token: str) -> str:
    store = SQLKeyStore(database_url)
    try:
        record = store.get(parse_key(token).key_id)
    finally:
        store.close()
    assert record is not None
    return record.secret_hash


def _get(app: object, token: str) -> int:
    request = Request(headers=[(b"authorization", f"Bearer {token}".encode())])
    return wsgi_call(app, request).status  # type: ignore[arg-type]


def test_the_cli_and_the_app_hash_alike(
    load_example: Load, make_key: MakeKey, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGUARD_PEPPERS", f"v2:{NEW},v1:{OLD}")
    token = make_key("billing:read")
    stored = _stored_hash(database_url, token)
    assert stored.startswith("hmac-sha256$v2$")
    # The three readers of the variable: the command, the example apps, the library.
    out = io.StringIO()
    assert cli.main(["hash", token], stdout=out, stderr=io.StringIO()) == 0
    secret = parse_key(token).secret
    assert out.getvalue().strip() == stored
    assert _billing.hasher().hash(secret) == stored
    assert HmacSecretHasher.from_environment().hash(secret) == stored
    assert _get(load_example("flask_app").app.wsgi_app, token) == 200


def test_an_app_without_the_keys_pepper_refuses_it_and_warns_once(
    load_example: Load,
    make_key: MakeKey,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KEYGUARD_PEPPERS", f"v2:{NEW},v1:{OLD}")
    token = make_key("billing:read")
    monkeypatch.setenv("KEYGUARD_PEPPERS", f"v1:{OLD}")  # the app was deployed with the old one
    app = load_example("flask_app").app.wsgi_app
    caplog.set_level(logging.INFO)
    caplog.clear()  # the example's own warnings at start (its OAuth signing key)
    assert [_get(app, token) for _ in range(4)] == [401] * 4
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    key_id = parse_key(token).key_id
    assert (
        warned[0]
        .getMessage()
        .startswith(
            f"key {key_id} is refused: its stored hash was made with pepper version 'v2', "
            f"which this app does not have (it has 'v1')"
        )
    )
    stored = _stored_hash(database_url, token)
    for record in caplog.records:
        text = record.getMessage()
        for secret in (NEW, OLD, parse_key(token).secret, stored, stored.split("$")[-1]):
            assert secret not in text, record.name


def test_a_malformed_variable_stops_the_cli_and_the_app_alike(
    load_example: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGUARD_PEPPERS", f"v1:{OLD},v1:{NEW}")
    err = io.StringIO()
    assert cli.main(["keys", "list"], stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue().strip().endswith("KEYGUARD_PEPPERS: pepper version 'v1' is given twice")
    with pytest.raises(ValueError, match="KEYGUARD_PEPPERS: pepper version 'v1' is given twice"):
        load_example("flask_app")
    assert OLD not in err.getvalue()
    assert NEW not in err.getvalue()
