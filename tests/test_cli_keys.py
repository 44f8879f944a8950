"""``keyguard db init`` and ``keyguard keys ...`` against real stores."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")

from keyguard import HmacSecretHasher, KeyFormat, KeyManager, parse_key
from keyguard.cli import main
from keyguard.stores.sql import SQLKeyStore


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


def run(*argv: str, stdin: str = "") -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite key store, also named by KEYGUARD_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    monkeypatch.setenv("KEYGUARD_DATABASE_URL", url)
    monkeypatch.delenv("KEYGUARD_PEPPERS", raising=False)
    monkeypatch.delenv("KEYGUARD_REDIS_URL", raising=False)
    assert run("db", "init").code == 0
    return url


#: The stores a test opened to look at what the CLI wrote; closed after each test.
_opened: list[SQLKeyStore] = []


@pytest.fixture(autouse=True)
def _close_opened() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def store_for(url: str) -> SQLKeyStore:
    store = SQLKeyStore(url)
    _opened.append(store)
    return store


def manager_for(url: str, **options: Any) -> KeyManager:
    return KeyManager(store_for(url), last_used=None, **options)


def test_db_init_says_where(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    result = run("db", "init", "--database-url", url)
    assert result.code == 0
    assert result.out == f"table keyguard_keys is ready in {url}\n"


def test_create_prints_the_token_once_and_warns(db: str) -> None:
    result = run("keys", "create", "--owner", "acme", "--name", "ci", "--scope", "a:read")
    assert result.code == 0
    token = result.out.strip()
    parsed = parse_key(token)
    assert f"key_id: {parsed.key_id}" in result.err
    assert "cannot show it again" in result.err
    principal = manager_for(db).authenticate(token, required_scopes=["a:read"])
    assert principal
    assert principal.owner == "acme"  # type: ignore[union-attr]


def test_create_json(db: str) -> None:
    result = run(
        "keys",
        "create",
        "--owner",
        "acme",
        "--environment",
        "test",
        "--scope",
        "b",
        "--scope",
        "a",
        "--expires-in",
        "30d",
        "--rate-limit",
        "100/minute",
        "--json",
    )
    assert result.code == 0
    data = result.json()
    assert parse_key(data["token"]).key_id == data["key_id"]
    assert data["environment"] == "test"
    assert data["scopes"] == ["a", "b"]
    assert data["rate_limit"] == "100/60s"
    assert data["expires_at"] is not None
    assert "secret_hash" not in data
    assert "cannot show it again" in result.err
    assert data["token"] not in result.err


def test_create_uses_the_pepper_from_the_environment(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGUARD_PEPPERS", "v1:" + "cGVwcGVycGVwcGVycGVwcGVy")
    token = run("keys", "create", "--owner", "acme").out.strip()
    stored = store_for(db).get(parse_key(token).key_id)
    assert stored is not None
    assert stored.secret_hash.startswith("hmac-sha256$v1$")
    peppered = HmacSecretHasher({"v1": b"pepperpepperpepper"})
    assert manager_for(db, hasher=peppered).authenticate(token)


def test_list_shows_the_columns_and_never_a_hash(db: str) -> None:
    for owner in ("acme", "acme", "bob"):
        run("keys", "create", "--owner", owner, "--scope", "x:y")
    result = run("keys", "list")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "KEY_ID",
        "OWNER",
        "NAME",
        "ENV",
        "SCOPES",
        "CREATED",
        "EXPIRES",
        "LAST_USED",
        "STATUS",
    ]
    assert len(lines) == 4
    assert all(line.split()[-1] == "active" for line in lines[1:])
    hashes = [r.secret_hash for r in store_for(db).list_keys()]
    for hashed in hashes:
        assert hashed.split("$")[-1] not in result.out
    listed = run("keys", "list", "--owner", "acme", "--json").json()
    assert [item["owner"] for item in listed] == ["acme", "acme"]
    assert all("secret_hash" not in item for item in listed)
    assert set(listed[0]) >= {
        "key_id",
        "owner",
        "name",
        "environment",
        "scopes",
        "created_at",
        "expires_at",
        "last_used_at",
        "status",
    }


def test_list_of_an_empty_store(db: str) -> None:
    result = run("keys", "list")
    assert (result.code, result.out, result.err) == (0, "", "no keys\n")
    assert run("keys", "list", "--json").json() == []


def test_show_revoke_and_status(db: str) -> None:
    key_id = run("keys", "create", "--owner", "acme", "--json").json()["key_id"]
    shown = run("keys", "show", key_id)
    assert shown.code == 0
    assert "status:       active" in shown.out
    revoked = run("keys", "revoke", key_id)
    assert revoked.code == 0
    assert revoked.out.startswith(f"revoked {key_id}")
    assert run("keys", "show", key_id, "--json").json()["status"] == "revoked"
    again = run("keys", "revoke", key_id, "--json").json()
    assert again["revoked_at"] == run("keys", "show", key_id, "--json").json()["revoked_at"]


def test_rotate_issues_a_replacement(db: str) -> None:
    old = run("keys", "create", "--owner", "acme", "--scope", "s", "--json").json()
    result = run("keys", "rotate", old["key_id"], "--grace", "1h", "--json")
    assert result.code == 0
    new = result.json()
    assert new["replaces"] == old["key_id"]
    assert new["scopes"] == ["s"]
    assert "cannot show it again" in result.err
    manager = manager_for(db)
    assert manager.authenticate(new["token"])
    assert manager.authenticate(old["token"])  # still inside the grace period
    assert manager.get(old["key_id"]).replaced_by == new["key_id"]


def test_import_a_bcrypt_key_with_the_hash_on_stdin(db: str) -> None:
    bcrypt = pytest.importorskip("passlib.hash").bcrypt
    secret = "0ldSystemSecret0ldSystemSecret00"
    result = run(
        "keys",
        "import",
        "--key-id",
        "legacy-7",
        "--secret-hash",
        "-",
        "--owner",
        "acme",
        stdin=bcrypt.using(rounds=4).hash(secret) + "\n",
    )
    assert (result.code, result.out) == (0, "imported legacy-7\n")
    from keyguard import PasslibHasher

    manager = manager_for(
        db, legacy_hashers=[PasslibHasher()], key_format=KeyFormat(accept_split_keys=True)
    )
    assert manager.authenticate(f"legacy-7.{secret}")


def test_revoke_announces_on_redis(db: str, redis_url: str) -> None:
    from keyguard.stores.redis_broadcast import RedisRevocationBroadcast

    channel = f"keyguard-test:{uuid.uuid4().hex}"
    listener = RedisRevocationBroadcast(redis_url, channel=channel)
    try:
        assert listener.poll() is None
        key_id = run("keys", "create", "--owner", "acme", "--json").json()["key_id"]
        result = run("keys", "revoke", key_id, "--redis-url", redis_url, "--redis-channel", channel)
        assert result.code == 0
        assert "announced" in result.err
        heard: list[str] = []
        deadline = time.monotonic() + 2
        while not heard and time.monotonic() < deadline:
            heard.extend(listener.poll() or [])
        assert heard == [key_id]
    finally:
        listener.close()


def test_rotate_announces_on_the_redis_named_by_the_environment(
    db: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyguard.stores.redis_broadcast import RedisRevocationBroadcast

    channel = f"keyguard-test:{uuid.uuid4().hex}"
    monkeypatch.setenv("KEYGUARD_REDIS_URL", redis_url)
    listener = RedisRevocationBroadcast(redis_url, channel=channel)
    try:
        assert listener.poll() is None
        key_id = run("keys", "create", "--owner", "acme", "--json").json()["key_id"]
        result = run("keys", "rotate", key_id, "--redis-channel", channel)
        assert result.code == 0
        assert "announced" in result.err
        heard: list[str] = []
        deadline = time.monotonic() + 2
        while not heard and time.monotonic() < deadline:
            heard.extend(listener.poll() or [])
        assert heard == [key_id]  # the replaced key, whose expiry changed
    finally:
        listener.close()


def test_an_unreachable_redis_is_a_warning_not_a_failure(db: str) -> None:
    key_id = run("keys", "create", "--owner", "acme", "--json").json()["key_id"]
    result = run("keys", "revoke", key_id, "--redis-url", "redis://127.0.0.1:1/0")
    assert result.code == 0
    assert "warning" in result.err
    assert run("keys", "show", key_id, "--json").json()["status"] == "revoked"


@pytest.mark.postgres
def test_against_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYGUARD_DATABASE_URL", raising=False)
    schema = f"kg_cli_{uuid.uuid4().hex[:12]}"
    where = ("--database-url", postgres_url, "--schema", schema)
    try:
        assert run("db", "init", *where).code == 0
        key_id = run("keys", "create", "--owner", "pg", "--json", *where).json()["key_id"]
        assert [k["key_id"] for k in run("keys", "list", "--json", *where).json()] == [key_id]
    finally:
        import sqlalchemy as sa

        engine = sa.create_engine(postgres_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(("keys", "show", "nope"), "no key with key_id 'nope'", id="unknown-key"),
        pytest.param(("keys", "revoke", "nope"), "no key with key_id 'nope'", id="revoke-unknown"),
        pytest.param(("keys", "rotate", "nope"), "no key with key_id 'nope'", id="rotate-unknown"),
        pytest.param(
            ("keys", "create", "--owner", "a", "--environment", "prod"),
            "environment 'prod' is not one of",
            id="bad-environment",
        ),
        pytest.param(
            ("keys", "create", "--owner", "a", "--scope", "has space"),
            "scope must be a non-empty string without spaces",
            id="bad-scope",
        ),
        pytest.param(
            ("keys", "create", "--owner", "a", "--rate-limit", "lots"),
            "rate limit must look like",
            id="bad-rate-limit",
        ),
        pytest.param(
            ("keys", "import", "--key-id", "x1", "--secret-hash", "md5$abc", "--owner", "a"),
            "no configured hasher understands",
            id="unknown-hash-form",
        ),
        pytest.param(
            ("keys", "list", "--database-url", "mysql://u@h/db"),
            "supports SQLite and PostgreSQL",
            id="unsupported-database",
        ),
        pytest.param(
            ("keys", "list", "--database-url", "postgresql://postgres@127.0.0.1:1/test"),
            "SQL key store: list_keys failed (OperationalError: connection failed",
            id="database-down",
        ),
        pytest.param(
            ("keys", "list", "--table", "no_such_table"),
            "no such table: no_such_table); create the table with: keyguard db init",
            id="no-table",
        ),
    ],
)
def test_errors_are_one_line(db: str, argv: tuple[str, ...], message: str) -> None:
    result = run(*argv)
    assert result.code == 2
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert result.err.startswith("keyguard: error: ")
    assert message in result.err


def test_bad_duration_is_a_usage_error(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run("keys", "create", "--owner", "a", "--expires-in", "3 years")
    assert exited.value.code == 2
    assert "expected a duration such as 30d" in capsys.readouterr().err


@pytest.mark.slow
def test_the_installed_command(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "keyguard"
    url = f"sqlite:///{tmp_path / 'k.db'}"
    env = {"PATH": str(script.parent), "KEYGUARD_DATABASE_URL": url}
    init = subprocess.run(
        [script, "db", "init"], capture_output=True, text=True, env=env, check=False
    )
    assert init.returncode == 0, init.stderr
    created = subprocess.run(
        [script, "keys", "create", "--owner", "acme", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert {"token", "key_id"} <= set(json.loads(created.stdout))
    assert "cannot show it again" in created.stderr
    missing = subprocess.run(
        [script, "keys", "show", "AAAAAAAAAAAA"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert missing.returncode == 2
    assert missing.stderr == "keyguard: error: no key with key_id 'AAAAAAAAAAAA'\n"
