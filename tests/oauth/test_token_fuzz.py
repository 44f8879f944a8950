"""Malformed token requests: never an exception (a 500), never a token without the secret."""

from __future__ import annotations

import base64
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyguard.oauth.wsgi import AuthorizationServerWSGIApp
from keyguard.testing import FakeClock
from tests._http_drivers import Request, wsgi_call
from tests.oauth._harness import OAuthHarness, basic, token_request

HARNESS = OAuthHarness("wsgi", FakeClock(), failure_limit=None)
CLIENT_ID, SECRET = HARNESS.client(scopes=["a", "b"])
APP = AuthorizationServerWSGIApp(HARNESS.server(HARNESS.manager))


def _call(request: Request) -> tuple[int, bytes]:
    reply = wsgi_call(APP, request)
    assert reply.status != 500
    assert reply.status in (200, 400, 401, 405, 429), reply.body
    if reply.status != 200:
        assert reply.json()["error"]
    return reply.status, reply.body


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PARAM_NAMES = st.sampled_from(
    ["grant_type", "client_id", "client_secret", "scope", "resource", "x", "", "grant_type%00"]
)
PARAM_VALUES = st.one_of(
    st.sampled_from(["client_credentials", CLIENT_ID, SECRET, "a", "a b", "", "%ZZ", "%C3%28"]),
    st.text(max_size=40),
)


@SETTINGS
@given(st.binary(max_size=300))
def test_any_body_bytes(body: bytes) -> None:
    status, _ = _call(token_request(body, auth=basic(CLIENT_ID, SECRET)))
    # Bytes that happen to say grant_type=client_credentials earn a token, nothing else does.
    if status == 200:
        assert b"grant_type=client_credentials" in body


@SETTINGS
@given(st.lists(st.tuples(PARAM_NAMES, PARAM_VALUES), max_size=6))
def test_any_form_without_the_secret_gets_no_token(pairs: list[tuple[str, str]]) -> None:
    body = "&".join(f"{quote(k, safe='%')}={quote(v, safe='%')}" for k, v in pairs)
    status, _ = _call(token_request(body))
    if status == 200:
        assert ("client_secret", SECRET) in pairs


@SETTINGS
@given(st.one_of(st.binary(max_size=200), st.text(max_size=120).map(str.encode)))
def test_any_basic_header(raw: bytes) -> None:
    value = b"Basic " + base64.b64encode(raw)
    status, _ = _call(
        token_request({"grant_type": "client_credentials"}, auth=(b"authorization", value))
    )
    if status == 200:
        assert SECRET.encode() in raw


@SETTINGS
@given(st.binary(max_size=200))
def test_any_authorization_value(value: bytes) -> None:
    status, _ = _call(
        token_request({"grant_type": "client_credentials"}, auth=(b"authorization", value))
    )
    assert status != 200


@SETTINGS
@given(st.text(alphabet="%+:abcAB12=&", max_size=40), st.text(alphabet="%+:cs_live12", max_size=60))
def test_percent_encoded_ids_and_secrets(client_id: str, secret: str) -> None:
    raw = f"{client_id}:{secret}".encode()
    status, _ = _call(
        token_request(
            {"grant_type": "client_credentials"},
            auth=(b"authorization", b"Basic " + base64.b64encode(raw)),
        )
    )
    assert status != 200
