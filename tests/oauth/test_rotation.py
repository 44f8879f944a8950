"""Rotation of signing keys, and the bound on how long a revoked client's tokens still work."""

from __future__ import annotations

import pytest

from keyguard import KeyManager
from keyguard._drive import drive_sync
from keyguard._steps import Backends
from keyguard.oauth import JWTVerifier, KeySet, SigningKey
from keyguard.stores import CachedKeyStore, MemoryKeyStore
from keyguard.stores.cached import DEFAULT_CACHE_TTL
from keyguard.testing import FakeClock
from tests.oauth._harness import (
    AUDIENCE,
    ISSUER,
    KEYS,
    OAuthHarness,
    api,
    basic,
    bearer,
    token_request,
)


async def _token(harness: OAuthHarness, client_id: str, secret: str) -> str:
    reply = await harness.build()(
        token_request({"grant_type": "client_credentials"}, auth=basic(client_id, secret))
    )
    assert reply.status == 200, reply.body
    return str(reply.json()["access_token"])


@pytest.mark.anyio
async def test_old_tokens_verify_until_the_old_key_is_retired(clock: FakeClock) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    store = MemoryKeyStore()
    client_id, secret = OAuthHarness("wsgi", clock, store=store).client()

    def check(keys: KeySet, token: str) -> int:
        verifier = JWTVerifier(issuer=ISSUER, audience=AUDIENCE, keys=keys, clock=clock)
        result = drive_sync(verifier.verify(token), Backends(store))
        return 200 if hasattr(result, "principal") else 401

    # 1. Publish the next key beside the current one.
    published = KeySet(old, verify_only=[new.public])
    before = await _token(
        OAuthHarness("wsgi", clock, store=store, keys=published), client_id, secret
    )
    # 2. Switch signing; the old key still verifies.
    switched = KeySet(new, verify_only=[old.public])
    after = await _token(OAuthHarness("asgi", clock, store=store, keys=switched), client_id, secret)
    assert check(switched, before) == 200
    assert check(switched, after) == 200
    assert check(published, after) == 200  # a verifier that fetched the JWKS in step 1
    # 3. Retire the old key once the longest token lifetime has passed.
    retired = KeySet(new)
    assert check(retired, after) == 200
    assert check(retired, before) == 401


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
async def test_a_revoked_clients_token_stops_within_the_cache_ttl(
    kind: str, clock: FakeClock
) -> None:
    """Revoked in another process (straight in the shared store): this process's cache
    serves the old record for at most its TTL, then the token is refused."""
    shared = MemoryKeyStore()
    cached = CachedKeyStore(shared, clock=clock.monotonic)
    harness = OAuthHarness(kind, clock, store=shared)
    client_id, secret = harness.client()
    token = await _token(harness, client_id, secret)
    verifier = JWTVerifier(issuer=ISSUER, audience=AUDIENCE, keys=KEYS, clock=clock)
    # No last-used writes: each one evicts the client from the cache, which would end it sooner.
    call, _ = api(kind, cached, clock, verifier, last_used=None)  # type: ignore[arg-type]
    assert (await call(bearer(token))).status == 200
    KeyManager(shared, clock=clock).revoke(client_id)  # elsewhere: this cache is not told
    clock.advance(DEFAULT_CACHE_TTL - 0.1)
    assert (await call(bearer(token))).status == 200
    clock.advance(0.1)
    refused = await call(bearer(token))
    assert refused.status == 401
    assert "revoked" in refused.json()["detail"]
