"""Raw ASGI and WSGI request drivers for the middleware tests.

They talk to an app directly (no HTTP client), so a test can send what a
client library would refuse to: duplicate headers, NUL/CR/LF, non-ASCII bytes.
Every WSGI call goes through ``wsgiref.validate.validator``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

Headers = Sequence[tuple[bytes, bytes]]


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    messages: list[dict[str, Any]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Request:
    method: str = "GET"
    path: str = "/invoices"
    headers: Headers = ()
    query: bytes = b""
    body: bytes = b""
    scheme: str = "https"
    client: str | None = "203.0.113.9"


async def asgi_call(app: Any, request: Request, *, root_path: str = "") -> Reply:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": root_path + request.path,
        "raw_path": (root_path + request.path).encode(),
        "root_path": root_path,
        "query_string": request.query,
        "headers": [(k.lower(), v) for k, v in request.headers],
        "client": None if request.client is None else (request.client, 50123),
        "server": ("192.0.2.1", 443),
    }
    chunks = [request.body[i : i + 7] for i in range(0, len(request.body), 7)] or [b""]
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    assert start["type"] == "http.response.start", sent
    body = b"".join(m.get("body", b"") for m in sent[1:])
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
    return Reply(start["status"], headers, body, sent)


def wsgi_environ(request: Request) -> dict[str, Any]:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(
        REQUEST_METHOD=request.method,
        PATH_INFO=request.path,
        QUERY_STRING=request.query.decode("latin-1"),
        CONTENT_LENGTH=str(len(request.body)) if request.body else "",
    )
    environ["wsgi.url_scheme"] = request.scheme
    environ["wsgi.input"] = io.BytesIO(request.body)
    if request.client is not None:
        environ["REMOTE_ADDR"] = request.client
    joined: dict[str, str] = {}
    for name, value in request.headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        text = value.decode("latin-1")
        # What WSGI servers do with a repeated header: join the values with ", ".
        joined[key] = joined[key] + ", " + text if key in joined else text
    environ.update(joined)
    return environ


def wsgi_call(app: Any, request: Request, *, validate: bool = True) -> Reply:
    environ = wsgi_environ(request)
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"] = status
        captured["headers"] = headers
        return lambda data: None

    wrapped = validator(app) if validate else app
    result: Iterable[bytes] = wrapped(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Reply(int(captured["status"].split(" ", 1)[0]), list(captured["headers"]), body)
