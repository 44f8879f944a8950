"""OAuth clients are records in the key store, with their own secret prefix."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keyguard import (
    AsyncKeyManager,
    DenialReason,
    KeyFormat,
    KeyManager,
    Principal,
    checksum,
    parse_key,
)
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._middleware_apps import Harness, with_key


@pytest.fixture
def manager(clock: FakeClock) -> KeyManager:
    return KeyManager(MemoryKeyStore(), clock=clock)


def test_a_client_is_a_record_with_a_cs_secret(manager: KeyManager) -> None:
    issued = manager.create_client("acme", "billing sync", scopes=["billing:read"])
    assert issued.token.startswith("cs_live_")
    parsed = parse_key(issued.token, KeyFormat(prefix="cs"))  # the checksum holds
    assert parsed.key_id == issued.key_id
    record = manager.get(issued.key_id)
    assert record.kind == "oauth_client"
    assert record.scopes == {"billing:read"}
    assert issued.token not in repr(record)
    assert parsed.secret not in record.secret_hash
    assert manager.create("acme").record.kind == "api_key"
    assert {r.kind for r in manager.list("acme")} == {"oauth_client", "api_key"}


def test_the_client_secret_prefix_is_configurable_and_not_the_key_prefix() -> None:
    manager = KeyManager(MemoryKeyStore(), client_secret_prefix="acmecs")
    assert manager.create_client("acme").token.startswith("acmecs_live_")
    with pytest.raises(ValueError, match="must differ"):
        KeyManager(MemoryKeyStore(), client_secret_prefix="sk")
    with pytest.raises(ValueError, match="prefix"):
        KeyManager(MemoryKeyStore(), client_secret_prefix="C S")


def test_a_client_secret_is_refused_as_an_api_key(manager: KeyManager) -> None:
    issued = manager.create_client("acme", scopes=["billing:read"])
    denial = manager.authenticate(issued.token)
    assert not isinstance(denial, Principal)
    assert denial.reason is DenialReason.CLIENT_SECRET_AS_BEARER
    assert "token endpoint" in denial.detail
    assert issued.token not in denial.detail


def test_a_client_secret_dressed_as_an_api_key_is_a_wrong_secret(manager: KeyManager) -> None:
    issued = manager.create_client("acme")
    secret = parse_key(issued.token, KeyFormat(prefix="cs")).secret
    body = f"sk_live_{issued.key_id}_{secret}"
    denial = manager.authenticate(body + checksum(body))
    assert not isinstance(denial, Principal)
    assert denial.reason is DenialReason.WRONG_SECRET
    assert denial.detail == "the API key is not valid"


def test_the_key_lifecycle_works_on_clients(manager: KeyManager, clock: FakeClock) -> None:
    issued = manager.create_client("acme", scopes=["a"], metadata={"team": "x"})
    updated = manager.update(issued.key_id, scopes=["a", "b"], name="renamed")
    assert updated.kind == "oauth_client"
    assert updated.scopes == {"a", "b"}
    rotated = manager.rotate(issued.key_id, grace=timedelta(hours=1))
    assert rotated.token.startswith("cs_live_")
    assert rotated.record.kind == "oauth_client"
    assert rotated.record.metadata == {"team": "x"}
    old = manager.get(issued.key_id)
    assert old.replaced_by == rotated.key_id
    assert old.expires_at == clock.now() + timedelta(hours=1)
    assert manager.revoke(rotated.key_id).kind == "oauth_client"


@pytest.mark.anyio
async def test_the_async_manager_creates_clients(clock: FakeClock) -> None:
    manager = AsyncKeyManager(MemoryKeyStore(), clock=clock)
    issued = await manager.create_client("acme", environment="test", scopes=["x"])
    assert issued.token.startswith("cs_test_")
    assert (await manager.get(issued.key_id)).kind == "oauth_client"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
async def test_the_middleware_refuses_a_client_secret_with_a_useful_401(
    kind: str, clock: FakeClock
) -> None:
    harness = Harness(kind, clock)
    token = harness.manager.create_client("acme").token
    reply = await harness.build()(with_key(token))
    assert reply.status == 401
    assert reply.header("www-authenticate") == 'Bearer realm="api", error="invalid_token"'
    problem = reply.json()
    assert problem["error"] == "invalid_token"
    assert "token endpoint" in problem["detail"]
    assert token not in reply.body.decode()


@pytest.mark.anyio
async def test_clients_live_in_the_sql_store_unchanged(tmp_path: Any, clock: FakeClock) -> None:
    """No new column: the kind survives a round trip through SQLite, and the token
    endpoint authenticates the client from there."""
    from keyguard.oauth import AuthorizationServer
    from keyguard.oauth.wsgi import AuthorizationServerWSGIApp
    from keyguard.stores.sql import SQLKeyStore
    from tests._http_drivers import wsgi_call
    from tests.oauth._harness import AUDIENCE, ISSUER, KEYS, basic, token_request

    store = SQLKeyStore(f"sqlite:///{tmp_path / 'keys.db'}")
    store.create_schema()
    # Closed by the manager: it stops its last-used writer, which would open the store again.
    manager = KeyManager(store, clock=clock)
    try:
        issued = manager.create_client("acme", scopes=["a"])
        assert manager.get(issued.key_id).kind == "oauth_client"
        assert [r.kind for r in manager.list("acme")] == ["oauth_client"]
        app = AuthorizationServerWSGIApp(
            AuthorizationServer(manager, KEYS, issuer=ISSUER, audiences=AUDIENCE)
        )
        request = token_request(
            {"grant_type": "client_credentials"}, auth=basic(issued.key_id, issued.token)
        )
        assert wsgi_call(app, request).status == 200
    finally:
        manager.close()
