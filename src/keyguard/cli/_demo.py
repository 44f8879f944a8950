"""``keyguard demo``: a billing API on localhost, a live key, an OAuth client, and curl
lines to try.

The demo serves the app of :mod:`keyguard.cli._demo_app` (the API of
``examples/fastapi_app.py``, shipped in the package, so it runs from an
installed wheel) on 127.0.0.1, over a SQLite key store in a temporary directory
that is deleted when the demo stops, with the OAuth token endpoint in front
(a signing key made at start: its tokens die with the demo). ``--check`` makes
the requests the curl lines show, prints what came back, and exits: 0 when
each status was the expected one (and the token endpoint answered a JWT).
``--tour`` is a short offline tour of keys and denials instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from .._denials import Denial
from .._hashing import SecretHasher
from .._manager import KeyManager
from ._command import CommandError, hasher_from_environment

__all__ = ["DemoError", "demo", "run_demo", "tour"]

_HOST = "127.0.0.1"
_SCOPE = "billing:read"
_INVOICE = '{"customer": "Initech", "amount_cents": 1200}'
#: What the demo imports beyond keyguard: the extra ``demo`` installs them.
_NEEDS = ("uvicorn", "fastapi", "sqlalchemy", "aiosqlite", "jwt", "cryptography")
_GRANT = "grant_type=client_credentials"
#: What the demo made, for the curl lines and the requests: the key, the client's id and
#: secret, and (once the exchange step ran) the access token.
Credentials = dict[str, str]


class DemoError(Exception):
    """The demo cannot run; the message says what to install or which port to use."""


def demo(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """`demo`: serve the example (``--check``: test it and stop), or ``--tour``."""
    if args.tour:
        return tour(out)
    try:
        return run_demo(out, port=args.port, check=args.check)
    except DemoError as exc:
        raise CommandError(str(exc)) from None


def tour(out: TextIO) -> int:
    """A short offline tour: a key is made, checked, refused, and revoked, in memory."""
    from ..stores.memory import MemoryKeyStore  # noqa: PLC0415 (only the tour needs it)

    keys = KeyManager(MemoryKeyStore())
    issued = keys.create("acme", "demo key", scopes=["billing:read"])
    out.write(f"1. created a live key for owner 'acme' (shown once):\n   {issued.token}\n")
    scheme = issued.record.secret_hash.split("$", 1)[0]
    out.write(f"   stored: key_id={issued.key_id} and a {scheme} hash, never the key\n")
    steps = [
        ("the key itself", issued.token, ()),
        ("a typo (last character changed)", issued.token[:-1] + "x", ()),
        ("the key, asking for billing:write", issued.token, ("billing:write",)),
    ]
    for number, (label, token, scopes) in enumerate(steps, start=2):
        result = keys.authenticate(token, required_scopes=scopes)
        verdict = (
            f"denied: {result.reason.value} ({result.detail})"
            if isinstance(result, Denial)
            else f"allowed: owner={result.owner} scopes={sorted(result.scopes)}"
        )
        out.write(f"{number}. {label}\n   {verdict}\n")
    keys.revoke(issued.key_id)
    result = keys.authenticate(issued.token)
    verdict = result.reason.value if isinstance(result, Denial) else "allowed?"
    out.write(f"5. after revoke\n   denied: {verdict}\n")
    return 0


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((_HOST, port))
    except OSError as exc:
        sock.close()
        raise DemoError(
            f"cannot listen on {_HOST}:{port} ({exc}); try --port 0 "
            f"(make demo DEMO_ARGS='--port 0')"
        ) from None
    return sock


def _commands(base: str, made: Credentials) -> list[tuple[int, str, str, str]]:
    """(expected status, what it shows, curl line, request spec) for each step."""
    token, client_id, secret = made["key"], made["client_id"], made["client_secret"]
    auth = f'-H "Authorization: Bearer {token}"'
    exchange = f'{base}/oauth/token -u "{client_id}:{secret}" -d {_GRANT}'
    extract = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"
    return [
        (200, "the key works", f"curl -i {base}/invoices {auth}", "GET /invoices key"),
        (401, "no key", f"curl -i {base}/invoices", "GET /invoices"),
        (
            403,
            f"the key has {_SCOPE} but not billing:write",
            f"curl -i -X POST {base}/invoices {auth} -H 'Content-Type: application/json' "
            f"-d '{_INVOICE}'",
            "POST /invoices key",
        ),
        (
            400,
            "a key in the URL is refused",
            f'curl -i "{base}/invoices?api_key={token}"',
            "GET /invoices?api_key=KEY",
        ),
        (
            200,
            "the OAuth client's secret buys an access token (a JWT, for 10 minutes)",
            f"curl -i {exchange}",
            "POST /oauth/token client",
        ),
        (
            200,
            "the access token works like the key",
            f"TOKEN=$(curl -s {exchange} | {extract})\n"
            f'    curl -i {base}/invoices -H "Authorization: Bearer $TOKEN"',
            "GET /invoices access_token",
        ),
        (
            401,
            "the client secret itself is no bearer token: exchange it first",
            f'curl -i {base}/invoices -H "Authorization: Bearer {secret}"',
            "GET /invoices client_secret",
        ),
    ]


def _request(base: str, spec: str, made: Credentials) -> tuple[int, str]:
    import base64  # noqa: PLC0415 (only --check needs these)
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    method, path, *flags = spec.split()
    request = urllib.request.Request(  # noqa: S310 (a fixed http://127.0.0.1 URL)
        base + path.replace("KEY", made["key"]), method=method
    )
    if "client" in flags:
        basic = base64.b64encode(f"{made['client_id']}:{made['client_secret']}".encode())
        request.add_header("Authorization", f"Basic {basic.decode()}")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        request.data = _GRANT.encode()
    else:
        for name in ("key", "access_token", "client_secret"):
            if name in flags:
                request.add_header("Authorization", f"Bearer {made.get(name, '')}")
        if method == "POST":
            request.add_header("Content-Type", "application/json")
            request.data = _INVOICE.encode()
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def _create_credentials(database_url: str, hasher: SecretHasher) -> Credentials:
    """A live key and an OAuth client, both with the scope billing:read."""
    from ..stores.sql import SQLKeyStore  # noqa: PLC0415 (optional: the sql extra)

    store = SQLKeyStore(database_url)
    store.create_schema()
    manager = KeyManager(store, hasher=hasher, last_used=None)
    try:
        key = manager.create("demo", "keyguard demo", scopes=[_SCOPE])
        client = manager.create_client("demo", "keyguard demo client", scopes=[_SCOPE])
    finally:
        manager.close()
    return {"key": key.token, "client_id": client.key_id, "client_secret": client.token}


def run_demo(out: TextIO, *, port: int = 8000, check: bool = False) -> int:
    """Serve the demo app until interrupted (or, with ``check``, test it and stop).

    Raises:
        DemoError: uvicorn, FastAPI or the SQL store's drivers are missing, or the
            port is taken.
    """
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise DemoError(
            f"keyguard demo needs {', '.join(missing)}: pip install 'keyguard-auth[demo]'"
        )
    sock = _bind(port)
    try:
        with tempfile.TemporaryDirectory(prefix="keyguard-demo-") as directory:
            database_url = f"sqlite:///{Path(directory) / 'keyguard.db'}"
            return _serve(sock, database_url, out, check=check)
    finally:
        sock.close()


def _serve(sock: socket.socket, database_url: str, out: TextIO, *, check: bool) -> int:
    import uvicorn  # noqa: PLC0415 (optional: the demo extra)

    from .._manager import AsyncKeyManager  # noqa: PLC0415
    from ..oauth import AuthorizationServer, KeySet, SigningKey  # noqa: PLC0415 (oauth extra)
    from ..ratelimit import MemoryRateLimiter  # noqa: PLC0415
    from ..stores.sql import SQLKeyStore  # noqa: PLC0415
    from ._demo_app import create_app  # noqa: PLC0415 (imports FastAPI)

    hasher = hasher_from_environment()
    made = _create_credentials(database_url, hasher)
    manager = AsyncKeyManager(SQLKeyStore(database_url), hasher=hasher)
    limiter = MemoryRateLimiter()
    base = f"http://{_HOST}:{sock.getsockname()[1]}"
    # The demo's key store dies with it, and so may its signing key.
    server = AuthorizationServer(
        manager, KeySet(SigningKey.generate()), issuer=base, audiences=[base], limiter=limiter
    )
    app = create_app(manager, limiter, authorization_server=server)
    # No access log: the 400 step sends the key in the URL, and the log would show it.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn_server = uvicorn.Server(config)
    steps = _commands(base, made)
    out.write(
        f"keyguard demo: a billing API protected by keyguard runs on {base}\n"
        f"key store: {database_url} (deleted when the demo stops)\n\n"
        f"A live key for owner 'demo' with the scope {_SCOPE}, shown once:\n\n"
        f"    {made['key']}\n\n"
        f"An OAuth client of owner 'demo' with the same scope; its client_id and its "
        f"secret, shown once:\n\n"
        f"    {made['client_id']}\n    {made['client_secret']}\n\n"
    )
    for status, label, line, _ in steps:
        out.write(f"{status}: {label}\n    {line}\n\n")
    out.write(f"Swagger UI: {base}/docs (Authorize takes the key or an access token)\n")
    if not check:
        out.write("Press Ctrl+C to stop.\n")
        out.flush()
        uvicorn_server.run(sockets=[sock])
        return 0
    out.flush()
    return _check(uvicorn_server, sock, base, made, steps, out)


def _answer(status: int, body: str, made: Credentials) -> tuple[str, bool]:
    """What to print of an answer, and whether it is what the step needs beyond its status:
    a token response must hold a JWT (kept for the next step), and is never printed whole."""
    try:
        document = json.loads(body)
    except ValueError:
        return body, True
    if not isinstance(document, dict):
        return body, True
    if "access_token" in document:
        token = document["access_token"]
        made["access_token"] = token
        is_jwt = isinstance(token, str) and token.count(".") == 2
        shown = (
            f"a {document.get('token_type')} access token (JWT), expires_in "
            f"{document.get('expires_in')}, scope {document.get('scope')!r}"
        )
        return shown, is_jwt
    if status >= 400:
        return str(document.get("detail") or document.get("error_description") or ""), True
    return body, True


def _check(
    server: Any,
    sock: socket.socket,
    base: str,
    made: Credentials,
    steps: list[tuple[int, str, str, str]],
    out: TextIO,
) -> int:
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            out.write("check: the server did not start\n")
            return 1
        time.sleep(0.05)
    failures = 0
    try:
        out.write("\nchecking each line:\n")
        for expected, label, _, spec in steps:
            status, body = _request(base, spec, made)
            shown, complete = _answer(status, body, made)
            verdict = "ok" if status == expected else f"FAILED, expected {expected}"
            if status == expected and not complete:
                verdict = "FAILED, expected a JWT access token"
            failures += verdict != "ok"
            out.write(f"  {status} {label}: {verdict}\n      {shown[:100]}\n")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    out.write("all as expected\n" if not failures else f"{failures} unexpected\n")
    return 1 if failures else 0
