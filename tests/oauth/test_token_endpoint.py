"""The token endpoint (RFC 6749 §4.4, §2.3.1, §5.2), the same through both shells."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest

from keyguard.testing import FakeClock
from tests._http_drivers import Request
from tests.oauth._harness import (
    AUDIENCE,
    FORM,
    ISSUER,
    KEYS,
    OAuthHarness,
    basic,
    token_request,
)

KINDS = ["asgi", "wsgi"]
GRANT = {"grant_type": "client_credentials"}


@pytest.fixture(params=KINDS)
def harness(request: pytest.FixtureRequest, clock: FakeClock) -> OAuthHarness:
    return OAuthHarness(request.param, clock)


def _decode(token: str, **kwargs: Any) -> dict[str, Any]:
    return jwt.decode(
        token,
        KEYS.signing.public.pyjwk,
        algorithms=["ES256"],
        audience=kwargs.pop("audience", AUDIENCE),
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )


@pytest.mark.anyio
async def test_basic_authentication_gets_an_rfc_9068_token(
    harness: OAuthHarness, clock: FakeClock
) -> None:
    client_id, secret = harness.client(scopes=["billing:read", "billing:write"])
    reply = await harness.build()(token_request(GRANT, auth=basic(client_id, secret)))
    assert reply.status == 200, reply.body
    assert reply.header("cache-control") == "no-store"
    assert reply.header("pragma") == "no-cache"
    assert reply.header("content-type") == "application/json"
    body = reply.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["scope"] == "billing:read billing:write"
    header = jwt.get_unverified_header(body["access_token"])
    assert header == {"alg": "ES256", "kid": KEYS.signing.kid, "typ": "at+jwt"}
    claims = _decode(body["access_token"])
    now = int(clock.now().timestamp())
    assert claims["sub"] == claims["client_id"] == client_id
    assert claims["iat"] == now
    assert claims["exp"] == now + 600
    assert claims["scope"] == "billing:read billing:write"
    assert claims["owner"] == "acme"
    assert len(claims["jti"]) >= 16
    assert secret not in reply.body.decode()


@pytest.mark.anyio
async def test_post_authentication_scope_subset_and_resource(harness: OAuthHarness) -> None:
    client_id, secret = harness.client(scopes=["a", "b", "c"])
    params = {
        **GRANT,
        "client_id": client_id,
        "client_secret": secret,
        "scope": "c a",
        "resource": "https://reports.example.com",
    }
    reply = await harness.build()(token_request(params))
    assert reply.status == 200, reply.body
    assert reply.json()["scope"] == "a c"
    claims = _decode(reply.json()["access_token"], audience="https://reports.example.com")
    assert claims["scope"] == "a c"
    assert claims["aud"] == "https://reports.example.com"


@pytest.mark.anyio
async def test_percent_encoded_basic_credentials_are_decoded(harness: OAuthHarness) -> None:
    client_id, secret = harness.client()
    raw = f"{client_id}:{secret}".encode()
    # Same id and secret, characters needlessly %-encoded: RFC 6749 §2.3.1 decodes them.
    encoded = "".join(f"%{b:02X}" if i % 3 == 0 else chr(b) for i, b in enumerate(raw))
    encoded = encoded.replace("%3A", ":")
    auth = (b"authorization", b"Basic " + base64.b64encode(encoded.encode()))
    reply = await harness.build()(token_request(GRANT, auth=auth))
    assert reply.status == 200, reply.body


@pytest.mark.anyio
async def test_a_token_never_outlives_its_client(harness: OAuthHarness) -> None:
    client_id, secret = harness.client(expires_in=timedelta(seconds=90))
    reply = await harness.build()(token_request(GRANT, auth=basic(client_id, secret)))
    assert reply.json()["expires_in"] == 90


def _api_key_as_secret(h: OAuthHarness) -> Request:
    issued = h.manager.create("acme")
    return token_request(GRANT, auth=basic(issued.key_id, issued.token))


def _other_client_id(h: OAuthHarness) -> Request:
    _, secret = h.client()
    other, _ = h.client()
    return token_request(GRANT, auth=basic(other, secret))


def _revoked(h: OAuthHarness) -> Request:
    client_id, secret = h.client()
    h.manager.revoke(client_id)
    return token_request(GRANT, auth=basic(client_id, secret))


def _expired(h: OAuthHarness) -> Request:
    client_id, secret = h.client(expires_in=timedelta(seconds=5))
    h.clock.advance(5)
    return token_request(GRANT, auth=basic(client_id, secret))


def _good(h: OAuthHarness, **params: str) -> Request:
    client_id, secret = h.client(scopes=["a"])
    return token_request({**GRANT, **params}, auth=basic(client_id, secret))


def _good_post(h: OAuthHarness, **params: str) -> dict[str, str]:
    client_id, secret = h.client(scopes=["a"])
    return {**GRANT, "client_id": client_id, "client_secret": secret, **params}


Build = Callable[[OAuthHarness], Request]
#: (request, status, error, WWW-Authenticate Basic?, extra header check)
ERROR_TABLE = [
    pytest.param(
        lambda h: Request(method="GET", path="/oauth/token"),
        405, "invalid_request", False, ("allow", "POST"), id="get-405",
    ),
    pytest.param(
        lambda h: token_request(b'{"grant_type":"client_credentials"}',
                                content_type=(b"content-type", b"application/json")),
        400, "invalid_request", False, None, id="json-body",
    ),
    pytest.param(
        lambda h: token_request(GRANT, content_type=None),
        400, "invalid_request", False, None, id="no-content-type",
    ),
    pytest.param(
        lambda h: token_request("grant_type=client_credentials&grant_type=client_credentials"),
        400, "invalid_request", False, None, id="repeated-parameter",
    ),
    pytest.param(
        lambda h: token_request({"scope": "a"}),
        400, "invalid_request", False, None, id="no-grant-type",
    ),
    pytest.param(
        lambda h: token_request({"grant_type": "password"}),
        400, "unsupported_grant_type", False, None, id="password-grant",
    ),
    pytest.param(
        lambda h: token_request(GRANT, query=b"client_secret=cs_live_x"),
        400, "invalid_request", False, None, id="secret-in-query",
    ),
    pytest.param(
        lambda h: token_request(GRANT, query=b"grant_type=client_credentials"),
        400, "invalid_request", False, None, id="grant-in-query",
    ),
    pytest.param(
        lambda h: token_request(_good_post(h), auth=basic("x", "y")),
        400, "invalid_request", False, None, id="two-methods",
    ),
    pytest.param(
        lambda h: token_request(GRANT, scheme="http"),
        400, "invalid_request", False, None, id="plain-http",
    ),
    pytest.param(
        lambda h: token_request(GRANT),
        401, "invalid_client", True, None, id="no-client-authentication",
    ),
    pytest.param(
        lambda h: token_request(GRANT, auth=(b"authorization", b"Basic !!!")),
        401, "invalid_client", True, None, id="bad-base64",
    ),
    pytest.param(
        lambda h: token_request(
            GRANT, auth=(b"authorization", b"Basic " + base64.b64encode(b"no-colon"))
        ),
        401, "invalid_client", True, None, id="basic-without-colon",
    ),
    pytest.param(
        lambda h: token_request(GRANT, auth=(b"authorization", b"Bearer abc")),
        401, "invalid_client", True, None, id="bearer-scheme",
    ),
    pytest.param(
        lambda h: token_request(GRANT, auth=basic("nobody", "cs_live_nope")),
        401, "invalid_client", True, None, id="unknown-client",
    ),
    pytest.param(_api_key_as_secret, 401, "invalid_client", True, None, id="api-key-as-secret"),
    pytest.param(_other_client_id, 401, "invalid_client", True, None, id="secret-of-another"),
    pytest.param(_revoked, 401, "invalid_client", True, None, id="revoked-client"),
    pytest.param(_expired, 401, "invalid_client", True, None, id="expired-client"),
    pytest.param(
        lambda h: token_request({"client_id": "x", **GRANT}),
        401, "invalid_client", True, None, id="public-client",
    ),
    pytest.param(
        lambda h: _good(h, scope="a b"), 400, "invalid_scope", False, None, id="scope-not-granted"
    ),
    pytest.param(
        lambda h: _good(h, scope='a "b'), 400, "invalid_scope", False, None, id="scope-malformed"
    ),
    pytest.param(
        lambda h: _good(h, resource="https://evil.example"),
        400, "invalid_target", False, None, id="unknown-resource",
    ),
    pytest.param(
        lambda h: token_request(_good_post(h), auth=None, content_type=FORM, query=b"a=1"),
        200, None, False, None, id="other-query-parameters-are-fine",
    ),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("build", "status", "error", "challenge", "header"), ERROR_TABLE)
async def test_rfc_6749_error_table(
    harness: OAuthHarness,
    build: Build,
    status: int,
    error: str | None,
    challenge: bool,
    header: tuple[str, str] | None,
) -> None:
    request = build(harness)
    reply = await harness.build()(request)
    assert reply.status == status, reply.body
    if error is None:
        return
    body = reply.json()
    assert body["error"] == error
    assert body["error_description"]
    assert reply.header("cache-control") == "no-store"
    assert reply.header("content-type") == "application/json"
    assert (reply.header("www-authenticate") == 'Basic realm="oauth"') is challenge
    if header is not None:
        assert reply.header(header[0]) == header[1]
    assert b"cs_live_" not in reply.body


@pytest.mark.anyio
async def test_an_unauthorized_client_of_another_environment(clock: FakeClock) -> None:
    for kind in KINDS:
        harness = OAuthHarness(kind, clock, environment="live")
        client_id, secret = harness.client(environment="test")
        reply = await harness.build()(token_request(GRANT, auth=basic(client_id, secret)))
        assert reply.status == 400
        assert reply.json()["error"] == "unauthorized_client"


@pytest.mark.anyio
async def test_unknown_client_and_wrong_secret_read_the_same(harness: OAuthHarness) -> None:
    call = harness.build()
    client_id, secret = harness.client()
    wrong = secret[:-10] + ("A" if secret[-10] != "A" else "B") + secret[-9:]
    from keyguard import KeyFormat, checksum, parse_key

    parsed = parse_key(secret, KeyFormat(prefix="cs"))
    # A well-formed secret with a valid checksum for a client_id that does not exist.
    body = f"cs_live_{'Z' * 12}_{parsed.secret}"
    unknown = basic("Z" * 12, body + checksum(body))
    body2 = f"cs_live_{client_id}_{'Q' * 32}"
    wrong_secret = basic(client_id, body2 + checksum(body2))
    replies = [
        await call(token_request(GRANT, auth=auth))
        for auth in (unknown, wrong_secret, basic(client_id, wrong))
    ]
    assert {r.status for r in replies} == {401}
    assert len({r.body for r in replies}) == 1
    assert len({tuple(r.headers) for r in replies}) == 1


@pytest.mark.anyio
async def test_failed_authentications_spend_the_address_budget(clock: FakeClock) -> None:
    for kind in KINDS:
        harness = OAuthHarness(kind, clock, failure_limit="3/minute")
        call = harness.build()
        client_id, secret = harness.client()
        bad = token_request(GRANT, auth=basic(client_id, "cs_live_wrong"))
        statuses = [(await call(bad)).status for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        blocked = await call(token_request(GRANT, auth=basic(client_id, secret)))
        assert blocked.status == 429
        assert blocked.header("retry-after") is not None
        other = await call(token_request(GRANT, auth=basic(client_id, secret), client="10.9.9.9"))
        assert other.status == 200


@pytest.mark.anyio
async def test_token_issuance_is_limited_per_client(clock: FakeClock) -> None:
    for kind in KINDS:
        harness = OAuthHarness(kind, clock, token_rate_limit="2/minute")
        call = harness.build()
        client_id, secret = harness.client()
        request = token_request(GRANT, auth=basic(client_id, secret))
        replies = [await call(request) for _ in range(3)]
        assert [r.status for r in replies] == [200, 200, 429]
        assert replies[2].json()["error"] == "rate_limited"
        assert int(replies[2].header("retry-after") or 0) >= 1
        other_id, other_secret = harness.client()
        assert (await call(token_request(GRANT, auth=basic(other_id, other_secret)))).status == 200
        clock.advance(30)
        assert (await call(request)).status == 200


@pytest.mark.anyio
async def test_loopback_may_use_plain_http_and_the_option_allows_it(clock: FakeClock) -> None:
    for kind in KINDS:
        harness = OAuthHarness(kind, clock)
        client_id, secret = harness.client()
        local = token_request(
            GRANT, auth=basic(client_id, secret), scheme="http", client="127.0.0.1"
        )
        assert (await harness.build()(local)).status == 200
        lax = OAuthHarness(kind, clock, require_https=False)
        lax.store = harness.store
        remote = token_request(GRANT, auth=basic(client_id, secret), scheme="http")
        assert (await lax.build()(remote)).status == 200


@pytest.mark.anyio
async def test_metadata_and_jwks(harness: OAuthHarness) -> None:
    call = harness.build()
    meta = await call(Request(path="/.well-known/oauth-authorization-server"))
    assert meta.status == 200
    assert meta.json() == {
        "issuer": ISSUER,
        "token_endpoint": ISSUER + "/oauth/token",
        "jwks_uri": ISSUER + "/oauth/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": [],
    }
    jwks = await call(Request(path="/oauth/jwks.json"))
    assert jwks.status == 200
    assert jwks.header("cache-control") == "public, max-age=300"
    assert jwks.json() == KEYS.jwks()
    for key in jwks.json()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    head = await call(Request(method="HEAD", path="/oauth/jwks.json"))
    assert head.status == 200
    assert head.body == b""
    post = await call(Request(method="POST", path="/oauth/jwks.json"))
    assert post.status == 405
    assert post.header("allow") == "GET, HEAD"
    missing = await call(Request(path="/elsewhere"))
    assert missing.status == 404


@pytest.mark.anyio
async def test_scopes_supported_and_an_issuer_with_a_path(clock: FakeClock) -> None:
    harness = OAuthHarness(
        "asgi", clock, issuer="https://auth.example.com/tenant1", scopes_supported=["a", "b"]
    )
    meta = await harness.build()(Request(path="/.well-known/oauth-authorization-server/tenant1"))
    assert meta.status == 200
    assert meta.json()["scopes_supported"] == ["a", "b"]
    assert meta.json()["issuer"] == "https://auth.example.com/tenant1"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"issuer": "http://auth.example.com"}, "https", id="http-issuer"),
        pytest.param({"issuer": "https://a.example/?x=1"}, "query", id="issuer-query"),
        pytest.param({"audiences": []}, "audiences", id="no-audience"),
        pytest.param({"token_lifetime": timedelta(days=2)}, "token_lifetime", id="lifetime"),
        pytest.param({"token_path": "oauth/token"}, "token_path", id="relative-path"),
        pytest.param({"realm": 'a"b'}, "realm", id="realm"),
        pytest.param({"scopes_supported": ["a b"]}, "scope", id="scope-token"),
    ],
)
def test_bad_configuration_is_refused(
    clock: FakeClock, options: dict[str, Any], message: str
) -> None:
    harness = OAuthHarness("wsgi", clock, **options)
    with pytest.raises(ValueError, match=message):
        harness.build()


@pytest.mark.anyio
async def test_each_decision_is_logged_without_secrets(
    harness: OAuthHarness, caplog: pytest.LogCaptureFixture
) -> None:
    client_id, secret = harness.client()
    call = harness.build()
    with caplog.at_level("INFO", logger="keyguard.access"):
        token = (await call(token_request(GRANT, auth=basic(client_id, secret)))).json()
        await call(token_request(GRANT, auth=basic(client_id, "cs_live_wrong")))
    issued, refused = caplog.records[-2:]
    assert (
        issued.getMessage() == f"token request 200: issued client_id={client_id} client=203.0.113.9"
    )
    assert (
        refused.getMessage()
        == "token request 401: invalid_client client_id=None client=203.0.113.9"
    )
    logged = caplog.text
    assert secret not in logged
    assert token["access_token"] not in logged
