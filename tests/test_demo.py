"""``keyguard demo``: run with --check in a subprocess on a free port, and from a wheel."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import keyguard
from keyguard import cli

ROOT = Path(__file__).resolve().parents[1]
#: The statuses of the demo's steps: the key's four, then the OAuth client's exchange, the
#: call with its token, and its secret sent as a bearer token.
STATUSES = ["200", "401", "403", "400", "200", "200", "401"]


@pytest.mark.slow
def test_demo_serves_the_example_and_every_curl_line_answers_as_printed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keyguard.cli", "demo", "--check", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    token = re.search(r"sk_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}", out)
    assert token is not None
    secret = re.search(r"cs_live_([0-9A-Za-z]{12})_[0-9A-Za-z]{38}", out)
    assert secret is not None
    base = re.search(r"runs on (http://127\.0\.0\.1:\d+)", out)
    assert base is not None
    exchange = (
        f'{base[1]}/oauth/token -u "{secret[1]}:{secret[0]}" -d grant_type=client_credentials'
    )
    for status, line in (
        (200, f'curl -i {base[1]}/invoices -H "Authorization: Bearer {token[0]}"'),
        (401, f"curl -i {base[1]}/invoices\n"),
        (403, f"curl -i -X POST {base[1]}/invoices"),
        (400, f'curl -i "{base[1]}/invoices?api_key={token[0]}"'),
        (200, f"curl -i {exchange}\n"),
        (200, f"TOKEN=$(curl -s {exchange} | python3 -c "),
        (200, f'curl -i {base[1]}/invoices -H "Authorization: Bearer $TOKEN"'),
        (401, f'curl -i {base[1]}/invoices -H "Authorization: Bearer {secret[0]}"'),
    ):
        assert f"{status}: " in out
        assert line in out
    checked = re.findall(r"^  (\d{3}) .*: (.*)$", out, re.MULTILINE)
    assert checked == [(status, "ok") for status in STATUSES], out
    # The exchange answered a JWT, which the next step sent: its summary, never the token.
    assert "a Bearer access token (JWT), expires_in 600, scope 'billing:read'" in out
    assert not re.search(r"eyJ[0-9A-Za-z_-]+\.", out)
    assert "all as expected" in out


def test_demo_tour_still_runs_offline() -> None:
    out = io.StringIO()
    assert cli.main(["demo", "--tour"], stdout=out, stderr=io.StringIO()) == 0
    assert "after revoke" in out.getvalue()


def test_demo_on_a_taken_port_says_what_to_do() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        err = io.StringIO()
        code = cli.main(
            ["demo", "--check", "--port", str(taken.getsockname()[1])],
            stdout=io.StringIO(),
            stderr=err,
        )
    assert code == 2
    assert "--port 0" in err.getvalue()
    assert "make demo DEMO_ARGS='--port 0'" in err.getvalue()


@pytest.mark.parametrize("missing", ["uvicorn", "jwt"])
def test_demo_without_its_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec

    def without(name: str, package: str | None = None) -> object:
        return None if name == missing else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without)
    err = io.StringIO()
    assert cli.main(["demo", "--check", "--port", "0"], stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue() == (
        f"keyguard: error: keyguard demo needs {missing}: pip install 'keyguard-auth[demo]'\n"
    )


@pytest.mark.parametrize(
    ("status", "body", "shown", "complete"),
    [
        pytest.param(
            200,
            '{"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 600, "scope": "s"}',
            "a Bearer access token (JWT), expires_in 600, scope 's'",
            True,
            id="jwt",
        ),
        pytest.param(
            200, '{"access_token": "opaque", "token_type": "Bearer"}', None, False, id="not-a-jwt"
        ),
        pytest.param(200, '{"access_token": 7}', None, False, id="not-a-string"),
        pytest.param(401, '{"detail": "no key"}', "no key", True, id="problem"),
        pytest.param(
            401,
            '{"error": "invalid_client", "error_description": "failed"}',
            "failed",
            True,
            id="oauth-error",
        ),
        pytest.param(200, '{"owner": "demo"}', '{"owner": "demo"}', True, id="json"),
        pytest.param(500, "Internal Server Error", "Internal Server Error", True, id="text"),
    ],
)
def test_the_check_needs_a_jwt_from_the_token_endpoint_and_never_prints_it(
    status: int, body: str, shown: str | None, complete: bool
) -> None:
    from keyguard.cli._demo import _answer

    made: dict[str, str] = {}
    printed, whole = _answer(status, body, made)
    assert whole is complete
    if shown is not None:
        assert printed == shown
    if "access_token" in body:
        assert made["access_token"] == json.loads(body)["access_token"]
        assert f'"{made["access_token"]}"' not in printed


def test_make_demo_passes_demo_args_on() -> None:
    result = subprocess.run(
        ["make", "-n", "demo", "DEMO_ARGS=--port 0 --check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "keyguard demo --port 0 --check" in result.stdout


@pytest.mark.anyio
async def test_the_demo_app_is_the_billing_api() -> None:
    httpx = pytest.importorskip("httpx")
    from keyguard import AsyncKeyManager, MemoryRateLimiter
    from keyguard.cli._demo_app import create_app
    from keyguard.stores import MemoryKeyStore

    manager = AsyncKeyManager(MemoryKeyStore())
    reader = (await manager.create("acme", scopes=["billing:read"])).token
    writer = (await manager.create("acme", scopes=["billing:read", "billing:write"])).token
    app = create_app(manager, MemoryRateLimiter(), rate_limit="5/minute")
    invoice = {"customer": "Initech", "amount_cents": 1200}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        read = {"authorization": f"Bearer {reader}"}
        write = {"authorization": f"Bearer {writer}"}
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/invoices")).status_code == 401
        listed = await client.get("/invoices", headers=read)
        assert listed.json() == {"owner": "acme", "invoices": []}
        assert listed.headers["ratelimit-policy"] == '"default";q=5;w=60'
        assert (await client.post("/invoices", headers=read, json=invoice)).status_code == 403
        created = await client.post("/invoices", headers=write, json=invoice)
        assert created.status_code == 201
        assert created.json()["customer"] == "Initech"
        assert (await client.get("/invoices", headers=read)).json()["invoices"] == [created.json()]
        assert (await client.post("/invoices", headers=write, json={})).status_code == 422
        assert (await client.get(f"/invoices?api_key={reader}")).status_code == 400
    await manager.aclose()


@pytest.mark.anyio
async def test_the_demo_app_serves_the_token_endpoint_and_takes_its_tokens() -> None:
    httpx = pytest.importorskip("httpx")
    from keyguard import AsyncKeyManager, MemoryRateLimiter
    from keyguard.cli._demo_app import create_app
    from keyguard.oauth import AuthorizationServer, KeySet, SigningKey
    from keyguard.stores import MemoryKeyStore

    manager = AsyncKeyManager(MemoryKeyStore())
    client = await manager.create_client("acme", scopes=["billing:read"])
    limiter = MemoryRateLimiter()
    base = "http://127.0.0.1:8000"
    server = AuthorizationServer(
        manager, KeySet(SigningKey.generate()), issuer=base, audiences=[base], limiter=limiter
    )
    app = create_app(manager, limiter, authorization_server=server)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        issued = await http.post(
            "/oauth/token",
            auth=(client.key_id, client.token),
            data={"grant_type": "client_credentials"},
        )
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        listed = await http.get("/invoices", headers={"authorization": f"Bearer {token}"})
        assert listed.json() == {"owner": "acme", "invoices": []}
        write = await http.post(
            "/invoices",
            headers={"authorization": f"Bearer {token}"},
            json={"customer": "Initech", "amount_cents": 1200},
        )
        assert write.status_code == 403
        secret = await http.get("/invoices", headers={"authorization": f"Bearer {client.token}"})
        assert secret.status_code == 401
        assert (await http.get("/oauth/jwks.json")).json()["keys"][0][
            "kid"
        ] == server.keys.signing.kid
    await manager.aclose()


def _run(
    command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"
    return result


@pytest.mark.slow
def test_the_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    """The wheel, installed with its demo extra in a fresh venv: no checkout, no examples/."""
    dist, venv, elsewhere = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    wheel_command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    _run([*wheel_command, "--no-build-isolation", "--wheel-dir", str(dist), str(ROOT)])
    (wheel,) = dist.glob("*.whl")
    _run([sys.executable, "-m", "venv", str(venv)])
    bin_dir = venv / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[demo]"])

    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONPATH", "VIRTUAL_ENV") and not name.startswith("KEYGUARD_")
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    where = _run(
        [str(bin_dir / "python"), "-c", "import keyguard; print(keyguard.__file__)"],
        cwd=elsewhere,
        env=env,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv)
    version = _run([str(bin_dir / "keyguard"), "--version"], cwd=elsewhere, env=env)
    assert version.stdout == f"keyguard {keyguard.__version__}\n"
    demo = _run(
        [str(bin_dir / "keyguard"), "demo", "--check", "--port", "0"], cwd=elsewhere, env=env
    )
    assert "all as expected" in demo.stdout
    assert re.findall(r"^  (\d{3}) .*: ok$", demo.stdout, re.MULTILINE) == STATUSES
