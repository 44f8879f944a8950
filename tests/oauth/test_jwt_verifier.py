"""JWT access tokens at the API: both middlewares, beside API keys, per RFC 9068 §4 / RFC 8725."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyguard import (
    Denial,
    DenialReason,
    KeyManager,
    MemoryRateLimiter,
    MiddlewareOptions,
    Principal,
)
from keyguard._drive import drive_sync
from keyguard._steps import Backends
from keyguard.oauth import JWTVerifier, KeySet, SigningKey
from keyguard.stores import MemoryKeyStore
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

KINDS = ["asgi", "wsgi"]


def _verifier(clock: FakeClock, **kwargs: Any) -> JWTVerifier:
    return JWTVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=kwargs.pop("keys", KEYS), clock=clock, **kwargs
    )


async def _token(harness: OAuthHarness, client_id: str, secret: str, **params: str) -> str:
    reply = await harness.build()(
        token_request({"grant_type": "client_credentials", **params}, auth=basic(client_id, secret))
    )
    assert reply.status == 200, reply.body
    return str(reply.json()["access_token"])


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_a_token_from_the_endpoint_opens_the_api_like_a_key(
    kind: str, clock: FakeClock
) -> None:
    harness = OAuthHarness(kind, clock)
    client_id, secret = harness.client(scopes=["billing:read", "x"], rate_limit=None)
    token = await _token(harness, client_id, secret, scope="billing:read")
    call, seen = api(kind, harness.store, clock, _verifier(clock))
    reply = await call(bearer(token))
    assert reply.status == 200, reply.body
    principal = seen.principal
    assert isinstance(principal, Principal)
    assert principal.auth_method == "oauth"
    assert principal.key_id == client_id
    assert principal.owner == "acme"
    assert principal.scopes == {"billing:read"}
    assert principal.environment == "live"
    # The API key path is unchanged beside it.
    key = harness.manager.create("acme").token
    assert (await call(bearer(key))).status == 200
    assert seen.principal.auth_method == "api_key"


@pytest.mark.anyio
async def test_scopes_rate_limits_and_refusals_are_the_same(kind: str, clock: FakeClock) -> None:
    harness = OAuthHarness(kind, clock)
    client_id, secret = harness.client(scopes=["a"])
    token = await _token(harness, client_id, secret)
    scoped, _ = api(
        kind, harness.store, clock, _verifier(clock), MiddlewareOptions(required_scopes=["b"])
    )
    refused = await scoped(bearer(token))
    assert refused.status == 403
    assert refused.json()["error"] == "insufficient_scope"
    limited, _ = api(
        kind,
        harness.store,
        clock,
        _verifier(clock),
        MiddlewareOptions(rate_limit="2/minute"),
        MemoryRateLimiter(clock=clock.monotonic),
    )
    statuses = [(await limited(bearer(token))).status for _ in range(3)]
    assert statuses == [200, 200, 429]


@pytest.mark.anyio
async def test_revocation_and_expiry_of_the_client_reach_its_tokens(
    kind: str, clock: FakeClock
) -> None:
    harness = OAuthHarness(kind, clock)
    verifier = _verifier(clock)
    call, _ = api(kind, harness.store, clock, verifier)
    client_id, secret = harness.client(scopes=["a", "b"])
    token = await _token(harness, client_id, secret)
    assert (await call(bearer(token))).status == 200  # now in the memo
    harness.manager.update(client_id, scopes=["a"])
    reply = await call(bearer(token))
    assert reply.status == 200
    harness.manager.revoke(client_id)
    reply = await call(bearer(token))
    assert reply.status == 401
    assert reply.json()["error"] == "invalid_token"
    assert "revoked" in reply.json()["detail"]
    other_id, other_secret = harness.client(expires_in=timedelta(minutes=1))
    other = await _token(harness, other_id, other_secret)
    assert (await call(bearer(other))).status == 200
    clock.advance(60)
    assert (await call(bearer(other))).status == 401


@pytest.mark.anyio
async def test_a_scope_taken_from_the_client_is_gone_from_its_token(clock: FakeClock) -> None:
    harness = OAuthHarness("wsgi", clock)
    client_id, secret = harness.client(scopes=["a", "b"])
    token = await _token(harness, client_id, secret)
    call, seen = api("wsgi", harness.store, clock, _verifier(clock))
    await call(bearer(token))
    assert seen.principal.scopes == {"a", "b"}
    harness.manager.update(client_id, scopes=["a"])
    await call(bearer(token))
    assert seen.principal.scopes == {"a"}


@pytest.mark.anyio
async def test_the_memo_spares_the_signature_until_the_token_expires(clock: FakeClock) -> None:
    harness = OAuthHarness("wsgi", clock)
    client_id, secret = harness.client()
    token = await _token(harness, client_id, secret)
    later = await _token(harness, client_id, secret)
    verifier = _verifier(clock, leeway=0)
    call, _ = api("wsgi", harness.store, clock, verifier)
    assert (await call(bearer(token))).status == 200
    assert len(verifier.memo) == 1
    # Without the signing key, only a remembered token can still pass: proof it is not re-verified.
    verifier.keys = KeySet(SigningKey.generate())
    assert (await call(bearer(token))).status == 200
    assert (await call(bearer(later))).status == 401
    verifier.keys = KEYS
    clock.advance(600)
    expired = await call(bearer(token))
    assert expired.status == 401
    assert "expired" in expired.json()["detail"]


@pytest.mark.anyio
@pytest.mark.parametrize("part", [0, 1], ids=["header", "claims"])
async def test_a_remembered_signature_over_other_parts_is_another_token(
    clock: FakeClock, part: int
) -> None:
    harness = OAuthHarness("wsgi", clock)
    client_id, secret = harness.client()
    token = await _token(harness, client_id, secret)
    verifier = _verifier(clock)
    call, _ = api("wsgi", harness.store, clock, verifier)
    assert (await call(bearer(token))).status == 200
    # Without the signing key only the memo could let a token through.
    verifier.keys = KeySet(SigningKey.generate())
    assert (await call(bearer(token))).status == 200
    parts = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    decoded["x"] = "1"  # the same signature, over a header or claims it never signed
    parts[part] = _b64(json.dumps(decoded).encode())
    forged = await call(bearer(".".join(parts)))
    assert forged.status == 401
    assert (await call(bearer(token))).status == 200  # the remembered token is still there


def test_the_memo_is_bounded(clock: FakeClock) -> None:
    store = MemoryKeyStore()
    manager = KeyManager(store, clock=clock)
    client_id = manager.create_client("acme").key_id
    verifier = _verifier(clock, memo_size=2)
    for _ in range(3):
        token = KEYS.signing.sign(_claims(clock, sub=client_id, client_id=client_id))
        verified = drive_sync(verifier.verify(token), Backends(store))
        assert verified.principal.key_id == client_id  # type: ignore[union-attr]
    assert len(verifier.memo) == 2


def _claims(clock: FakeClock, **changes: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "c1",
        "client_id": "c1",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": "j1",
        "scope": "a",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], key: bytes = b"") -> str:
    """A compact JWS signed (if at all) with HMAC-SHA256 under ``key``."""
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(key, head.encode(), hashlib.sha256).digest() if key else b""
    return head + "." + _b64(signature)


def _signed(clock: FakeClock, header: dict[str, Any] | None = None, **changes: Any) -> str:
    headers = {"typ": "at+jwt", "kid": KEYS.signing.kid, **(header or {})}
    return jwt.encode(
        _claims(clock, **changes), KEYS.signing._private, algorithm="ES256", headers=headers
    )


def _reheaded(token: str, **header: Any) -> str:
    """``token`` with its header changed and its signature kept."""
    _, payload, signature = token.split(".")
    return _b64(json.dumps({"typ": "at+jwt", "kid": KEYS.signing.kid, **header}).encode()) + (
        "." + payload + "." + signature
    )


PUBLIC_PEM = KEYS.signing.public.pyjwk.key.public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
OTHER_KEY = SigningKey.generate()

BAD_TOKENS = [
    pytest.param(lambda c: _signed(c)[:-20], "signature", id="truncated"),
    pytest.param(lambda c: "!!!." + _signed(c).split(".", 1)[1], "header", id="bad-base64"),
    pytest.param(lambda c: "e30." + _signed(c).split(".", 1)[1], "algorithm", id="no-alg"),
    pytest.param(
        lambda c: _forge({"alg": "none", "typ": "at+jwt"}, _claims(c)), "algorithm", id="alg-none"
    ),
    pytest.param(
        lambda c: _forge({"alg": "HS256", "typ": "at+jwt", "kid": KEYS.signing.kid}, _claims(c),
                         PUBLIC_PEM),
        "algorithm", id="hs256-with-the-public-key",
    ),
    pytest.param(lambda c: _reheaded(_signed(c), alg="RS256"), "algorithm", id="wrong-alg"),
    pytest.param(lambda c: _reheaded(_signed(c), alg="EdDSA"), "algorithm", id="other-alg"),
    pytest.param(lambda c: _signed(c, {"typ": "JWT"}), "typ", id="typ-jwt"),
    pytest.param(lambda c: _signed(c, {"typ": None}), "typ", id="no-typ"),
    pytest.param(lambda c: _signed(c, iss="https://evil.example"), "issuer", id="wrong-iss"),
    pytest.param(lambda c: _signed(c, aud="https://other.example"), "audience", id="wrong-aud"),
    pytest.param(lambda c: _signed(c, exp=int(c.now().timestamp()) - 31), "expired", id="expired"),
    pytest.param(lambda c: _signed(c, nbf=int(c.now().timestamp()) + 60), "nbf", id="future-nbf"),
    pytest.param(lambda c: _signed(c, iat=int(c.now().timestamp()) + 60), "iat", id="future-iat"),
    pytest.param(lambda c: _signed(c, {"kid": "nope"}), "unknown key", id="unknown-kid"),
    pytest.param(lambda c: _signed(c, {"crit": ["exp"]}), "critical", id="crit"),
    pytest.param(lambda c: _signed(c, jti=None), "jti", id="no-jti"),
    pytest.param(lambda c: _signed(c, client_id=None), "client_id", id="no-client-id"),
    pytest.param(lambda c: _signed(c, exp="soon"), "exp", id="exp-not-a-number"),
    pytest.param(lambda c: _signed(c, scope=["a"]), "scope", id="scope-not-a-string"),
    pytest.param(
        lambda c: OTHER_KEY.sign(_claims(c)),
        "unknown key", id="other-key",
    ),
    pytest.param(lambda c: "a.b.c", "header", id="three-garbage-parts"),
    # Anything with a dot is no key, so it is the JWT verifier's to refuse.
    pytest.param(lambda c: _signed(c).rpartition(".")[0], "compact JWS", id="two-parts"),
    pytest.param(lambda c: _signed(c) + ".e30", "compact JWS", id="four-parts"),
    pytest.param(lambda c: "sk_live_x.y", "compact JWS", id="key-like-with-a-dot"),
    pytest.param(lambda c: "x" * 9000 + ".a.b", "longer", id="too-long"),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("make", "detail"), BAD_TOKENS)
async def test_bad_tokens_are_401_invalid_token(
    kind: str, clock: FakeClock, make: Any, detail: str
) -> None:
    call, seen = api(kind, MemoryKeyStore(), clock, _verifier(clock, check_clients=False))
    reply = await call(bearer(make(clock)))
    assert reply.status == 401, reply.body
    assert reply.header("www-authenticate") == 'Bearer realm="api", error="invalid_token"'
    assert reply.json()["error"] == "invalid_token"
    assert detail in reply.json()["detail"]
    assert seen.principal == "not called"


def test_bad_tokens_spend_the_failure_budget_expired_ones_do_not(clock: FakeClock) -> None:
    verifier = _verifier(clock, check_clients=False)
    forged = drive_sync(verifier.verify(_signed(clock, {"kid": "x"})), Backends())
    expired = drive_sync(
        verifier.verify(_signed(clock, exp=int(clock.now().timestamp()) - 60)), Backends()
    )
    assert forged.reason is DenialReason.INVALID_TOKEN  # type: ignore[union-attr]
    assert expired.reason is DenialReason.EXPIRED  # type: ignore[union-attr]


def test_external_tokens_take_their_owner_from_a_claim(clock: FakeClock) -> None:
    verifier = _verifier(clock, check_clients=False, owner_claim="org")
    verified = drive_sync(verifier.verify(_signed(clock, org="acme", scope="a b")), Backends())
    assert verified.principal.owner == "acme"  # type: ignore[union-attr]
    assert verified.principal.scopes == {"a", "b"}  # type: ignore[union-attr]
    assert verified.record is None  # type: ignore[union-attr]
    plain = drive_sync(verifier.verify(_signed(clock, jti="j2")), Backends())
    assert plain.principal.owner == "c1"  # type: ignore[union-attr]


def test_a_token_whose_subject_is_an_api_key_is_refused(clock: FakeClock) -> None:
    store = MemoryKeyStore()
    key_id = KeyManager(store, clock=clock).create("acme").key_id
    token = _signed(clock, sub=key_id, client_id=key_id)
    denial = drive_sync(_verifier(clock).verify(token), Backends(store))
    assert denial.reason is DenialReason.INVALID_TOKEN  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"algorithms": ["HS256"]}, "algorithms", id="hmac"),
        pytest.param({"algorithms": ["none"]}, "algorithms", id="none"),
        pytest.param({"algorithms": []}, "algorithms", id="empty"),
        pytest.param({"leeway": -1}, "leeway", id="negative-leeway"),
        pytest.param({"memo_size": 0}, "memo_size", id="memo"),
    ],
)
def test_bad_verifier_options(clock: FakeClock, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _verifier(clock, **kwargs)


FUZZ_CLOCK = FakeClock()
FUZZ_VERIFIER = _verifier(FUZZ_CLOCK, check_clients=False)
GOOD = _signed(FUZZ_CLOCK)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda i, c: GOOD[:i] + c + GOOD[i + 1 :],
            st.integers(0, len(GOOD) - 1),
            st.sampled_from("AaZz09-_.=+/ "),
        ),
        st.builds(
            lambda h, p: _b64(h) + "." + _b64(p) + ".",
            st.binary(max_size=60),
            st.binary(max_size=60),
        ),
        st.builds(
            lambda h: _forge(h, _claims(FUZZ_CLOCK)),
            st.dictionaries(
                st.sampled_from(["alg", "typ", "kid", "crit", "b64"]),
                st.one_of(
                    st.none(),
                    st.integers(),
                    st.text(max_size=10),
                    st.sampled_from(["ES256", "none", "at+jwt", "HS256"]),
                ),
            ),
        ),
    )
)
def test_no_malformed_token_raises_or_passes(token: str) -> None:
    result = drive_sync(FUZZ_VERIFIER.verify(token), Backends())
    if token == GOOD:
        return
    assert not hasattr(result, "principal"), token


@pytest.mark.parametrize(
    ("url_char", "standard"),
    [pytest.param("-", "+", id="minus"), pytest.param("_", "/", id="underscore")],
)
def test_a_signature_respelt_in_standard_base64_is_refused(
    clock: FakeClock, url_char: str, standard: str
) -> None:
    # base64 decodes "-" and "+" (and "_" and "/") alike: a token would have several spellings.
    verifier = _verifier(clock, check_clients=False)
    token = _signed(clock)
    while url_char not in token.rpartition(".")[2]:  # ES256 signatures differ every time
        token = _signed(clock)
    assert hasattr(drive_sync(verifier.verify(token), Backends()), "principal")
    head, _, signature = token.rpartition(".")
    respelt = f"{head}.{signature.replace(url_char, standard, 1)}"
    denial = drive_sync(verifier.verify(respelt), Backends())
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.INVALID_TOKEN


def test_a_signature_with_its_unused_last_bits_set_is_refused(clock: FakeClock) -> None:
    # 64 signature bytes take 86 base64url characters: the last one carries 2 unused bits.
    verifier = _verifier(clock, check_clients=False)
    token = _signed(clock)
    head, _, signature = token.rpartition(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    respelt = f"{head}.{signature[:-1]}{alphabet[last | 1]}"
    assert respelt != token
    denial = drive_sync(verifier.verify(respelt), Backends())
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.INVALID_TOKEN
