"""The OAuth side of both examples: clients made with the CLI exchange their secret at
``/oauth/token`` and call ``/invoices`` with the access token, under the same scopes as keys;
signing keys and the issuer come from the environment."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from keyguard import AsyncKeyManager, cli
from keyguard.oauth import load_signing_key
from tests._http_drivers import Reply, Request, asgi_call, wsgi_call
from tests.examples.conftest import Load, MakeClient, MakeKey

Call = Callable[[Request], Awaitable[Reply]]
EXAMPLES = [pytest.param("fastapi_app", id="fastapi"), pytest.param("flask_app", id="flask")]
INVOICE = b'{"customer": "Initech", "amount_cents": 500}'


def _caller(module: ModuleType) -> Call:
    """Requests to the example's outermost app: ASGI directly, WSGI under the validator."""
    if module.__name__.endswith("fastapi_app"):
        return lambda request: asgi_call(module.app, request)

    async def call(request: Request) -> Reply:
        return wsgi_call(module.app.wsgi_app, request)

    return call


def _local(
    method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> Request:
    """A request from this machine over plain HTTP, as curl sends to the running example."""
    return Request(
        method=method, path=path, headers=headers, body=body, scheme="http", client="127.0.0.1"
    )


def _token_request(client_id: str, secret: str, **params: str) -> Request:
    basic = base64.b64encode(f"{client_id}:{secret}".encode())
    form = "&".join(f"{k}={v}" for k, v in {"grant_type": "client_credentials", **params}.items())
    return _local(
        "POST",
        "/oauth/token",
        [
            (b"authorization", b"Basic " + basic),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ],
        form.encode(),
    )


def _bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def _claims(token: str, part: int) -> Any:
    segment = token.split(".")[part]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


async def _shut_down(module: ModuleType) -> None:
    """Close the ASGI example's manager on the test's own event loop, as its lifespan
    shutdown would: its last-used writer is a task of this loop, and cut off by the loop's
    end it could leave a pooled connection checked out. (The WSGI one closes at exit.)"""
    if isinstance(module.manager, AsyncKeyManager):
        await module.manager.aclose()


def _keygen(path: Path) -> str:
    """``keyguard oauth keygen --out path``; the kid it printed."""
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["oauth", "keygen", "--out", str(path)], stdout=out, stderr=err) == 0, err
    return out.getvalue().strip()


@pytest.mark.anyio
@pytest.mark.parametrize("name", EXAMPLES)
async def test_a_client_made_with_the_cli_gets_a_token_and_calls_the_api(
    name: str, load_example: Load, make_client: MakeClient, make_key: MakeKey
) -> None:
    module = load_example(name)
    call = _caller(module)
    reader_id, reader_secret = make_client("billing:read")
    writer_id, writer_secret = make_client("billing:read", "billing:write")
    # Made now, not between requests: the command is synchronous, and run on the test's
    # event loop it would stall the app's last-used writer in the middle of its write.
    api_key = make_key("billing:read")

    try:
        issued = await call(_token_request(reader_id, reader_secret))
        assert issued.status == 200, issued.body
        assert issued.header("cache-control") == "no-store"
        body = issued.json()
        assert (body["token_type"], body["expires_in"], body["scope"]) == (
            "Bearer",
            600,
            "billing:read",
        )
        token = body["access_token"]
        assert _claims(token, 0)["typ"] == "at+jwt"
        claims = _claims(token, 1)
        assert (claims["iss"], claims["aud"]) == ("http://127.0.0.1:8000", "http://127.0.0.1:8000")
        assert (claims["client_id"], claims["owner"]) == (reader_id, "acme")

        listed = await call(_local("GET", "/invoices", _bearer(token)))
        assert listed.status == 200, listed.body
        assert listed.json() == {"owner": "acme", "invoices": []}
        assert listed.header("ratelimit-policy") == '"default";q=100;w=60'

        # The same scopes as keys: a token with billing:read only cannot write.
        json_type = [(b"content-type", b"application/json")]
        refused = await call(_local("POST", "/invoices", _bearer(token) + json_type, INVOICE))
        assert refused.status == 403
        assert refused.json()["error"] == "insufficient_scope"
        writer = (await call(_token_request(writer_id, writer_secret))).json()["access_token"]
        created = await call(_local("POST", "/invoices", _bearer(writer) + json_type, INVOICE))
        assert created.status == 201, created.body
        assert created.json()["created_by_key"] == writer_id
        # A key of the same owner sees the invoice a token made: one principal model.
        by_key = await call(_local("GET", "/invoices", _bearer(api_key)))
        assert by_key.json()["invoices"] == [created.json()]

        # A scope the client lacks is refused at the token endpoint; a wrong secret is 401.
        too_much = await call(_token_request(reader_id, reader_secret, scope="billing:write"))
        assert (too_much.status, too_much.json()["error"]) == (400, "invalid_scope")
        wrong = await call(
            _token_request(
                reader_id, reader_secret[:-1] + ("y" if reader_secret.endswith("x") else "x")
            )
        )
        assert (wrong.status, wrong.json()["error"]) == (401, "invalid_client")
        # The secret itself is no bearer token at the API.
        as_bearer = await call(_local("GET", "/invoices", _bearer(reader_secret)))
        assert (as_bearer.status, as_bearer.json()["error"]) == (401, "invalid_token")
        assert reader_secret[20:] not in as_bearer.body.decode()
    finally:
        await _shut_down(module)


