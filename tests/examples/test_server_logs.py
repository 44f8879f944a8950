"""No secret in any log line of the real servers, at their most verbose, whatever the client sends.

Each example runs under a real server in a subprocess, as an operator would
run it: uvicorn at ``--log-level trace`` (its access log, its error log, and
its trace log of every ASGI scope), gunicorn at ``--log-level debug`` with its
access log on, and werkzeug's development server (``flask run``); keyguard's
own loggers print everything too (DEBUG). A client sends a real key, cut
short and lengthened, in the path, in the query, in the headers
(``Authorization: Bearer``, ``X-API-Key``, ``Basic`` credentials), and in
invalid request lines that the servers quote in their error logs. Then every
line the server printed, on stdout and stderr, is searched for the secret and
for every run of 8 of its characters.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.examples.conftest import MakeKey

ROOT = Path(__file__).resolve().parents[2]

# Runs ``python -m <module> <args>`` with keyguard's loggers at DEBUG on stderr, so that
# keyguard's own lines are searched too.
_LOGGED = """
import logging, runpy, sys
handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
logger = logging.getLogger("keyguard")
logger.addHandler(handler)
logger.setLevel(logging.DEBUG)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _gunicorn_extra() -> list[str]:
    from gunicorn.config import Config

    # The control socket (gunicorn 24+) is one path per user: two servers would share it.
    return ["--no-control-socket"] if "control_socket_disable" in Config().settings else []


SERVERS: dict[str, Callable[[int], list[str]]] = {
    "uvicorn": lambda port: [
        "uvicorn",
        "examples.fastapi_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "trace",
    ],
    "gunicorn": lambda port: [
        "gunicorn",
        "examples.flask_app:app",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--log-level",
        "debug",
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
        *_gunicorn_extra(),
    ],
    "werkzeug": lambda port: [
        "flask",
        "--app",
        "examples.flask_app",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _variants(token: str) -> list[str]:
    """The token, cut short (into the checksum, the secret) and lengthened."""
    return [
        token,
        *(token[:-n] for n in (1, 2, 6, 7, 20, 36)),
        token + "x",
        token + "Zq9Zq9",
        token + token,
    ]


def _requests(base: str, token: str) -> int:
    """Send the token every way a client might; return the number of HTTP requests."""
    sent = 0
    with httpx.Client(base_url=base, timeout=10) as client:
        for value in _variants(token):
            basic_user = base64.b64encode(f"{value}:".encode()).decode()
            basic_password = base64.b64encode(f"acme:{value}".encode()).decode()
            for url, headers in [
                (f"/invoices/{value}", {}),
                (f"/invoices/{value}/lines?page=2", {}),
                (f"/invoices?api_key={value}", {}),
                (f"/invoices?page=1&token={value}", {}),
                (f"/invoices?q={value}", {}),
                ("/invoices", {"Authorization": f"Bearer {value}"}),
                ("/invoices", {"X-API-Key": value}),
                ("/invoices", {"Authorization": f"Basic {basic_user}"}),
                ("/invoices", {"Authorization": f"Basic {basic_password}"}),
            ]:
                reply = client.get(url, headers=headers)
                assert reply.status_code < 500, (url, reply.status_code)
                sent += 1
    for line in [
        f"GET /invoices?api_key={token}\x01 HTTP/1.1",  # gunicorn quotes the whole line
        f"GET /invoices?api_key={token} HTTP/1.1 extra",
        f"GET /invoices HTTP/1.1 api_key={token}",
        f"GET /invoices?api_key={token[:-1]} junk HTTP/1.1",
    ]:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(line.encode("latin-1") + b"\r\nHost: x\r\n\r\n")
            assert raw.recv(64)  # the server answered (400) before we close
    return sent


def _run(name: str, token: str, database_url: str, tmp_path: Path) -> tuple[str, int]:
    """Start the server, send everything, stop it; return its output and the requests sent."""
    port = _free_port()
    out_path, err_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    # Files, not pipes: a trace log can fill a pipe and stall the server mid-test.
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", _LOGGED, *SERVERS[name](port)],
            cwd=ROOT,
            env={**os.environ, "KEYGUARD_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=err,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(base + "/health", timeout=1)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"{name} did not start:\n{err_path.read_text()}")
                    time.sleep(0.1)
            sent = _requests(base, token)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                process.kill()
                process.wait()
    return out_path.read_text("latin-1") + err_path.read_text("latin-1"), sent


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_no_secret_in_any_server_log_line(
    name: str, make_key: MakeKey, database_url: str, tmp_path: Path
) -> None:
    token = make_key("billing:read")
    secret = token.split("_")[3][:32]
    key_id = token.split("_")[2]
    output, sent = _run(name, token, database_url, tmp_path)

    runs = {secret[i : i + 8] for i in range(len(secret) - 7)}
    leaked = [line for line in output.splitlines() if any(run in line for run in runs)]
    assert leaked == [], "\n".join(leaked)

    # The scan read real log lines: the server and keyguard logged every request, and the
    # key_id stayed where a key was in the URL (five URLs for each variant).
    lines = output.splitlines()
    keyguard_lines = [line for line in lines if line.startswith("keyguard.access ")]
    server_lines = [
        line for line in lines if "GET /invoices" in line and line not in keyguard_lines
    ]
    assert len(keyguard_lines) >= sent
    assert len(server_lines) >= sent
    assert sum(f"sk_live_{key_id}_[redacted]" in line for line in server_lines) >= 5 * 10
    assert f"keyguard.access INFO GET /invoices/sk_live_{key_id}_[redacted]" in output
    if name == "uvicorn":
        assert "Started scope=" in output  # the trace log
        assert f"'query_string': b'api_key=sk_live_{key_id}_[redacted]'" in output
    elif name == "gunicorn":
        assert "Invalid request from ip=127.0.0.1: Invalid HTTP request line:" in output
        assert f'"GET /invoices?api_key=sk_live_{key_id}_[redacted] HTTP/1.1" 400' in output
        assert f" - sk_live_{key_id}_[redacted] [" in output  # Basic user name, decoded
    else:
        assert "code 400, message Bad request version" in output
