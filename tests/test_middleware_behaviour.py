"""What both middlewares do with good requests and with each option, run on each of them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from keyguard import (
    ANONYMOUS,
    AsyncKeyManager,
    KeyguardMiddleware,
    KeyguardWSGIMiddleware,
    KeyManager,
    MiddlewareOptions,
    Principal,
)
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import Request
from tests._middleware_apps import (
    BrokenStore,
    CountingStore,
    Harness,
    Seen,
    _asgi_app,
    _wsgi_app,
    with_key,
)


@pytest.fixture(params=["asgi", "wsgi"])
def h(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    return Harness(request.param, clock)


@pytest.mark.anyio
async def test_a_valid_key_reaches_the_app_as_its_principal(h: Harness) -> None:
    token = h.key(scopes=["billing:read"], name="ci")
    reply = await h.build()(with_key(token))
    assert (reply.status, reply.body) == (200, b"ok")
    principal = h.seen.principal
    assert isinstance(principal, Principal)
    assert (principal.owner, principal.name, principal.scopes) == (
        "acme",
        "ci",
        frozenset({"billing:read"}),
    )
    if h.kind == "asgi":
        assert h.seen.user is principal


@pytest.mark.anyio
async def test_public_paths_exact_and_prefix(h: Harness) -> None:
    call = h.build(MiddlewareOptions(public_paths=["/health"], public_prefixes=["/docs"]))
    for path in ("/health", "/docs", "/docs/", "/docs/oauth2-redirect"):
        reply = await call(Request(path=path))
        assert reply.status == 200, path
        assert h.seen.principal is None
        if h.kind == "asgi":
            assert h.seen.user is ANONYMOUS
    for path in ("/health/", "/healthz", "/docsx", "/docs/../invoices", "/docs/./x", "/docs/.."):
        assert (await call(Request(path=path))).status == 401, path


@pytest.mark.anyio
async def test_public_paths_do_not_look_at_credentials_or_the_url(h: Harness) -> None:
    call = h.build(MiddlewareOptions(public_paths=["/health"]))
    request = Request(path="/health", query=b"token=x", headers=[(b"authorization", b"Basic x")])
    assert (await call(request)).status == 200


@pytest.mark.anyio
async def test_optional_lets_anonymous_through_but_checks_a_sent_key(h: Harness) -> None:
    call = h.build(MiddlewareOptions(optional=True))
    reply = await call(Request())
    assert reply.status == 200
    assert h.seen.principal is None
    assert (await call(with_key("sk_live_garbage"))).status == 401
    token = h.key()
    assert (await call(with_key(token))).status == 200
    assert isinstance(h.seen.principal, Principal)


@pytest.mark.anyio
async def test_optional_form_body_is_inspected_and_handed_on_intact(h: Harness) -> None:
    call = h.build(MiddlewareOptions(optional=True))
    body = b"name=widget&amount=" + b"9" * 40
    request = Request(
        method="POST",
        headers=[(b"content-type", b"application/x-www-form-urlencoded")],
        body=body,
    )
    assert (await call(request)).status == 200
    assert h.seen.body == body
    request.body = b"name=widget&api_key=sk_live_x"
    assert (await call(request)).status == 400


@pytest.mark.anyio
async def test_form_body_larger_than_the_limit_is_not_read(h: Harness) -> None:
    call = h.build(MiddlewareOptions(optional=True, max_form_bytes=16))
    body = b"padding=" + b"x" * 32 + b"&api_key=sk"
    request = Request(
        method="POST",
        headers=[(b"content-type", b"application/x-www-form-urlencoded")],
        body=body,
    )
    assert (await call(request)).status == 200
    assert h.seen.body == body


@pytest.mark.anyio
async def test_a_json_body_is_never_read_by_the_middleware(h: Harness) -> None:
    call = h.build(MiddlewareOptions(optional=True))
    body = b'{"api_key": "sk_live_x"}'
    request = Request(method="POST", headers=[(b"content-type", b"application/json")], body=body)
    assert (await call(request)).status == 200
    assert h.seen.body == body


@pytest.mark.anyio
async def test_required_scopes_give_403_with_the_scope(h: Harness) -> None:
    call = h.build(MiddlewareOptions(required_scopes=["billing:write", "billing:read"]))
    reply = await call(with_key(h.key(scopes=["billing:read"])))
    assert reply.status == 403
    assert reply.header("www-authenticate") == (
        'Bearer realm="api", error="insufficient_scope", scope="billing:write"'
    )
    assert reply.header("cache-control") == "no-store"
    problem = reply.json()
    assert (problem["error"], problem["scope"]) == ("insufficient_scope", "billing:write")
    assert "billing:write" in problem["detail"]
    both = await call(with_key(h.key(scopes=["billing:read", "billing:write", "x"])))
    assert both.status == 200


@pytest.mark.anyio
async def test_realm_is_configurable(h: Harness) -> None:
    reply = await h.build(MiddlewareOptions(realm="billing api"))(Request())
    assert reply.header("www-authenticate") == 'Bearer realm="billing api"'


def test_realm_with_a_quote_is_refused() -> None:
    with pytest.raises(ValueError, match="realm"):
        MiddlewareOptions(realm='a"b')


@pytest.mark.anyio
async def test_store_failure_fails_closed_with_503(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    token = h.key()
    reply = await h.build(store=BrokenStore())(with_key(token))
    assert reply.status == 503
    assert reply.header("retry-after") == "1"
    assert reply.header("cache-control") == "no-store"
    assert reply.header("www-authenticate") is None
    assert reply.json()["error"] == "temporarily_unavailable"
    assert h.seen.principal == "not called"
    access = [r for r in caplog.records if r.name == "keyguard.access"]
    assert [r.levelno for r in access] == [logging.ERROR]


@pytest.mark.anyio
async def test_wrong_environment_is_refused_before_any_lookup(h: Harness) -> None:
    # The store cannot even be reached: only a refusal made before the lookup can be a 401.
    token = h.key(environment="test")
    reply = await h.build(MiddlewareOptions(environment="live"), store=BrokenStore())(
        with_key(token)
    )
    assert reply.status == 401
    assert reply.json()["detail"] == "this API accepts only 'live' keys"


@pytest.mark.anyio
async def test_last_used_is_written_behind_not_on_every_request(h: Harness) -> None:
    store = CountingStore()
    issued = KeyManager(store, clock=h.clock).create("acme")
    call = h.build(store=store)
    first_use = h.clock.now()
    assert (await call(with_key(issued.token))).status == 200
    # The background writer writes the first use at once (at the loop's next turn, or on
    # its thread) ...
    async with asyncio.timeout(30):
        while not store.touches:
            await asyncio.sleep(0)
    # ... and keeps the next ones for its next batch, a minute later: no request writes.
    for _ in range(4):
        h.clock.advance(2)
        assert (await call(with_key(issued.token))).status == 200
        await asyncio.sleep(0)
    assert store.touches == [{issued.key_id: first_use}]
    record = store.get(issued.key_id)
    assert record is not None
    assert record.last_used_at == first_use


def test_environment_must_be_one_of_the_key_format(h: Harness) -> None:
    with pytest.raises(ValueError, match="environment"):
        h.build(MiddlewareOptions(environment="staging"))


@pytest.mark.parametrize(
    ("scheme", "client", "status"),
    [
        ("https", "203.0.113.9", 200),
        ("http", "127.0.0.1", 200),
        ("http", "127.10.0.3", 200),
        ("http", "::1", 200),
        ("http", None, 200),
        ("http", "203.0.113.9", 400),
        ("http", "10.1.2.3", 400),
        ("http", "::ffff:203.0.113.9", 400),
    ],
)
@pytest.mark.anyio
async def test_https_policy(h: Harness, scheme: str, client: str | None, status: int) -> None:
    token = h.key()
    reply = await h.build()(with_key(token, scheme=scheme, client=client))
    assert reply.status == status
    if status == 400:
        detail = reply.json()["detail"]
        assert "X-Forwarded-Proto" in detail
        assert "--forwarded-allow-ips" in detail
        assert "require_https=False" in detail
        assert h.seen.principal == "not called"


@pytest.mark.anyio
async def test_https_policy_can_be_turned_off(h: Harness) -> None:
    call = h.build(MiddlewareOptions(require_https=False))
    assert (await call(with_key(h.key(), scheme="http"))).status == 200


@pytest.mark.anyio
async def test_plain_http_without_a_key_is_just_a_401(h: Harness) -> None:
    assert (await h.build()(Request(scheme="http"))).status == 401


@pytest.mark.anyio
async def test_query_names_are_configurable(h: Harness) -> None:
    token = h.key()
    default = h.build()
    assert (await default(with_key(token, query=b"token=abc"))).status == 400
    custom = h.build(MiddlewareOptions(query_param_names=["secret"]))
    assert (await custom(with_key(token, query=b"token=abc&page=2"))).status == 200
    assert (await custom(with_key(token, query=b"Secret=1"))).status == 400
    off = h.build(MiddlewareOptions(query_param_names=()))
    assert (await off(with_key(token, query=b"api_key=1"))).status == 200


@pytest.mark.anyio
async def test_head_refusal_has_headers_but_no_body(h: Harness) -> None:
    reply = await h.build()(Request(method="HEAD"))
    assert reply.status == 401
    assert reply.body == b""
    assert int(reply.header("content-length") or 0) > 0


@pytest.mark.anyio
async def test_one_log_event_per_decision_with_fields(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="keyguard.access")
    token = h.key()
    call = h.build(MiddlewareOptions(public_paths=["/health"]))
    await call(with_key(token, path="/invoices"))
    await call(
        with_key(
            token[:-1] + ("x" if token[-1] != "x" else "y"), path="/invoices\r\nFAKE \x1b[31mred"
        )
    )
    await call(Request(path="/health"))
    records = [r for r in caplog.records if r.name == "keyguard.access"]
    assert len(records) == 2
    allowed, refused = records
    key_id = token.split("_")[2]
    assert allowed.__dict__["outcome"] == "allowed"
    assert (allowed.__dict__["key_id"], allowed.__dict__["owner"]) == (key_id, "acme")
    assert allowed.__dict__["path"] == "/invoices"
    assert allowed.levelno == logging.INFO
    assert refused.__dict__["outcome"] == "malformed_key"
    assert refused.__dict__["status"] == 401
    assert refused.__dict__["path"] == "/invoices\\r\\nFAKE \\x1b[31mred"
    text = refused.getMessage()
    assert "\n" not in text
    assert "\r" not in text
    assert "\x1b" not in text
    assert token[20:] not in caplog.text


def test_middlewares_refuse_the_other_kind_of_manager() -> None:
    store = MemoryKeyStore()
    with pytest.raises(TypeError, match="AsyncKeyManager"):
        KeyguardMiddleware(_asgi_app(Seen()), KeyManager(store))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="KeyManager"):
        KeyguardWSGIMiddleware(_wsgi_app(Seen()), AsyncKeyManager(store))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"public_paths": "/health"}, TypeError),
        ({"public_paths": ["health"]}, ValueError),
        ({"public_prefixes": [""]}, ValueError),
        ({"required_scopes": "billing:read"}, TypeError),
        ({"required_scopes": ["two words"]}, ValueError),
        ({"api_key_header": "X API Key"}, ValueError),
        ({"api_key_header": "Authorization"}, ValueError),
        ({"query_param_names": "api_key"}, TypeError),
        ({"query_param_names": [""]}, ValueError),
        ({"max_form_bytes": -1}, ValueError),
        ({"realm": ""}, ValueError),
    ],
)
def test_bad_options_are_refused_with_a_message(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        MiddlewareOptions(**kwargs)


class _SyncOnlyStore:
    """A store with no async methods, that checks it is called with no event loop running.

    Each method is defined on the class: since Python 3.12 a runtime protocol check looks
    the methods up statically, so methods served by ``__getattr__`` would not count.
    """

    def __init__(self) -> None:
        self._store = MemoryKeyStore()
        self.calls: list[str] = []

    def _call(self, name: str, *args: Any) -> Any:
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        self.calls.append(name)
        return getattr(self._store, name)(*args)

    def get(self, key_id: str) -> Any:
        return self._call("get", key_id)

    def add(self, record: Any) -> None:
        self._call("add", record)

    def update(self, key_id: str, changes: Any) -> Any:
        return self._call("update", key_id, changes)

    def revoke(self, key_id: str, at: Any) -> Any:
        return self._call("revoke", key_id, at)

    def list_keys(self, owner: str | None = None) -> Any:
        return self._call("list_keys", owner)

    def touch(self, last_used: Any) -> None:
        self._call("touch", last_used)

    def close(self) -> None:
        self._call("close")


def test_wsgi_middleware_runs_on_the_sync_store_with_no_event_loop(clock: FakeClock) -> None:
    from keyguard.stores import AsyncKeyStore, KeyStore
    from tests._http_drivers import wsgi_call

    store = _SyncOnlyStore()
    assert isinstance(store, KeyStore)
    assert not isinstance(store, AsyncKeyStore)
    token = KeyManager(store, clock=clock).create("acme").token  # type: ignore[arg-type]
    seen = Seen()
    app = KeyguardWSGIMiddleware(_wsgi_app(seen), KeyManager(store, clock=clock))  # type: ignore[arg-type]
    assert wsgi_call(app, with_key(token)).status == 200
    assert isinstance(seen.principal, Principal)
    assert store.calls == ["add", "get", "touch"]