@pytest.mark.anyio
@pytest.mark.parametrize("name", EXAMPLES)
async def test_metadata_and_jwks_name_the_configured_issuer_and_keys(
    name: str,
    load_example: Load,
    make_client: MakeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current, following = tmp_path / "current.pem", tmp_path / "next.pem"
    kids = [_keygen(current), _keygen(following)]
    monkeypatch.setenv("KEYGUARD_OAUTH_SIGNING_KEYS", f"{current}, {following}")
    monkeypatch.setenv("KEYGUARD_OAUTH_ISSUER", "http://127.0.0.1:5000")
    call = _caller(load_example(name))

    metadata = await call(_local("GET", "/.well-known/oauth-authorization-server", []))
    assert metadata.status == 200
    document = metadata.json()
    assert document["issuer"] == "http://127.0.0.1:5000"
    assert document["token_endpoint"] == "http://127.0.0.1:5000/oauth/token"
    assert document["grant_types_supported"] == ["client_credentials"]
    assert document["scopes_supported"] == ["billing:read", "billing:write"]
    jwks = await call(_local("GET", "/oauth/jwks.json", []))
    assert [key["kid"] for key in jwks.json()["keys"]] == kids
    assert all("d" not in key for key in jwks.json()["keys"])

    client_id, secret = make_client("billing:read")
    token = (await call(_token_request(client_id, secret))).json()["access_token"]
    assert _claims(token, 0)["kid"] == kids[0]  # the first signs
    assert _claims(token, 1)["iss"] == "http://127.0.0.1:5000"
    assert (await call(_local("GET", "/invoices", _bearer(token)))).status == 200
    # The second only verifies: a token it signed (as after the switch of a rotation) works.
    claims = _claims(token, 1)
    resigned = load_signing_key(following).sign({**claims, "jti": "next"})
    assert (await call(_local("GET", "/invoices", _bearer(resigned)))).status == 200


@pytest.mark.anyio
@pytest.mark.parametrize("name", EXAMPLES)
async def test_without_a_signing_key_one_is_made_with_a_warning(
    name: str, load_example: Load, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="examples"):
        call = _caller(load_example(name))
    warnings = [r for r in caplog.records if r.name == "examples._billing"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "will not survive a restart" in warnings[0].getMessage()
    assert "keyguard oauth keygen" in warnings[0].getMessage()
    client_id, secret = make_client("billing:read")
    token = (await call(_token_request(client_id, secret))).json()["access_token"]
    assert (await call(_local("GET", "/invoices", _bearer(token)))).status == 200


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize(
    ("write", "message"),
    [
        pytest.param(None, "cannot read", id="missing"),
        pytest.param(b"not a key\n", "holds no readable PEM private key", id="not-a-key"),
    ],
)
def test_a_bad_signing_key_file_stops_the_app_with_a_clear_error(
    name: str,
    load_example: Load,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write: bytes | None,
    message: str,
) -> None:
    path = tmp_path / "signing.pem"
    if write is not None:
        path.write_bytes(write)
    monkeypatch.setenv("KEYGUARD_OAUTH_SIGNING_KEYS", str(path))
    with pytest.raises(RuntimeError, match=f"KEYGUARD_OAUTH_SIGNING_KEYS: .*{message}"):
        load_example(name)
