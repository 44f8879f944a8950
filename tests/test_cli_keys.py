"""``keyguard db init`` and ``keyguard keys ...`` against real stores."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")

from keyguard import HmacSecretHasher, KeyFormat, KeyManager, checksum, parse_key
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


# A token of the default format, fixed so that the checks below are the same on every run.
KEY_ID = "M65wXtYRmqlf"
SECRET = "YvcmInz8IPd6wyHrsvMXo8eaDATs2aRs"
TOKEN = f"sk_live_{KEY_ID}_{SECRET}" + checksum(f"sk_live_{KEY_ID}_{SECRET}")
SPLIT_SECRET = "0ldSystemSecret0ldSystemSecret00"

#: (what is given where a key_id belongs, the secret part of it, the key_id it names)
TOKEN_ARGUMENTS = [
    pytest.param(TOKEN, TOKEN[21:], KEY_ID, id="full"),
    pytest.param(TOKEN[:-6], SECRET, KEY_ID, id="checksum-cut"),
    pytest.param(TOKEN[:-3], TOKEN[21:-3], KEY_ID, id="checksum-half-cut"),
    pytest.param(TOKEN[:31], SECRET[:10], KEY_ID, id="secret-cut"),
    pytest.param(TOKEN[:22], SECRET[:1], KEY_ID, id="one-secret-character"),
    pytest.param(TOKEN + "x9", TOKEN[21:] + "x9", KEY_ID, id="extended"),
    pytest.param(TOKEN + "\n", TOKEN[21:], KEY_ID, id="trailing-newline"),
    pytest.param(f"Bearer {TOKEN}", TOKEN[21:], KEY_ID, id="with-bearer"),
    pytest.param(TOKEN.upper(), TOKEN[21:].upper(), KEY_ID.upper(), id="upper-case"),
    pytest.param(
        f"acme_staging_{KEY_ID}_{SECRET}abcdef", SECRET + "abcdef", KEY_ID, id="other-format"
    ),
    pytest.param(TOKEN[3:], TOKEN[21:], KEY_ID, id="prefix-cut"),
    pytest.param(TOKEN[8:], TOKEN[21:], KEY_ID, id="prefix-and-environment-cut"),
    pytest.param(f"legacy-7.{SPLIT_SECRET}", SPLIT_SECRET, "legacy-7", id="split-key"),
    pytest.param(f"bad id.{SPLIT_SECRET}", SPLIT_SECRET, None, id="split-key-bad-identifier"),
]

#: Each command that takes a key_id, as a function of it.
KEY_ID_COMMANDS = [
    pytest.param(lambda key_id: ("keys", "show", key_id), id="show"),
    pytest.param(lambda key_id: ("keys", "show", key_id, "--json"), id="show-json"),
    pytest.param(lambda key_id: ("keys", "revoke", key_id), id="revoke"),
    pytest.param(lambda key_id: ("keys", "rotate", key_id, "--grace", "1h"), id="rotate"),
    pytest.param(
        lambda key_id: ("keys", "import", "--key-id", key_id, "--secret-hash", "-", "--owner", "a"),
        id="import",
    ),
]


def assert_no_part_of(secret: str, output: str) -> None:
    """Not the secret, nor any 4 characters of it in a row, nor a key_id followed by any of it."""
    for start in range(len(secret) - 3):
        assert secret[start : start + 4] not in output, secret[start : start + 4]
    assert not re.search(rf"(?i:{KEY_ID})_[0-9A-Za-z]", output)


@pytest.mark.parametrize(("given", "secret", "key_id"), TOKEN_ARGUMENTS)
@pytest.mark.parametrize("command", KEY_ID_COMMANDS)
def test_a_token_where_a_key_id_belongs_is_never_printed(
    db: str, command: Any, given: str, secret: str, key_id: str | None
) -> None:
    result = run(*command(given), stdin=HmacSecretHasher().hash(SECRET) + "\n")
    assert result.code == 2
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert result.err.startswith("keyguard: error: a token was given where a key_id belongs")
    if key_id is not None:
        assert result.err.endswith(f"; its key_id is {key_id}\n")
    assert_no_part_of(secret, result.out + result.err)


def test_a_real_key_given_as_its_token_is_left_alone(db: str) -> None:
    """A revoke (or rotate) given the token does nothing and says which key_id to use."""
    imported = run(
        "keys", "import", "--key-id", KEY_ID, "--secret-hash", "-", "--owner", "acme",
        stdin=HmacSecretHasher().hash(SECRET) + "\n",
    )  # fmt: skip
    assert imported.code == 0
    assert manager_for(db).authenticate(TOKEN)
    for argv in (("keys", "revoke", TOKEN), ("keys", "rotate", TOKEN)):
        result = run(*argv)
        assert result.code == 2
        assert result.err.endswith(f"its key_id is {KEY_ID}\n")
        assert_no_part_of(TOKEN[21:], result.out + result.err)
    assert run("keys", "show", KEY_ID, "--json").json()["status"] == "active"
    assert [k["key_id"] for k in run("keys", "list", "--json").json()] == [KEY_ID]


@pytest.mark.parametrize(
    "given",
    [
        pytest.param("has space", id="space"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param("ключ", id="not-ascii"),
        pytest.param("", id="empty"),
    ],
)
@pytest.mark.parametrize("command", KEY_ID_COMMANDS)
def test_what_cannot_be_a_key_id_is_refused_without_repeating_it(
    db: str, command: Any, given: str
) -> None:
    result = run(*command(given), stdin="sha256$" + "0" * 64 + "\n")
    assert result.code == 2
    assert result.err.startswith("keyguard: error: not a key_id: ")
    if given:
        assert given not in result.err


@pytest.mark.parametrize(
    ("given", "secret"),
    [
        pytest.param(TOKEN[13:], TOKEN[21:], id="key-id-cut"),
        pytest.param(TOKEN[21:], TOKEN[21:], id="secret-and-checksum"),
        pytest.param(SECRET, SECRET, id="secret"),
        pytest.param(SECRET[:13], SECRET[:13], id="thirteen-secret-characters"),
        pytest.param(f"x-{SECRET[3:20]}", SECRET[3:20], id="inside-an-identifier"),
    ],
)
@pytest.mark.parametrize("command", KEY_ID_COMMANDS)
def test_a_piece_of_a_secret_is_looked_up_but_never_repeated(
    db: str, command: Any, given: str, secret: str
) -> None:
    """No key_id to name, so no refusal; a key_id that long is valid, but never echoed."""
    result = run(*command(given), stdin="md5$" + "0" * 32 + "\n")
    assert result.code == 2
    assert result.out == ""
    assert "[redacted]" in result.err
    assert_no_part_of(secret, result.err)


@pytest.mark.parametrize(
    "key_id",
    [
        pytest.param(KEY_ID, id="keyguard"),
        pytest.param("legacy-7", id="imported"),
        pytest.param("legacy_key_7", id="imported-underscores"),
        pytest.param(f"sk_live_{KEY_ID}", id="token-without-secret"),
        pytest.param("customer1234_prod", id="key-id-and-a-short-word"),
    ],
)
def test_key_ids_are_still_looked_up(db: str, key_id: str) -> None:
    result = run("keys", "show", key_id)
    assert result.err == f"keyguard: error: no key with key_id {key_id!r}\n"


def test_a_long_imported_key_id_works_though_messages_do_not_repeat_it(db: str) -> None:
    key_id = "key_507f1f77bcf86cd799439011"
    imported = run(
        "keys", "import", "--key-id", key_id, "--secret-hash", "-", "--owner", "acme",
        stdin=HmacSecretHasher().hash(SECRET) + "\n",
    )  # fmt: skip
    assert (imported.code, imported.out) == (0, f"imported {key_id}\n")
    assert run("keys", "show", key_id, "--json").json()["key_id"] == key_id
    assert run("keys", "revoke", key_id).code == 0
    again = run(
        "keys", "import", "--key-id", key_id, "--secret-hash", "-", "--owner", "acme",
        stdin=HmacSecretHasher().hash(SECRET) + "\n",
    )  # fmt: skip
    assert again.code == 2
    assert key_id not in again.err
    assert "[redacted]" in again.err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("keys", "revoke", KEY_ID, TOKEN), id="extra-argument"),
        pytest.param(("keys", "rotate", KEY_ID, "--grace", TOKEN), id="bad-duration"),
        pytest.param(("keys", "create", "--owner", "a", "--expires-in", TOKEN), id="bad-expiry"),
        pytest.param(("keys", "show", KEY_ID, f"--{TOKEN}"), id="unknown-option"),
        pytest.param(("keys", "show", KEY_ID, TOKEN[8:]), id="extra-argument-prefix-cut"),
    ],
)
def test_usage_errors_never_repeat_a_token(
    db: str, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "[redacted]" in captured.err
    assert_no_part_of(TOKEN[21:], captured.out + captured.err)
