"""``keyguard demo``: run with --check in a subprocess, on a free port."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from keyguard import cli

ROOT = Path(__file__).resolve().parents[1]


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
    base = re.search(r"runs on (http://127\.0\.0\.1:\d+)", out)
    assert base is not None
    for status, line in (
        (200, f'curl -i {base[1]}/invoices -H "Authorization: Bearer {token[0]}"'),
        (401, f"curl -i {base[1]}/invoices\n"),
        (403, f"curl -i -X POST {base[1]}/invoices"),
        (400, f'curl -i "{base[1]}/invoices?api_key={token[0]}"'),
    ):
        assert f"{status}: " in out
        assert line in out
        assert re.search(rf"^  {status} .*: ok$", out, re.MULTILINE), status
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
