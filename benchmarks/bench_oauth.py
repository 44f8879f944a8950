"""OAuth costs, in-process: the token endpoint, and JWT requests beside API-key requests.

Token endpoint: requests per second of the ASGI authorization server called
directly (memory store, Basic authentication, ES256), beside the cost of one
signature alone (PyJWT's ``jwt.encode`` of the same claims with the same key).

API requests through the ASGI stack (bare Starlette app with one route, and
keyguard's middleware in front, as in ``bench_middleware.py``):

- an API key (memory store, token memo warm);
- a JWT seen before (warm: the verified-token memo answers, plus the client's
  record from the store);
- a JWT seen for the first time (cold: two tokens alternate through a memo of
  one, so every request verifies a signature), beside PyJWT's own
  ``jwt.decode`` of the same token (signature, ``exp``, ``iss``, ``aud``).

Targets: warm JWT <= 1 µs more than the API-key request; cold JWT overhead
(minus the bare app) <= 1.3x PyJWT's ``decode``; the token endpoint <= 1.5x
the cost of one signature.

Timings on a shared machine move with its load; with
``KEYGUARD_BENCH_INSTRUCTIONS=1`` (and valgrind) the same comparisons are also
made in instructions counted by callgrind (as ``bench_instructions.py`` does),
which do not.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _harness import Row, callgrind_count, median_difference, time_async_interleaved

ISSUER = "https://auth.example.com"
AUDIENCE = "https://api.example.com"
BASE_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "scheme": "https",
    "root_path": "",
    "query_string": b"",
    "client": ("10.0.0.7", 51234),
    "server": ("10.0.0.1", 443),
}
COMMON = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"application/json"),
]


def _setup() -> dict[str, Any]:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from keyguard import AsyncKeyManager, KeyguardMiddleware, KeyManager
    from keyguard.oauth import AuthorizationServer, JWTVerifier, KeySet, SigningKey
    from keyguard.oauth.asgi import AuthorizationServerApp
    from keyguard.stores import MemoryKeyStore

    async def invoices(request: Request) -> PlainTextResponse:
        return PlainTextResponse("[]")

    routes = [Route("/invoices", invoices)]
    store = MemoryKeyStore()
    keys = KeySet(SigningKey.generate("ES256"))
    sync = KeyManager(store, last_used=None)
    client = sync.create_client("bench", scopes=["billing:read"])
    api_key = sync.create("bench", scopes=["billing:read"]).token
    manager = AsyncKeyManager(store, last_used=None)
    server = AuthorizationServer(
        manager, keys, issuer=ISSUER, audiences=AUDIENCE, token_rate_limit=None
    )
    endpoint = AuthorizationServerApp(server)

    def verifier(memo_size: int = 10_000) -> JWTVerifier:
        return JWTVerifier(issuer=ISSUER, audience=AUDIENCE, keys=keys, memo_size=memo_size)

    def stack(jwt_verifier: JWTVerifier) -> Starlette:
        return Starlette(
            routes=routes,
            middleware=[Middleware(KeyguardMiddleware, manager, jwt_verifier=jwt_verifier)],
        )

    now = int(time.time())
    claims = {
        "iss": ISSUER, "sub": client.key_id, "client_id": client.key_id, "aud": AUDIENCE,
        "iat": now, "exp": now + 3600, "scope": "billing:read", "owner": "bench",
    }  # fmt: skip
    tokens = [keys.signing.sign({**claims, "jti": str(i)}) for i in range(2)]
    basic = base64.b64encode(f"{client.key_id}:{client.token}".encode())
    return {
        "bare": Starlette(routes=routes),
        "warm": stack(verifier()),
        "cold": stack(verifier(memo_size=1)),
        "endpoint": endpoint,
        "keys": keys,
        "claims": claims,
        "tokens": tokens,
        "api_key": api_key,
        "basic": basic,
    }


def samples() -> dict[str, list[float]]:
    import jwt

    setup = _setup()
    statuses: list[int] = []
    checking = [True]
    token_body = b"grant_type=client_credentials"

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": token_body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if checking[0] and message["type"] == "http.response.start":
            statuses.append(message["status"])

    def api_call(app: Any, token: str | None) -> Any:
        headers = (
            COMMON if token is None else [*COMMON, (b"authorization", f"Bearer {token}".encode())]
        )
        scope = {**BASE_SCOPE, "method": "GET", "path": "/invoices", "headers": headers}

        async def call() -> None:
            await app(dict(scope), receive, send)

        return call

    tokens = setup["tokens"]
    cold_app = setup["cold"]
    flip = [0]

    async def cold() -> None:
        flip[0] ^= 1
        await api_call(cold_app, tokens[flip[0]])()

    endpoint_scope = {
        **BASE_SCOPE,
        "method": "POST",
        "path": "/oauth/token",
        "headers": [
            *COMMON,
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"authorization", b"Basic " + setup["basic"]),
        ],
    }

    async def token_request() -> None:
        await setup["endpoint"](dict(endpoint_scope), receive, send)

    keys = setup["keys"]
    public = keys.signing.public.pyjwk
    private = keys.signing._private
    # The endpoint's claims and header: a jti as long as its own, the key's real kid.
    claims = {**setup["claims"], "jti": "x" * 22}
    headers = {"typ": "at+jwt", "kid": keys.signing.kid}

    async def sign() -> None:
        jwt.encode(claims, private, algorithm="ES256", headers=headers)

    async def decode() -> None:
        jwt.decode(tokens[0], public, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)

    cases = {
        "bare": api_call(setup["bare"], None),
        "key": api_call(setup["warm"], setup["api_key"]),
        "jwt-warm": api_call(setup["warm"], tokens[0]),
        "jwt-cold": cold,
        "endpoint": token_request,
    }

    async def measure() -> dict[str, list[float]]:
        for name, call in cases.items():
            statuses.clear()
            await call()
            assert statuses == [200], (name, statuses)
        checking[0] = False
        # PyJWT alone is timed in the same rounds, so that load on a shared machine falls
        # on every row alike.
        return await time_async_interleaved({**cases, "sign": sign, "decode": decode}, rounds=21)

    return asyncio.run(measure())


def rows() -> Iterator[Row]:
    timed = samples()
    median = {name: statistics.median(values) for name, values in timed.items()}
    group = "oauth"
    yield Row(group, "PyJWT jwt.encode, one ES256 signature", median["sign"])
    yield Row(group, "token endpoint (ASGI, Basic auth, ES256)", median["endpoint"])
    yield Row(group, "token endpoint", 1e6 / median["endpoint"], unit="req/s")
    yield Row(
        group,
        "ratio: token endpoint / one signature",
        median["endpoint"] / median["sign"],
        unit="x",
        note="target <= 1.5",
    )
    yield Row(group, "bare Starlette app, one route", median["bare"])
    yield Row(group, "API key request (memory store)", median["key"])
    yield Row(group, "JWT request, warm (memo)", median["jwt-warm"])
    yield Row(group, "JWT request, cold (signature verified)", median["jwt-cold"])
    yield Row(group, "PyJWT jwt.decode of the same token", median["decode"])
    yield Row(
        group,
        "added: warm JWT - API key",
        median_difference(timed["jwt-warm"], timed["key"]),
        note="target <= 1",
    )
    cold = median_difference(timed["jwt-cold"], timed["bare"])
    yield Row(group, "overhead: cold JWT (minus bare app)", cold)
    yield Row(
        group,
        "ratio: cold JWT overhead / PyJWT decode",
        cold / median["decode"],
        unit="x",
        note="target <= 1.3",
    )
    yield from instruction_rows()


# -- instructions, counted by callgrind (opt in) ------------------------------------------

_COUNTED = ("endpoint", "sign", "key", "jwt-warm", "jwt-cold", "decode", "bare")


def _count(case: str, n: int) -> int:
    return callgrind_count(str(Path(__file__).resolve()), case, n)


def _per_call(case: str) -> float:
    return (_count(case, 220) - _count(case, 20)) / 200


def instruction_rows() -> Iterator[Row]:
    group = "oauth (instr)"
    if os.environ.get("KEYGUARD_BENCH_INSTRUCTIONS") != "1":
        yield Row(group, "skipped: set KEYGUARD_BENCH_INSTRUCTIONS=1 (about a minute)", 0.0, "")
        return
    if shutil.which("valgrind") is None:
        yield Row(group, "skipped: valgrind is not installed", 0.0, "")
        return
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(zip(_COUNTED, pool.map(_per_call, _COUNTED), strict=True))
    unit = "instr"
    for case in _COUNTED:
        yield Row(group, case, counts[case], unit)
    endpoint = counts["endpoint"] / counts["sign"]
    cold = (counts["jwt-cold"] - counts["bare"]) / counts["decode"]
    yield Row(group, "ratio: token endpoint / one signature", endpoint, "x", "target <= 1.5")
    yield Row(group, "added: warm JWT - API key", counts["jwt-warm"] - counts["key"], unit)
    yield Row(group, "ratio: cold JWT overhead / PyJWT decode", cold, "x", "target <= 1.3")


def _serve(case: str, n: int) -> None:
    """Run ``n`` calls of one case (under callgrind)."""
    import jwt

    setup = _setup()
    tokens = setup["tokens"]
    keys = setup["keys"]
    claims = {**setup["claims"], "jti": "x" * 22}
    body = b"grant_type=client_credentials"

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    def scope(token: str | None) -> dict[str, Any]:
        headers = (
            COMMON if token is None else [*COMMON, (b"authorization", f"Bearer {token}".encode())]
        )
        return {**BASE_SCOPE, "method": "GET", "path": "/invoices", "headers": headers}

    endpoint_scope = {
        **BASE_SCOPE,
        "method": "POST",
        "path": "/oauth/token",
        "headers": [
            *COMMON,
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"authorization", b"Basic " + setup["basic"]),
        ],
    }

    async def serve() -> None:
        for i in range(n):
            if case == "endpoint":
                await setup["endpoint"](dict(endpoint_scope), receive, send)
            elif case == "sign":
                jwt.encode(claims, keys.signing._private, algorithm="ES256",
                           headers={"typ": "at+jwt", "kid": keys.signing.kid})  # fmt: skip
            elif case == "decode":
                jwt.decode(tokens[0], keys.signing.public.pyjwk, algorithms=["ES256"],
                           audience=AUDIENCE, issuer=ISSUER)  # fmt: skip
            elif case == "key":
                await setup["warm"](scope(setup["api_key"]), receive, send)
            elif case == "jwt-warm":
                await setup["warm"](scope(tokens[0]), receive, send)
            elif case == "jwt-cold":
                await setup["cold"](scope(tokens[i & 1]), receive, send)
            else:
                await setup["bare"](scope(None), receive, send)

    asyncio.run(serve())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _serve(sys.argv[1], int(sys.argv[2]))
