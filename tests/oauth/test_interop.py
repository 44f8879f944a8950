"""Third-party code against keyguard's OAuth side, under real servers.

- Authlib's OAuth 2.0 client fetches a token (client_secret_basic and
  client_secret_post) from the token endpoint under uvicorn (ASGI) and waitress
  (WSGI), and calls the protected API with it;
- PyJWT's ``PyJWKClient``, given the ``jwks_uri`` found through the RFC 8414
  metadata URL, verifies the token it got;
- tokens minted by joserfc (Authlib's JOSE library) with a key served from a
  JWKS URL are accepted by the middleware.
"""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey

from keyguard import (
    AsyncKeyManager,
    KeyguardMiddleware,
    KeyguardWSGIMiddleware,
    KeyManager,
    MemoryRateLimiter,
    Principal,
)
from keyguard._drive import drive_sync
from keyguard._steps import Backends
from keyguard.oauth import AuthorizationServer, JWTVerifier, KeySet, RemoteJWKS, SigningKey
from keyguard.oauth.asgi import AuthorizationServerApp
from keyguard.oauth.wsgi import AuthorizationServerWSGIApp
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests.oauth._harness import api, bearer
from tests.oauth.conftest import JWKSServer

with warnings.catch_warnings():
    # Authlib announces that it will prefer httpx2 to httpx; httpx is what is installed here.
    import authlib.deprecate  # noqa: F401 (its import puts an "always" filter first)

    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

AUDIENCE = "https://api.example.com"
KEYS = KeySet(SigningKey.generate())


