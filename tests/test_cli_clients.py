"""``keyguard clients ...`` and ``keyguard oauth keygen`` against a real SQLite store."""

from __future__ import annotations

import base64
import os
import re
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("jwt")

from keyguard import HmacSecretHasher, KeyManager, checksum
from keyguard.oauth import AuthorizationServer, KeySet, SigningKey, load_signing_key
from keyguard.oauth.wsgi import AuthorizationServerWSGIApp
from tests._http_drivers import Request, wsgi_call
from tests.test_cli_keys import manager_for, run, store_for

ISSUER = "https://api.example.com"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite key store, also named by KEYGUARD_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    monkeypatch.setenv("KEYGUARD_DATABASE_URL", url)
    monkeypatch.delenv("KEYGUARD_PEPPERS", raising=False)
    monkeypatch.delenv("KEYGUARD_REDIS_URL", raising=False)
    assert run("db", "init").code == 0
    return url


def create(*options: str) -> dict[str, Any]:
    result = run("clients", "create", "--owner", "acme", "--json", *options)
    assert result.code == 0, result.err
    data: dict[str, Any] = result.json()
    return data


def exchange(url: str, client_id: str, secret: str, **params: str) -> int:
    """A token request at an authorization server over the CLI's store; its status."""
    manager = KeyManager(store_for(url), last_used=None)
    server = AuthorizationServer(manager, KeySet(SigningKey.generate()), issuer=ISSUER,
                                 audiences=[ISSUER])  # fmt: skip
    raw = base64.b64encode(f"{client_id}:{secret}".encode())
    body = "&".join(f"{k}={v}" for k, v in {"grant_type": "client_credentials", **params}.items())
    reply = wsgi_call(
        AuthorizationServerWSGIApp(server),
        Request(
            method="POST",
            path="/oauth/token",
            headers=[
                (b"authorization", b"Basic " + raw),
                (b"content-type", b"application/x-www-form-urlencoded"),
            ],
            body=body.encode(),
        ),
    )
    return reply.status


def assert_no_part_of(secret: str, output: str) -> None:
    """Not the secret, nor any 4 characters of its secret part in a row."""
    part = secret.split("_", 3)[3]
    for start in range(len(part) - 3):
        assert part[start : start + 4] not in output, part[start : start + 4]


# -- create ---------------------------------------------------------------------------------


def test_create_prints_the_secret_once_and_the_client_id_on_stderr(db: str) -> None:
    result = run("clients", "create", "--owner", "acme", "--name", "sync", "--scope", "a:read")
    assert result.code == 0
    secret = result.out.strip()
    assert result.out == secret + "\n"
    prefix, environment, client_id, _ = secret.split("_")
    assert (prefix, environment) == ("cs", "live")
    assert result.err.startswith(f"client_id: {client_id}\n")
    assert "cannot show it again" in result.err
    assert_no_part_of(secret, result.err)
    record = manager_for(db).get(client_id)
    assert (record.kind, record.owner, record.name) == ("oauth_client", "acme", "sync")
    assert exchange(db, client_id, secret, scope="a:read") == 200
    assert exchange(db, client_id, secret[:-1] + ("y" if secret.endswith("x") else "x")) == 401


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param((), {"environment": "live", "scopes": [], "expires_at": None}, id="plain"),
        pytest.param(
            ("--environment", "test", "--scope", "b", "--scope", "a"),
            {"environment": "test", "scopes": ["a", "b"]},
            id="test-scopes",
        ),
        pytest.param(("--rate-limit", "100/minute"), {"rate_limit": "100/60s"}, id="rate-limit"),
        pytest.param(("--name", "billing sync"), {"name": "billing sync"}, id="name"),
    ],
)
def test_create_json(db: str, options: tuple[str, ...], expected: dict[str, Any]) -> None:
    result = run("clients", "create", "--owner", "acme", "--json", *options)
    assert result.code == 0, result.err
    data = result.json()
    assert data["client_secret"].split("_")[2] == data["client_id"]
    assert data["client_secret"].startswith("cs_" + data["environment"] + "_")
    assert {name: data[name] for name in expected} == expected
    assert (data["owner"], data["status"]) == ("acme", "active")
    assert "key_id" not in data
    assert "secret_hash" not in data
    assert "cannot show it again" in result.err
    assert_no_part_of(data["client_secret"], result.err)


def test_create_with_an_expiry(db: str) -> None:
    data = create("--expires-in", "30d")
    assert data["expires_at"] is not None
    assert data["expires_at"] > data["created_at"]


