"""The token endpoint's memo of verified client secrets: the rules of the API keys' memo."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest

from keyguard import AsyncKeyManager, Denial, KeyManager, checksum
from keyguard._verify import token_digest
from keyguard.oauth import AuthorizationServer
from keyguard.oauth.asgi import AuthorizationServerApp
from keyguard.oauth.wsgi import AuthorizationServerWSGIApp
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._hashers import CountingHasher
from tests._http_drivers import Reply, Request, asgi_call, wsgi_call
from tests.oauth._harness import AUDIENCE, ISSUER, KEYS, basic, token_request

KINDS = ["asgi", "wsgi"]
GRANT = {"grant_type": "client_credentials"}


class Endpoint:
    """A token endpoint over a memory store, as ASGI or WSGI, counting secret hashes."""

    def __init__(self, kind: str, clock: FakeClock, **manager_options: Any) -> None:
        self.kind = kind
        self.hasher = CountingHasher()
        self.store = MemoryKeyStore()
        options: dict[str, Any] = {
            "hasher": self.hasher,
            "clock": clock,
            "last_used": None,
            **manager_options,
        }
        self.manager = KeyManager(self.store, **options)
        served = AsyncKeyManager(self.store, **options) if kind == "asgi" else self.manager
        self.server = AuthorizationServer(served, KEYS, issuer=ISSUER, audiences=AUDIENCE)
        self.asgi = AuthorizationServerApp(self.server) if kind == "asgi" else None
        self.wsgi = AuthorizationServerWSGIApp(self.server) if kind == "wsgi" else None

    def client(self, owner: str = "acme", **kwargs: Any) -> tuple[str, str]:
        issued = self.manager.create_client(owner, **kwargs)
        return issued.key_id, issued.token

    async def call(self, request: Request) -> Reply:
        if self.asgi is not None:
            return await asgi_call(self.asgi, request)
        assert self.wsgi is not None
        return wsgi_call(self.wsgi, request)

    async def token(self, client_id: str, secret: str, **params: str) -> Reply:
        return await self.call(token_request({**GRANT, **params}, auth=basic(client_id, secret)))


@pytest.fixture(params=KINDS)
def endpoint(request: pytest.FixtureRequest, clock: FakeClock) -> Endpoint:
    return Endpoint(request.param, clock)


@pytest.mark.anyio
async def test_a_repeated_client_secret_is_hashed_once(endpoint: Endpoint) -> None:
    client_id, secret = endpoint.client()
    for _ in range(5):
        reply = await endpoint.token(client_id, secret)
        assert reply.status == 200, reply.body
    assert endpoint.hasher.verifies == 1


@pytest.mark.anyio
async def test_the_memo_holds_no_secret(endpoint: Endpoint) -> None:
    client_id, secret = endpoint.client()
    assert (await endpoint.token(client_id, secret)).status == 200
    memo = endpoint.server.verified_clients
    assert memo is not None
    assert len(memo) == 1
    ((digest, record),) = memo._entries.items()
    assert digest == token_digest(secret)
    assert record.key_id == client_id
    for shown in (repr(record), repr(memo), repr(endpoint.server)):
        assert secret not in shown
        assert secret[-38:-6] not in shown


@pytest.mark.anyio
@pytest.mark.parametrize("change", ["revoke", "update", "rotate", "expire"])
async def test_any_change_to_the_client_is_seen_at_once(
    endpoint: Endpoint, clock: FakeClock, change: str
) -> None:
    client_id, secret = endpoint.client(scopes=["read"], expires_in=timedelta(hours=1))
    assert (await endpoint.token(client_id, secret, scope="read")).status == 200
    if change == "revoke":
        endpoint.manager.revoke(client_id)
    elif change == "update":
        endpoint.manager.update(client_id, scopes=["other"])
    elif change == "rotate":
        endpoint.manager.rotate(client_id, grace=timedelta(0))
    else:
        clock.advance(3600)
    reply = await endpoint.token(client_id, secret, scope="read")
    expected = ("invalid_scope", 400) if change == "update" else ("invalid_client", 401)
    assert (reply.json()["error"], reply.status) == expected
    # A changed record is a new object, checked in full; an expiry changes no record.
    assert endpoint.hasher.verifies == (1 if change == "expire" else 2)


@pytest.mark.anyio
async def test_a_wrong_secret_is_never_remembered(endpoint: Endpoint) -> None:
    client_id, secret = endpoint.client()
    body = secret[:-38] + ("Z" if secret[-38] != "Z" else "Y") * 32
    wrong = body + checksum(body)
    for _ in range(3):
        reply = await endpoint.token(client_id, wrong)
        assert reply.status == 401
        assert reply.json()["error"] == "invalid_client"
    assert endpoint.hasher.verifies == 3
    assert len(endpoint.server.verified_clients or ()) == 0


@pytest.mark.anyio
async def test_a_remembered_secret_needs_its_own_client_id(endpoint: Endpoint) -> None:
    client_id, secret = endpoint.client()
    other_id, _ = endpoint.client()
    assert (await endpoint.token(client_id, secret)).status == 200
    reply = await endpoint.token(other_id, secret)
    assert reply.status == 401
    assert reply.json()["error"] == "invalid_client"


@pytest.mark.anyio
async def test_a_deleted_client_is_unknown_even_when_remembered(endpoint: Endpoint) -> None:
    client_id, secret = endpoint.client()
    assert (await endpoint.token(client_id, secret)).status == 200
    del endpoint.store._records[client_id]
    reply = await endpoint.token(client_id, secret)
    assert reply.status == 401
    assert endpoint.hasher.verifies == 2, "the unknown client still costs a hash, as always"


@pytest.mark.anyio
async def test_a_remembered_client_secret_is_still_no_api_key(endpoint: Endpoint) -> None:
    client_id, secret = endpoint.client()
    assert (await endpoint.token(client_id, secret)).status == 200
    assert isinstance(endpoint.manager.authenticate(secret), Denial)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_the_memo_is_off_with_the_managers_token_memo(kind: str, clock: FakeClock) -> None:
    endpoint = Endpoint(kind, clock, token_memo=False)
    assert endpoint.server.verified_clients is None
    client_id, secret = endpoint.client()
    for _ in range(3):
        assert (await endpoint.token(client_id, secret)).status == 200
    assert endpoint.hasher.verifies == 3


@pytest.mark.anyio
async def test_the_claims_are_compact_json_with_every_string_escaped(endpoint: Endpoint) -> None:
    owner = 'Ünïcode "quoted" \\ back\tslash </script> \u2028'
    client_id, secret = endpoint.client(owner, scopes=["a", "b"])
    reply = await endpoint.token(client_id, secret)
    assert reply.status == 200, reply.body
    token = reply.json()["access_token"]
    segment = token.split(".")[1]
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    claims = json.loads(raw)
    assert raw == json.dumps(claims, separators=(",", ":")).encode("ascii")
    assert list(claims) == ["iss", "sub", "client_id", "aud", "iat", "exp", "jti", "scope", "owner"]
    assert claims["owner"] == owner
    assert claims["scope"] == "a b"
    assert claims == jwt.decode(
        token,
        KEYS.signing.public.pyjwk,
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},  # a FakeClock's times
    )
