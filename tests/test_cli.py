from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from keyguard import HmacSecretHasher, checksum, generate_key, parse_key
from keyguard.cli import main

VALID = generate_key().token


def run(*argv: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if env is not None:
        import os

        saved = dict(os.environ)
        os.environ.update(env)
    try:
        code = main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin))
    finally:
        if env is not None:
            os.environ.clear()
            os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()


def test_generate_prints_a_valid_key_once() -> None:
    code, out, err = run("generate")
    token = out.strip()
    assert code == 0
    parsed = parse_key(token)
    assert parsed.environment == "live"
    assert token not in err
    assert parsed.key_id in err
    assert "shown once" in err


def test_generate_json_and_options() -> None:
    code, out, _ = run("generate", "--json", "--prefix", "acme", "--environment", "test")
    assert code == 0
    data = json.loads(out)
    assert data["token"].startswith("acme_test_")
    assert data["key_id"] == data["token"].split("_")[2]
    secret = data["token"][-38:-6]
    assert data["secret_hash"] == HmacSecretHasher().hash(secret)


@pytest.mark.parametrize(
    ("argv", "code", "stream", "text"),
    [
        pytest.param(("check", VALID), 0, "out", "valid live key", id="check-valid"),
        pytest.param(
            ("check", VALID[:-1] + ("x" if VALID[-1] != "x" else "y")),
            1,
            "err",
            "checksum",
            id="check-checksum",
        ),
        pytest.param(("check", VALID + "x"), 1, "err", "invalid", id="check-long"),
        pytest.param(("check", ""), 1, "err", "empty", id="check-empty"),
        pytest.param(("check", "ab.cd", "--split"), 0, "out", "split", id="check-split"),
        pytest.param(("check", "ab.cd"), 1, "err", "split", id="check-split-refused"),
        pytest.param(("hash", "garbage"), 1, "err", "invalid", id="hash-invalid"),
        pytest.param(("generate", "--prefix", "X"), 2, "err", "prefix", id="bad-prefix"),
        pytest.param(("generate", "--environment", "prod"), 2, "err", "prod", id="bad-env"),
        pytest.param(
            ("generate", "--environments", "prod,prod"), 2, "err", "repeat", id="repeated-env"
        ),
    ],
)
def test_commands(argv: tuple[str, ...], code: int, stream: str, text: str) -> None:
    got, out, err = run(*argv)
    assert got == code
    assert text in (out if stream == "out" else err)
    assert "Traceback" not in err
    if code != 0:
        assert VALID[21:53] not in err


def test_check_and_hash_read_stdin() -> None:
    code, out, _ = run("check", "-", stdin=VALID + "\n")
    assert code == 0
    code, out, _ = run("hash", "-", stdin=VALID + "\n")
    assert code == 0
    assert out.strip() == HmacSecretHasher().hash(VALID[21:53])


def test_hash_with_pepper_from_environment() -> None:
    import base64

    pepper = b"k" * 32
    env = {"KEYGUARD_PEPPERS": "v7:" + base64.b64encode(pepper).decode()}
    code, out, _ = run("hash", VALID, env=env)
    assert code == 0
    assert out.strip() == HmacSecretHasher({"v7": pepper}).hash(VALID[21:53])
    code, _, err = run("hash", VALID, env={"KEYGUARD_PEPPERS": "v7:not base64!"})
    assert code == 2
    assert "base64" in err
    code, _, err = run("hash", VALID, env={"KEYGUARD_PEPPERS": "v7:c2hvcnQ="})
    assert code == 2
    assert "16 bytes" in err


def test_usage_error_is_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_console_script_runs() -> None:
    script = Path(sys.executable).parent / "keyguard"
    result = subprocess.run(
        [str(script), "check", "-"], input=VALID, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "valid live key" in result.stdout
    body = "sk_live_" + "A" * 12 + "_" + "B" * 32
    bad = body + ("000000" if checksum(body) != "000000" else "000001")
    result = subprocess.run(
        [str(script), "check", bad], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "checksum" in result.stderr
    import keyguard

    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (0, f"keyguard {keyguard.__version__}\n")


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    import keyguard

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr() == (f"keyguard {keyguard.__version__}\n", "")


@pytest.mark.parametrize(
    ("installed", "printed"),
    [
        pytest.param({"keyguard-auth": "2.0.0", "keyguard": "1.0.0"}, "2.0.0", id="renamed"),
        pytest.param({"keyguard-auth": "2.0.0"}, "2.0.0", id="keyguard-auth-only"),
        pytest.param({"keyguard": "1.0.0"}, "1.0.0", id="before-the-rename"),
        pytest.param({}, "unknown", id="no-metadata"),
    ],
)
def test_version_looks_up_both_distribution_names(
    installed: dict[str, str],
    printed: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.metadata

    def version(name: str) -> str:
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"keyguard {printed}\n"


def test_version_needs_no_command_and_reads_no_metadata_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata

    def version(name: str) -> str:
        raise AssertionError("metadata read without --version")

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert run("check", VALID)[0] == 0