def test_create_with_its_own_secret_prefix_and_the_pepper_of_the_environment(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYGUARD_PEPPERS", "v1:" + base64.b64encode(b"pepperpepperpepper").decode())
    data = create("--client-secret-prefix", "acmecs")
    assert data["client_secret"].startswith(f"acmecs_live_{data['client_id']}_")
    stored = store_for(db).get(data["client_id"])
    assert stored is not None
    assert stored.secret_hash.startswith("oauth-client$hmac-sha256$v1$")
    peppered = HmacSecretHasher({"v1": b"pepperpepperpepper"})
    manager = KeyManager(store_for(db), hasher=peppered, client_secret_prefix="acmecs")
    assert manager.get(data["client_id"]).kind == "oauth_client"


# -- the secret is never shown again ----------------------------------------------------------

#: Each command after create, as a function of the client_id.
LATER_COMMANDS = [
    pytest.param(lambda cid: ("clients", "list"), id="list"),
    pytest.param(lambda cid: ("clients", "list", "--json"), id="list-json"),
    pytest.param(lambda cid: ("clients", "list", "--owner", "acme"), id="list-owner"),
    pytest.param(lambda cid: ("clients", "show", cid), id="show"),
    pytest.param(lambda cid: ("clients", "show", cid, "--json"), id="show-json"),
    pytest.param(lambda cid: ("clients", "revoke", cid), id="revoke"),
    pytest.param(lambda cid: ("clients", "revoke", cid, "--json"), id="revoke-json"),
    pytest.param(lambda cid: ("clients", "rotate", cid), id="rotate"),
    pytest.param(lambda cid: ("clients", "rotate", cid, "--json"), id="rotate-json"),
    pytest.param(lambda cid: ("keys", "list"), id="keys-list"),
    pytest.param(lambda cid: ("keys", "list", "--json"), id="keys-list-json"),
]


@pytest.mark.parametrize("command", LATER_COMMANDS)
def test_the_secret_is_never_printed_again(db: str, command: Callable[[str], Any]) -> None:
    data = create("--scope", "a")
    result = run(*command(data["client_id"]))
    assert result.code == 0, result.err
    assert_no_part_of(data["client_secret"], result.out + result.err)
    hashed = store_for(db).get(data["client_id"])
    assert hashed is not None
    assert hashed.secret_hash.rsplit("$", 1)[1] not in result.out + result.err


def test_list_shows_clients_only_and_keys_list_shows_keys_only(db: str) -> None:
    clients = [create("--scope", "x:y")["client_id"] for _ in range(2)]
    assert run("keys", "create", "--owner", "acme").code == 0
    bob = run("clients", "create", "--owner", "bob", "--json").json()["client_id"]
    table = run("clients", "list")
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].split() == [
        "CLIENT_ID", "OWNER", "NAME", "ENV", "SCOPES", "CREATED", "EXPIRES", "LAST_USED", "STATUS",
    ]  # fmt: skip
    assert sorted(line.split()[0] for line in lines[1:]) == sorted([*clients, bob])
    listed = run("clients", "list", "--owner", "acme", "--json").json()
    assert sorted(item["client_id"] for item in listed) == sorted(clients)
    assert all(item["scopes"] == ["x:y"] for item in listed)
    keys = run("keys", "list", "--json").json()
    assert len(keys) == 1
    assert keys[0]["key_id"] not in [*clients, bob]


def test_list_of_a_store_without_clients(db: str) -> None:
    assert run("keys", "create", "--owner", "acme").code == 0
    result = run("clients", "list")
    assert (result.code, result.out, result.err) == (0, "", "no clients\n")
    assert run("clients", "list", "--json").json() == []


# -- show, revoke, rotate -----------------------------------------------------------------------


def test_show_revoke_and_the_token_endpoint(db: str) -> None:
    data = create("--scope", "a")
    client_id, secret = data["client_id"], data["client_secret"]
    shown = run("clients", "show", client_id)
    assert shown.code == 0
    assert f"client_id:    {client_id}\n" in shown.out
    assert "status:       active\n" in shown.out
    assert exchange(db, client_id, secret) == 200
    revoked = run("clients", "revoke", client_id)
    assert revoked.code == 0
    assert revoked.out.startswith(f"revoked client {client_id} (revoked at ")
    assert "tokens" in revoked.err
    assert exchange(db, client_id, secret) == 401
    assert run("clients", "show", client_id, "--json").json()["status"] == "revoked"
    again = run("clients", "revoke", client_id, "--json").json()
    assert again["revoked_at"] == run("clients", "show", client_id, "--json").json()["revoked_at"]


