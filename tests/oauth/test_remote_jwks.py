"""Keys of an external authorization server, from a JWKS URL served by a local HTTP server."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from keyguard import Principal
from keyguard._drive import drive_sync
from keyguard._steps import Backends
from keyguard.oauth import JWTVerifier, RemoteJWKS, SigningKey
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests.oauth._harness import api, bearer
from tests.oauth.conftest import JWKSServer

ISSUER = "https://login.partner.example"
AUDIENCE = "https://api.example.com"
KINDS = ["asgi", "wsgi"]


def _mint(key: Any, clock: FakeClock, kid: str | None, **claims: Any) -> str:
    """A token as another authorization server makes them, with PyJWT alone."""
    now = int(clock.now().timestamp())
    payload = {
        "iss": ISSUER, "sub": "svc-1", "client_id": "svc-1", "aud": AUDIENCE,
        "iat": now, "exp": now + 300, "jti": secrets.token_hex(8), "scope": "read",
        **claims,
    }  # fmt: skip
    headers = {"typ": "at+jwt"} if kid is None else {"typ": "at+jwt", "kid": kid}
    return jwt.encode(payload, key._private, algorithm=key.algorithm, headers=headers)


def _verifier(remote: RemoteJWKS, clock: FakeClock) -> JWTVerifier:
    return JWTVerifier(issuer=ISSUER, audience=AUDIENCE, keys=remote, clock=clock)


def _verify(verifier: JWTVerifier, token: str) -> Any:
    return drive_sync(verifier.verify(token), Backends())


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "EdDSA"])
async def test_tokens_of_an_external_server_are_accepted(
    kind: str, algorithm: str, jwks_server: JWKSServer, clock: FakeClock
) -> None:
    key = SigningKey.generate(algorithm)  # type: ignore[arg-type]
    jwks_server.document = {"keys": [key.public.jwk]}
    remote = RemoteJWKS(jwks_server.url, clock=clock)
    call, seen = api(kind, MemoryKeyStore(), clock, _verifier(remote, clock))
    reply = await call(bearer(_mint(key, clock, key.kid, owner="partner")))
    assert reply.status == 200, reply.body
    assert isinstance(seen.principal, Principal)
    assert seen.principal.key_id == "svc-1"
    assert seen.principal.owner == "partner"
    assert seen.principal.auth_method == "oauth"
    assert jwks_server.requests == 1


def test_random_kids_cause_at_most_one_fetch_per_interval(
    jwks_server: JWKSServer, clock: FakeClock
) -> None:
    key = SigningKey.generate()
    jwks_server.document = {"keys": [key.public.jwk]}
    remote = RemoteJWKS(jwks_server.url, clock=clock, refetch_interval=30)
    verifier = _verifier(remote, clock)
    assert isinstance(_verify(verifier, _mint(key, clock, key.kid)).principal, Principal)
    for _ in range(50):
        denial = _verify(verifier, _mint(key, clock, secrets.token_urlsafe(8)))
        assert "unknown key" in denial.detail
    assert jwks_server.requests == 1  # a kid missing from a fresh fetch is not fetched for
    clock.advance(30)
    for _ in range(50):
        _verify(verifier, _mint(key, clock, secrets.token_urlsafe(8)))
    assert jwks_server.requests == 2  # one refetch per interval, however many unknown kids


def test_the_issuer_rotates_and_the_new_kid_is_fetched(
    jwks_server: JWKSServer, clock: FakeClock
) -> None:
    old, new = SigningKey.generate(), SigningKey.generate("EdDSA")
    jwks_server.document = {"keys": [old.public.jwk]}
    remote = RemoteJWKS(jwks_server.url, clock=clock, refetch_interval=30)
    verifier = _verifier(remote, clock)
    assert _verify(verifier, _mint(old, clock, old.kid)).principal
    clock.advance(31)
    jwks_server.document = {"keys": [old.public.jwk, new.public.jwk]}
    assert _verify(verifier, _mint(new, clock, new.kid)).principal
    assert _verify(verifier, _mint(old, clock, old.kid, jti="x")).principal


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_no_keys_at_all_fails_closed_with_503(
    kind: str, jwks_server: JWKSServer, clock: FakeClock
) -> None:
    key = SigningKey.generate()
    jwks_server.status = 500
    remote = RemoteJWKS(jwks_server.url, clock=clock)
    call, _ = api(kind, MemoryKeyStore(), clock, _verifier(remote, clock))
    token = _mint(key, clock, key.kid)
    reply = await call(bearer(token))
    assert reply.status == 503
    assert reply.header("retry-after") == "1"
    assert (await call(bearer(token))).status == 503
    assert jwks_server.requests == 1  # a failed first fetch is retried at most once a second
    jwks_server.status = 200
    jwks_server.document = {"keys": [key.public.jwk]}
    clock.advance(1)
    assert (await call(bearer(token))).status == 200


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"nokeys": []}', id="no-keys-member"),
        pytest.param(b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', id="only-an-hmac-key"),
        pytest.param(b'{"keys": "x"}', id="keys-not-a-list"),
        pytest.param(b"[" * 2000 + b"]" * 2000, id="deeply-nested"),
        pytest.param(b" " * 70_000, id="too-large"),
    ],
)
def test_a_bad_document_is_no_keys(raw: bytes, jwks_server: JWKSServer, clock: FakeClock) -> None:
    jwks_server.raw = raw
    remote = RemoteJWKS(jwks_server.url, clock=clock, max_bytes=65_536)
    key = SigningKey.generate()
    denial = _verify(_verifier(remote, clock), _mint(key, clock, key.kid))
    assert denial.detail.startswith("the token signing keys are unavailable")


def test_a_failed_refetch_keeps_the_keys(jwks_server: JWKSServer, clock: FakeClock) -> None:
    key = SigningKey.generate()
    jwks_server.document = {"keys": [key.public.jwk]}
    remote = RemoteJWKS(jwks_server.url, clock=clock, max_age=60)
    verifier = _verifier(remote, clock)
    assert _verify(verifier, _mint(key, clock, key.kid)).principal
    jwks_server.status = 503
    clock.advance(120)  # keys are stale: a refetch is tried, fails, and the old keys serve
    assert _verify(verifier, _mint(key, clock, key.kid)).principal
    assert jwks_server.requests == 2


def test_a_token_without_kid_uses_the_only_key(jwks_server: JWKSServer, clock: FakeClock) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    jwks_server.document = {"keys": [key.public.jwk]}
    verifier = _verifier(RemoteJWKS(jwks_server.url, clock=clock), clock)
    assert _verify(verifier, _mint(key, clock, None)).principal
    jwks_server.document = {"keys": [key.public.jwk, other.public.jwk]}
    verifier = _verifier(RemoteJWKS(jwks_server.url, clock=clock), clock)
    assert "unknown key" in _verify(verifier, _mint(key, clock, None, jti="2")).detail


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.anyio
async def test_a_hung_jwks_server_times_out(silent_port: int, clock: FakeClock) -> None:
    remote = RemoteJWKS(f"http://127.0.0.1:{silent_port}/jwks", timeout=0.3, clock=clock)
    key = SigningKey.generate()
    call, _ = api("asgi", MemoryKeyStore(), clock, _verifier(remote, clock))
    started = time.monotonic()
    reply = await call(bearer(_mint(key, clock, key.kid)))
    assert reply.status == 503
    assert time.monotonic() - started < 2


def test_jwks_urls_must_be_https_except_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        RemoteJWKS("http://keys.example/jwks.json")
    with pytest.raises(ValueError, match="https"):
        RemoteJWKS("file:///etc/passwd")
    assert RemoteJWKS("https://keys.example/jwks.json").url.startswith("https")
