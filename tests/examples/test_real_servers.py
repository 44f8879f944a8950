"""Each example behind a real server in a subprocess: uvicorn (ASGI) and waitress (WSGI)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.examples.conftest import MakeClient, MakeKey

ROOT = Path(__file__).resolve().parents[2]

SERVERS = {
    "uvicorn": lambda port: [
        sys.executable,
        "-m",
        "uvicorn",
        "examples.fastapi_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ],
    "waitress": lambda port: [
        sys.executable,
        "-m",
        "waitress",
        f"--listen=127.0.0.1:{port}",
        "examples.flask_app:app",
    ],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    """A server running in a subprocess: its address, and all it printed once it stopped."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.output = ""


@contextmanager
def _serving(name: str, command: list[str], port: int, database_url: str) -> Iterator[Served]:
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "KEYGUARD_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    served = Served(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(served.base + "/health", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    pytest.fail(f"{name} did not start:\n{output}")
                time.sleep(0.1)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()
        if process.stdout:
            served.output = process.stdout.read().decode()
            process.stdout.close()


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, database_url: str) -> Iterator[str]:
    port = _free_port()
    with _serving(request.param, SERVERS[request.param](port), port, database_url) as served:
        yield served.base


@pytest.mark.slow
def test_the_billing_api_over_http(server: str, make_key: MakeKey) -> None:
    reader = make_key("billing:read")
    writer = make_key("billing:read", "billing:write")
    with httpx.Client(base_url=server, timeout=10) as client:
        assert client.get("/health").json() == {"status": "ok"}
        auth = {"Authorization": f"Bearer {reader}"}
        assert client.get("/invoices", headers=auth).json() == {"owner": "acme", "invoices": []}

        missing = client.get("/invoices")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        assert missing.headers["cache-control"] == "no-store"
        assert missing.headers["content-type"] == "application/problem+json"

        refused = client.post("/invoices", headers=auth, json={"customer": "x", "amount_cents": 1})
        assert refused.status_code == 403
        created = client.post(
            "/invoices",
            headers={"Authorization": f"Bearer {writer}"},
            json={"customer": "x", "amount_cents": 1},
        )
        assert created.status_code == 201

        assert client.get("/invoices", params={"api_key": reader}).status_code == 400
        twice = client.get("/invoices", headers=[("Authorization", f"Bearer {reader}")] * 2)
        assert twice.status_code == 400
        assert "exactly one Authorization header" in twice.json()["detail"]
        typo = reader[:-1] + ("x" if reader[-1] != "x" else "y")
        wrong = client.get("/invoices", headers={"Authorization": f"Bearer {typo}"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'


@pytest.mark.slow
def test_an_oauth_client_over_http(server: str, make_client: MakeClient) -> None:
    """curl's exchange and call, as examples/README.md shows them, through the real server."""
    client_id, secret = make_client("billing:read")
    with httpx.Client(base_url=server, timeout=10) as client:
        issued = client.post(
            "/oauth/token", auth=(client_id, secret), data={"grant_type": "client_credentials"}
        )
        assert issued.status_code == 200, issued.text
        assert issued.headers["cache-control"] == "no-store"
        token = issued.json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert client.get("/invoices", headers=auth).json() == {"owner": "acme", "invoices": []}
        refused = client.post("/invoices", headers=auth, json={"customer": "x", "amount_cents": 1})
        assert refused.status_code == 403
        as_bearer = client.get("/invoices", headers={"Authorization": f"Bearer {secret}"})
        assert as_bearer.status_code == 401
        metadata = client.get("/.well-known/oauth-authorization-server").json()
        assert metadata["token_endpoint"] == "http://127.0.0.1:8000/oauth/token"


@pytest.mark.slow
def test_a_key_sent_in_the_url_is_not_in_the_access_log(
    database_url: str, make_key: MakeKey
) -> None:
    token = make_key("billing:read")
    port = _free_port()
    command = [*SERVERS["uvicorn"](port)[:-2], "--log-level", "info"]  # with the access log
    with _serving("uvicorn", command, port, database_url) as served:
        for name in ("api_key", "token"):
            sent = httpx.get(f"{served.base}/invoices?page=1&{name}={token}", timeout=10)
            assert sent.status_code == 400
    lines = [line for line in served.output.splitlines() if "GET /invoices?" in line]
    assert len(lines) == 2, served.output
    assert token[-20:] not in served.output
    kept = f"={token.rsplit('_', 1)[0]}_[redacted] HTTP/1.1"
    assert all(kept in line and "400" in line for line in lines), lines  # the key_id stays