def test_rotate_issues_a_replacement_client(db: str) -> None:
    old = create("--scope", "s", "--name", "sync")
    result = run("clients", "rotate", old["client_id"], "--grace", "1h", "--json")
    assert result.code == 0, result.err
    new = result.json()
    assert new["replaces"] == old["client_id"]
    assert new["client_id"] != old["client_id"]
    assert (new["scopes"], new["name"]) == (["s"], "sync")
    assert new["replaced_client_expires_at"] is not None
    assert "cannot show it again" in result.err
    assert_no_part_of(new["client_secret"], result.err)
    assert exchange(db, new["client_id"], new["client_secret"]) == 200
    assert exchange(db, old["client_id"], old["client_secret"]) == 200  # within the grace
    assert manager_for(db).get(old["client_id"]).replaced_by == new["client_id"]
    assert manager_for(db).get(new["client_id"]).kind == "oauth_client"

    text = run("clients", "rotate", new["client_id"])
    assert text.code == 0
    newer = text.out.strip()
    assert newer.startswith("cs_live_")
    assert re.match(
        rf"client_id: {newer.split('_')[2]} replaces {new['client_id']}, which keeps working until",
        text.err,
    )


# -- keys and clients do not mix ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["show", "revoke", "rotate"])
@pytest.mark.parametrize(
    ("group", "other", "make"),
    [
        pytest.param("keys", "clients", lambda: create()["client_id"], id="client-as-key"),
        pytest.param(
            "clients",
            "keys",
            lambda: run("keys", "create", "--owner", "acme", "--json").json()["key_id"],
            id="key-as-client",
        ),
    ],
)
def test_a_record_of_the_other_kind_is_refused_and_left_alone(
    db: str, command: str, group: str, other: str, make: Callable[[], str]
) -> None:
    key_id = make()
    result = run(group, command, key_id)
    assert result.code == 2
    assert result.out == ""
    assert result.err.endswith(f": use keyguard {other} {command} {key_id}\n")
    record = manager_for(db).get(key_id)
    assert (record.status(record.created_at), record.replaced_by) == ("active", None)


# -- a secret where a client_id belongs ----------------------------------------------------------

CLIENT_ID = "M65wXtYRmqlf"
SECRET_PART = "YvcmInz8IPd6wyHrsvMXo8eaDATs2aRs"
SECRET = f"cs_live_{CLIENT_ID}_{SECRET_PART}" + checksum(f"cs_live_{CLIENT_ID}_{SECRET_PART}")

#: (what is given where a client_id belongs, the client_id the message names)
SECRET_ARGUMENTS = [
    pytest.param(SECRET, CLIENT_ID, id="full"),
    pytest.param(SECRET[:-6], CLIENT_ID, id="checksum-cut"),
    pytest.param(SECRET[:30], CLIENT_ID, id="secret-cut"),
    pytest.param(SECRET + "\n", CLIENT_ID, id="trailing-newline"),
    pytest.param(SECRET.upper(), CLIENT_ID.upper(), id="upper-case"),
    pytest.param(SECRET[8:], CLIENT_ID, id="prefix-and-environment-cut"),
    pytest.param(f"{CLIENT_ID}:{SECRET}", CLIENT_ID, id="basic-credentials"),
]


