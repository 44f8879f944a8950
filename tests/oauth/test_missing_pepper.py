"""An OAuth client whose secret was hashed with a pepper version the server lacks is
refused like a wrong secret at the token endpoint, and warned about once, as a key is."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from keyguard import HmacSecretHasher, KeyManager, MemoryRateLimiter
from keyguard._hashing import stored_hash_warnings
from keyguard.oauth import AuthorizationServer
from keyguard.oauth.wsgi import AuthorizationServerWSGIApp
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import wsgi_call
from tests.oauth._harness import AUDIENCE, ISSUER, KEYS, basic, token_request


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    saved = stored_hash_warnings.clock
    stored_hash_warnings.clock = FakeClock().monotonic
    stored_hash_warnings.reset()
    yield
    stored_hash_warnings.clock = saved
    stored_hash_warnings.reset()


def test_a_client_of_a_missing_pepper_is_refused_and_warned_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryKeyStore()
    old = KeyManager(store, clock=clock, hasher=HmacSecretHasher({"v1": b"o" * 32}))
    client = old.create_client("acme", "billing sync", scopes=["billing:read"])
    manager = KeyManager(store, clock=clock, hasher=HmacSecretHasher({"v2": b"n" * 32}))
    server = AuthorizationServer(
        manager,
        KEYS,
        issuer=ISSUER,
        audiences=[AUDIENCE],
        limiter=MemoryRateLimiter(clock=clock.monotonic),
    )
    app = AuthorizationServerWSGIApp(server)
    caplog.set_level(logging.INFO)
    request = token_request(
        {"grant_type": "client_credentials"},
        auth=basic(client.key_id, client.token),
        client="10.0.0.1",
    )
    for _ in range(3):
        reply = wsgi_call(app, request)
        assert reply.status == 401
        assert b"invalid_client" in reply.body
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.args[:2] for r in warned] == [(client.key_id, "v1")]  # type: ignore[index]
    secret_hash = store.get(client.key_id).secret_hash  # type: ignore[union-attr]
    for record in caplog.records:
        assert client.token.split("_")[3] not in record.getMessage()
        assert secret_hash.split("$")[-1] not in record.getMessage()