def _listening_socket() -> socket.socket:
    """A socket bound to a free port, handed to the server: no other process can take the
    port between choosing it and serving on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def _asgi_api(scope: Any, receive: Any, send: Any) -> None:
    principal = scope["keyguard.principal"]
    body = f"{principal.auth_method} {principal.key_id} {' '.join(sorted(principal.scopes))}"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


def _wsgi_api(environ: Any, start_response: Any) -> list[bytes]:
    principal = environ["keyguard.principal"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [
        f"{principal.auth_method} {principal.key_id} {' '.join(sorted(principal.scopes))}".encode()
    ]


class Served:
    def __init__(self, base: str, store: MemoryKeyStore) -> None:
        self.base = base
        self.store = store

    def client(self, scopes: list[str]) -> tuple[str, str]:
        issued = KeyManager(self.store).create_client("acme", scopes=scopes)
        return issued.key_id, issued.token


def _stack(kind: str, base: str, store: MemoryKeyStore) -> Any:
    verifier = JWTVerifier(issuer=base, audience=AUDIENCE, keys=KEYS)
    if kind == "uvicorn":
        manager = AsyncKeyManager(store)
        limiter: Any = MemoryRateLimiter()
        server = AuthorizationServer(
            manager, KEYS, issuer=base, audiences=AUDIENCE, limiter=limiter
        )
        return AuthorizationServerApp(
            server, app=KeyguardMiddleware(_asgi_api, manager, jwt_verifier=verifier)
        )
    sync = KeyManager(store)
    server = AuthorizationServer(
        sync, KEYS, issuer=base, audiences=AUDIENCE, limiter=MemoryRateLimiter()
    )
    return AuthorizationServerWSGIApp(
        server, app=KeyguardWSGIMiddleware(_wsgi_api, sync, jwt_verifier=verifier)
    )


@pytest.fixture(params=["uvicorn", "waitress"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    sock = _listening_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = MemoryKeyStore()
    app = _stack(request.param, base, store)
    if request.param == "uvicorn":
        import uvicorn

        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()

        def stop() -> None:
            server.should_exit = True

    else:
        from waitress.server import create_server

        sock.listen()
        wserver = create_server(app, sockets=[sock], threads=2)
        stopping = threading.Event()

        def serve() -> None:
            try:
                wserver.run()
            except OSError:
                # stop() closes the sockets from the test's thread, which races this
                # thread's select() on them (EBADF); an OSError before that is a failure.
                if not stopping.is_set():
                    raise

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()

        def stop() -> None:
            stopping.set()
            wserver.close()

    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(base + "/.well-known/oauth-authorization-server", timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                pytest.fail(f"{request.param} did not start")
            time.sleep(0.05)
    try:
        yield Served(base, store)
    finally:
        stop()
        thread.join(10)
        sock.close()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_gets_a_token_and_calls_the_api(served: Served, method: str) -> None:
    client_id, secret = served.client(["billing:read", "billing:write"])
    metadata = httpx.get(served.base + "/.well-known/oauth-authorization-server").json()
    assert method in metadata["token_endpoint_auth_methods_supported"]
    with OAuth2Client(
        client_id, secret, token_endpoint_auth_method=method, scope="billing:read"
    ) as client:
        token = client.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "billing:read"
        assert token["expires_in"] == 600
        reply = client.get(served.base + "/invoices")
    assert reply.status_code == 200, reply.text
    assert reply.text == f"oauth {client_id} billing:read"
    # The client secret itself is refused by the API.
    refused = httpx.get(served.base + "/invoices", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    assert "token endpoint" in refused.json()["detail"]
    # PyJWT's JWKS client, from the metadata's jwks_uri, verifies the token.
    signing_key = jwt.PyJWKClient(metadata["jwks_uri"]).get_signing_key_from_jwt(
        token["access_token"]
    )
    claims = jwt.decode(
        token["access_token"],
        signing_key,
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=metadata["issuer"],
    )
    assert claims["client_id"] == client_id


@pytest.mark.slow
def test_authlib_sees_the_errors_of_rfc_6749(served: Served) -> None:
    client_id, _ = served.client(["a"])
    with (
        OAuth2Client(
            client_id, "cs_live_wrong", token_endpoint_auth_method="client_secret_basic"
        ) as client,
        pytest.raises(Exception, match="invalid_client"),
    ):
        client.fetch_token(served.base + "/oauth/token", grant_type="client_credentials")


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
async def test_tokens_minted_by_joserfc_are_accepted(
    kind: str, jwks_server: JWKSServer, clock: FakeClock
) -> None:
    ec_key = ECKey.generate_key("P-256")
    ed_key = OKPKey.generate_key("Ed25519")
    jwks_server.document = {
        "keys": [
            {**ec_key.as_dict(private=False), "kid": "ec-1", "use": "sig"},
            {**ed_key.as_dict(private=False), "kid": "ed-1"},
        ]
    }
    issuer = "https://login.partner.example"
    verifier = JWTVerifier(
        issuer=issuer, audience=AUDIENCE, keys=RemoteJWKS(jwks_server.url, clock=clock), clock=clock
    )
    call, seen = api(kind, MemoryKeyStore(), clock, verifier)
    now = int(clock.now().timestamp())
    claims = {
        "iss": issuer, "sub": "svc", "client_id": "svc", "aud": [AUDIENCE, "other"],
        "iat": now, "exp": now + 60, "jti": "1", "scope": "read write",
    }  # fmt: skip
    for alg, kid, key in (("ES256", "ec-1", ec_key), ("EdDSA", "ed-1", ed_key)):
        with warnings.catch_warnings():
            # joserfc warns that RFC 9864 deprecates "EdDSA" for "Ed25519": see docs/oauth.md.
            warnings.simplefilter("ignore", SecurityWarning)
            token = jose_jwt.encode(
                {"alg": alg, "typ": "at+jwt", "kid": kid}, claims, key, algorithms=[alg]
            )
        reply = await call(bearer(token))
        assert reply.status == 200, reply.body
        assert isinstance(seen.principal, Principal)
        assert seen.principal.scopes == {"read", "write"}
    forged = jose_jwt.encode(
        {"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}, claims, ECKey.generate_key("P-256")
    )
    assert (await call(bearer(forged))).status == 401
    assert jwks_server.requests == 1


def test_pyjwt_verifies_keyguard_tokens_of_every_algorithm(clock: FakeClock) -> None:
    for algorithm in ("ES256", "RS256", "EdDSA"):
        keys = KeySet(SigningKey.generate(algorithm))  # type: ignore[arg-type]
        store = MemoryKeyStore()
        client = KeyManager(store, clock=clock).create_client("acme").key_id
        now = int(clock.now().timestamp())
        claims = {"iss": "https://a.example", "sub": client, "client_id": client, "aud": AUDIENCE,
                  "iat": now, "exp": now + 60, "jti": "j", "scope": ""}  # fmt: skip
        token = keys.signing.sign(claims)
        (jwk,) = keys.jwks()["keys"]
        decoded = jwt.decode(
            token, jwt.PyJWK(jwk), algorithms=[algorithm], audience=AUDIENCE,
            options={"verify_exp": False, "verify_iat": False},
        )  # fmt: skip
        assert decoded["sub"] == client
        verifier = JWTVerifier(
            issuer="https://a.example", audience=AUDIENCE, keys=keys, clock=clock
        )
        assert drive_sync(verifier.verify(token), Backends(store)).principal.key_id == client  # type: ignore[union-attr]