@pytest.mark.parametrize(("given", "client_id"), SECRET_ARGUMENTS)
@pytest.mark.parametrize("command", ["show", "revoke", "rotate"])
@pytest.mark.parametrize("json_option", [(), ("--json",)], ids=["text", "json"])
def test_a_secret_where_a_client_id_belongs_is_never_printed(
    db: str, command: str, given: str, client_id: str, json_option: tuple[str, ...]
) -> None:
    result = run("clients", command, given, *json_option)
    assert result.code == 2
    assert result.out == ""
    assert result.err == (
        "keyguard: error: a client secret was given where a client_id belongs; "
        f"its client_id is {client_id}\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(("clients", "show", "nope"), "no key with key_id 'nope'", id="unknown"),
        pytest.param(
            ("clients", "revoke", "nope"), "no key with key_id 'nope'", id="revoke-unknown"
        ),
        pytest.param(
            ("clients", "rotate", "nope"), "no key with key_id 'nope'", id="rotate-unknown"
        ),
        pytest.param(("clients", "show", "has space"), "not a client_id: ", id="not-an-id"),
        pytest.param(
            ("clients", "create", "--owner", "a", "--environment", "prod"),
            "environment 'prod' is not one of",
            id="bad-environment",
        ),
        pytest.param(
            ("clients", "create", "--owner", "a", "--scope", "has space"),
            "scope must be a non-empty string without spaces",
            id="bad-scope",
        ),
        pytest.param(
            ("clients", "create", "--owner", "a", "--rate-limit", "lots"),
            "rate limit must look like",
            id="bad-rate-limit",
        ),
        pytest.param(
            ("clients", "create", "--owner", "a", "--client-secret-prefix", "sk"),
            "client_secret_prefix must differ from the key prefix 'sk'",
            id="prefix-of-the-keys",
        ),
        pytest.param(
            ("clients", "list", "--client-secret-prefix", "C S"),
            "prefix",
            id="bad-prefix",
        ),
        pytest.param(
            ("clients", "list", "--database-url", "postgresql://postgres@127.0.0.1:1/test"),
            "SQL key store: list_keys failed (OperationalError: connection failed",
            id="database-down",
        ),
        pytest.param(
            ("clients", "list", "--table", "no_such_table"),
            "create the table with: keyguard db init",
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


@pytest.mark.redis
@pytest.mark.parametrize("command", ["revoke", "rotate"])
def test_revoke_and_rotate_announce_on_redis(db: str, redis_url: str, command: str) -> None:
    from keyguard.stores.redis_broadcast import RedisRevocationBroadcast

    channel = f"keyguard-test:{uuid.uuid4().hex}"
    listener = RedisRevocationBroadcast(redis_url, channel=channel)
    try:
        assert listener.poll() is None
        client_id = create()["client_id"]
        result = run(
            "clients", command, client_id, "--redis-url", redis_url, "--redis-channel", channel
        )
        assert result.code == 0, result.err
        assert "announced" in result.err
        heard: list[str] = []
        deadline = time.monotonic() + 2
        while not heard and time.monotonic() < deadline:
            heard.extend(listener.poll() or [])
        assert heard == [client_id]
    finally:
        listener.close()


# -- oauth keygen -------------------------------------------------------------------------------


def _private_lines(path: Path) -> list[str]:
    """The base64 lines of a PEM file: what would show if the key were printed."""
    return [line for line in path.read_text().splitlines() if not line.startswith("-----")]


@pytest.mark.parametrize(
    ("options", "algorithm"),
    [
        pytest.param((), "ES256", id="default"),
        pytest.param(("--algorithm", "ES256"), "ES256", id="es256"),
        pytest.param(("--algorithm", "RS256"), "RS256", id="rs256"),
        pytest.param(("--algorithm", "EdDSA"), "EdDSA", id="eddsa"),
    ],
)
@pytest.mark.parametrize("json_option", [False, True], ids=["text", "json"])
def test_keygen_writes_a_private_key_file_and_prints_its_kid(
    tmp_path: Path, options: tuple[str, ...], algorithm: str, json_option: bool
) -> None:
    path = tmp_path / "signing.pem"
    result = run("oauth", "keygen", "--out", str(path), *options, *(["--json"] * json_option))
    assert result.code == 0, result.err
    key = load_signing_key(path)
    assert key.algorithm == algorithm
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if json_option:
        assert result.json() == {"kid": key.kid, "algorithm": algorithm, "path": str(path)}
    else:
        assert result.out == f"{key.kid}\n"
        assert f"{algorithm} signing key to {path}" in result.err
    assert "KEYGUARD_OAUTH_SIGNING_KEYS" in result.err
    assert key.kid == KeySet(key).jwks()["keys"][0]["kid"]  # the RFC 7638 thumbprint
    output = result.out + result.err
    assert "PRIVATE KEY" not in output
    for line in _private_lines(path):
        assert line[:16] not in output


def test_keygen_never_overwrites_a_file(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    first = run("oauth", "keygen", "--out", str(path))
    assert first.code == 0
    before = path.read_bytes()
    again = run("oauth", "keygen", "--out", str(path), "--algorithm", "RS256")
    assert (again.code, again.out) == (2, "")
    assert again.err == (
        f"keyguard: error: {path} exists; keyguard never overwrites a signing key (remove it "
        f"first, or write the new key elsewhere and rotate)\n"
    )
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda tmp: tmp / "missing" / "k.pem", "No such file or directory", id="no-dir"
        ),
        pytest.param(lambda tmp: tmp, "exists", id="a-directory"),
    ],
)
def test_keygen_errors_are_one_line(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    result = run("oauth", "keygen", "--out", str(make(tmp_path)))
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith("keyguard: error: ")
    assert result.err.count("\n") == 1
    assert message in result.err
    assert os.listdir(tmp_path) == []


def test_keygen_refuses_an_unknown_algorithm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run("oauth", "keygen", "--out", str(tmp_path / "k.pem"), "--algorithm", "HS256")
    assert exited.value.code == 2
    assert "invalid choice: 'HS256'" in capsys.readouterr().err
    assert not (tmp_path / "k.pem").exists()


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("clients", "revoke", CLIENT_ID, SECRET), id="extra-argument"),
        pytest.param(("clients", "rotate", CLIENT_ID, "--grace", SECRET), id="bad-duration"),
        pytest.param(("clients", "show", CLIENT_ID, f"--{SECRET}"), id="unknown-option"),
        pytest.param(("oauth", "keygen", "--out", "k.pem", "--algorithm", SECRET), id="algorithm"),
    ],
)
def test_usage_errors_never_repeat_a_client_secret(
    db: str, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(*argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "[redacted]" in captured.err
    for start in range(len(SECRET_PART) - 3):
        assert SECRET_PART[start : start + 4] not in captured.out + captured.err
