"""The Flask example, driven through wsgiref's validator on both sides of the middleware."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from wsgiref.validate import validator

import pytest

from keyguard import KeyguardWSGIMiddleware
from keyguard.oauth.wsgi import AuthorizationServerWSGIApp
from tests._http_drivers import Request, wsgi_call
from tests.examples.conftest import Load, MakeKey

ROOT = Path(__file__).resolve().parents[2]


def _validated_app(load_example: Load) -> AuthorizationServerWSGIApp:
    module = load_example("flask_app")
    outer = module.app.wsgi_app
    # The token endpoint in front, then the middleware, then Flask.
    assert isinstance(outer, AuthorizationServerWSGIApp)
    middleware = outer.app
    assert isinstance(middleware, KeyguardWSGIMiddleware)
    # A validator between the middleware and Flask, too: the middleware must call
    # the app as a WSGI server would (and hand a replayed body on as a valid stream).
    middleware.app = validator(middleware.app)
    outer.app = validator(middleware)
    return outer


def _json_post(token: str, body: object) -> Request:
    return Request(
        method="POST",
        headers=[
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
        ],
        body=json.dumps(body).encode(),
    )


def test_the_billing_api_under_the_wsgi_validator(load_example: Load, make_key: MakeKey) -> None:
    app = _validated_app(load_example)
    reader = make_key("billing:read")
    writer = make_key("billing:read", "billing:write")

    health = wsgi_call(app, Request(path="/health", scheme="http", client="127.0.0.1"))
    assert (health.status, json.loads(health.body)) == (200, {"status": "ok"})

    read = [(b"authorization", f"Bearer {reader}".encode())]
    listed = wsgi_call(app, Request(headers=read))
    assert (listed.status, json.loads(listed.body)) == (200, {"owner": "acme", "invoices": []})
    # No KEYGUARD_RATE_LIMIT: the documented default, 100 a minute per key.
    assert listed.header("ratelimit-policy") == '"default";q=100;w=60'

    refused = wsgi_call(app, _json_post(reader, {"customer": "Initech", "amount_cents": 500}))
    assert refused.status == 403
    assert refused.header("www-authenticate") == (
        'Bearer realm="api", error="insufficient_scope", scope="billing:write"'
    )
    assert refused.header("content-type") == "application/problem+json"
    assert refused.header("cache-control") == "no-store"

    created = wsgi_call(app, _json_post(writer, {"customer": "Initech", "amount_cents": 500}))
    assert created.status == 201
    invoice = json.loads(created.body)
    assert invoice["customer"] == "Initech"
    again = wsgi_call(app, Request(headers=read))
    assert json.loads(again.body)["invoices"] == [invoice]

    invalid = wsgi_call(app, _json_post(writer, {"customer": "", "amount_cents": 0}))
    assert invalid.status == 422

    assert wsgi_call(app, Request()).status == 401
    in_url = wsgi_call(app, Request(query=f"api_key={reader}".encode()))
    assert in_url.status == 400
    in_form = wsgi_call(
        app,
        Request(
            method="POST",
            headers=[(b"content-type", b"application/x-www-form-urlencoded")],
            body=f"access_token={reader}".encode(),
        ),
    )
    assert in_form.status == 400
    head = wsgi_call(app, Request(method="HEAD"))
    assert (head.status, head.body) == (401, b"")


def test_revoking_with_the_cli_takes_effect(load_example: Load, make_key: MakeKey) -> None:
    from keyguard import cli

    app = _validated_app(load_example)
    token = make_key("billing:read")
    headers = [(b"authorization", f"Bearer {token}".encode())]
    assert wsgi_call(app, Request(headers=headers)).status == 200
    assert cli.main(["keys", "revoke", token.split("_")[2]]) == 0
    # The app's lookup cache trusts a record for at most its TTL; a fresh app sees it at once.
    fresh = _validated_app(load_example)
    assert wsgi_call(fresh, Request(headers=headers)).status == 401


def test_rate_limit_from_the_environment(
    load_example: Load, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGUARD_RATE_LIMIT", "2/minute")
    app = _validated_app(load_example)
    headers = [(b"authorization", f"Bearer {make_key('billing:read')}".encode())]
    first = wsgi_call(app, Request(headers=headers))
    assert first.header("ratelimit-policy") == '"default";q=2;w=60'
    assert wsgi_call(app, Request(headers=headers)).status == 200
    refused = wsgi_call(app, Request(headers=headers))
    assert refused.status == 429
    assert refused.header("retry-after") == "30"


@pytest.mark.redis
def test_rate_limit_kept_in_redis_when_configured(
    load_example: Load, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    import redis

    monkeypatch.setenv("KEYGUARD_RATE_LIMIT", "2/minute")
    monkeypatch.setenv("KEYGUARD_REDIS_URL", redis_url)
    token = make_key("billing:read")
    headers = [(b"authorization", f"Bearer {token}".encode())]
    client = redis.Redis.from_url(redis_url)
    pattern = "kg:rl:{" + token.split("_")[2] + "}*"
    try:
        # Two app instances (two processes, as far as the limit is concerned) share it.
        first, second = _validated_app(load_example), _validated_app(load_example)
        assert wsgi_call(first, Request(headers=headers)).status == 200
        assert wsgi_call(second, Request(headers=headers)).status == 200
        assert wsgi_call(first, Request(headers=headers)).status == 429
        assert list(client.scan_iter(match=pattern))
    finally:
        for key in client.scan_iter(match=pattern):
            client.delete(key)
        client.close()


def test_the_last_uses_still_pending_are_written_at_exit(
    database_url: str, make_key: MakeKey
) -> None:
    from keyguard.stores.sql import SQLKeyStore

    tokens = [make_key("billing:read"), make_key("billing:read")]
    # The writer thread writes the first use at once; the second waits for its next
    # batch, which only the example's exit handler writes in a process that ends now.
    script = (
        "import sys\n"
        "from examples.flask_app import app\n"
        "client = app.test_client()\n"
        "for token in sys.argv[1:]:\n"
        "    response = client.get('/invoices', headers={'Authorization': 'Bearer ' + token})\n"
        "    assert response.status_code == 200, response.status_code\n"
    )
    subprocess.run([sys.executable, "-c", script, *tokens], cwd=ROOT, check=True, timeout=60)
    store = SQLKeyStore(database_url)
    try:
        used = {record.key_id: record.last_used_at for record in store.list_keys()}
    finally:
        store.close()
    assert len(used) == 2
    assert all(when is not None for when in used.values()), used
