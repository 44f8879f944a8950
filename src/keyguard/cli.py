"""The ``keyguard`` command.

``keyguard generate`` makes a key (printed once), ``keyguard check TOKEN``
checks its format and checksum offline, ``keyguard hash TOKEN`` prints the
stored form of its secret. A TOKEN of ``-`` is read from standard input, which
keeps keys out of shell history and process listings.

``keyguard db init`` and ``keyguard keys create|list|show|revoke|rotate|import``
work on a key store (``--database-url``, default ``$KEYGUARD_DATABASE_URL`` or
the SQLite file ``keyguard.db``); revoke and rotate announce the change on the
Redis revocation broadcast when ``--redis-url`` or ``$KEYGUARD_REDIS_URL`` is set.

Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from ._clock import SYSTEM_CLOCK
from ._errors import KeyguardError, MalformedKeyError, StorageError
from ._hashing import HmacSecretHasher, PasslibHasher, SecretHasher
from ._keys import KeyFormat, generate_key, parse_key
from ._manager import KeyManager
from ._records import KeyRecord
from .ratelimit._policy import Policy

if TYPE_CHECKING:
    from .stores.sql import SQLKeyStore

__all__ = ["main"]

#: Exit status for a usage or runtime error; 1 is "the key is not valid".
EXIT_ERROR = 2


class CommandError(Exception):
    """Stops a command with a one-line message (exit status 2)."""


def _key_format(args: argparse.Namespace) -> KeyFormat:
    try:
        return KeyFormat(
            prefix=args.prefix,
            environments=tuple(args.environments.split(",")),
            accept_split_keys=getattr(args, "split", False),
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _read_token(value: str, stdin: TextIO) -> str:
    if value == "-":
        return stdin.readline().rstrip("\r\n")
    return value


def hasher_from_environment(environ: dict[str, str] | None = None) -> HmacSecretHasher:
    """The default hasher, peppered from ``KEYGUARD_PEPPERS`` when set.

    ``KEYGUARD_PEPPERS`` is ``version:base64-pepper[,version:base64-pepper...]``;
    the first entry is the current one. Peppers never go on the command line.
    """
    env = os.environ if environ is None else environ
    spec = env.get("KEYGUARD_PEPPERS", "").strip()
    if not spec:
        return HmacSecretHasher()
    peppers: dict[str, bytes] = {}
    for item in spec.split(","):
        version, sep, encoded = item.strip().partition(":")
        if not sep:
            raise CommandError("KEYGUARD_PEPPERS must be 'version:base64[,version:base64...]'")
        try:
            peppers[version] = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise CommandError(f"KEYGUARD_PEPPERS: pepper {version!r} is not base64") from None
    try:
        return HmacSecretHasher(peppers, current=next(iter(peppers)))
    except ValueError as exc:
        raise CommandError(f"KEYGUARD_PEPPERS: {exc}") from None


def _cmd_generate(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    fmt = _key_format(args)
    try:
        key = generate_key(fmt, args.environment)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    stored = hasher_from_environment().hash(key.secret)
    if args.json:
        json.dump(
            {
                "token": key.token,
                "key_id": key.key_id,
                "environment": key.environment,
                "secret_hash": stored,
            },
            out,
        )
        out.write("\n")
    else:
        out.write(f"{key.token}\n")
        err.write(
            f"key_id: {key.key_id}\nstored form: {stored}\n"
            "This key is shown once; keyguard keeps only its hash.\n"
        )
    return 0


def _cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """`check`: print the environment and key_id; `hash`: the stored form. Exit 1 if invalid."""
    try:
        parsed = parse_key(_read_token(args.token, stdin), _key_format(args))
    except MalformedKeyError as exc:
        err.write(f"invalid: {exc}\n")
        return 1
    if args.command == "hash":
        out.write(f"{hasher_from_environment().hash(parsed.secret)}\n")
    elif parsed.split:
        out.write(f"valid split key; key_id {parsed.key_id}\n")
    else:
        out.write(f"valid {parsed.environment} key; key_id {parsed.key_id}\n")
    return 0


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    if args.tour:
        return _demo_tour(args, out, err, stdin)
    from ._demo import DemoError, run_demo  # noqa: PLC0415 (only the demo needs it)

    try:
        return run_demo(out, port=args.port, check=args.check)
    except DemoError as exc:
        raise CommandError(str(exc)) from None


def _demo_tour(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from ._denials import Denial  # noqa: PLC0415 (only the tour needs it)
    from ._manager import KeyManager  # noqa: PLC0415
    from .stores.memory import MemoryKeyStore  # noqa: PLC0415

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


Command = Callable[[argparse.Namespace, TextIO, TextIO, TextIO], int]

_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w``."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30d, 12h, 90m, 3600s or 2w, got {text!r}"
        )
    return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record_json(record: KeyRecord, now: datetime) -> dict[str, Any]:
    """A record for scripts: every field but the secret hash."""

    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.astimezone(UTC).isoformat()

    return {
        "key_id": record.key_id,
        "owner": record.owner,
        "name": record.name,
        "environment": record.environment,
        "scopes": sorted(record.scopes),
        "status": record.status(now),
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "revoked_at": iso(record.revoked_at),
        "last_used_at": iso(record.last_used_at),
        "replaced_by": record.replaced_by,
        "rate_limit": None if record.rate_limit is None else record.rate_limit.to_spec(),
        "metadata": dict(record.metadata),
    }


def _write_json(out: TextIO, value: Any) -> None:
    json.dump(value, out, sort_keys=True)
    out.write("\n")


_LIST_COLUMNS = (
    "KEY_ID",
    "OWNER",
    "NAME",
    "ENV",
    "SCOPES",
    "CREATED",
    "EXPIRES",
    "LAST_USED",
    "STATUS",
)


def _list_row(record: KeyRecord, now: datetime) -> tuple[str, ...]:
    return (
        record.key_id,
        record.owner,
        record.name or "-",
        record.environment,
        ",".join(sorted(record.scopes)) or "-",
        _when(record.created_at),
        _when(record.expires_at),
        _when(record.last_used_at),
        record.status(now),
    )


def _write_table(out: TextIO, rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


_ONCE_WARNING = (
    "This is the only time the key is shown: keyguard keeps only its hash and cannot show it "
    "again. Store it now."
)


def _open_store(args: argparse.Namespace) -> SQLKeyStore:
    try:
        from .stores.sql import SQLKeyStore  # noqa: PLC0415 (optional extra)
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    try:
        return SQLKeyStore(args.database_url, table_name=args.table, schema=args.schema)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _open_manager(args: argparse.Namespace) -> KeyManager:
    """A manager over the SQL store named by the options (no last-used writes)."""
    store = _open_store(args)
    legacy: list[SecretHasher] = []
    with contextlib.suppress(ImportError):
        legacy.append(PasslibHasher())
    return KeyManager(
        store,
        key_format=_key_format(args),
        hasher=hasher_from_environment(),
        legacy_hashers=legacy,
        last_used=None,
    )


def _store_command(command: Command) -> Command:
    """Turn what a store or a manager refuses into one line, with a hint for a missing table."""

    def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
        try:
            return command(args, out, err, stdin)
        except StorageError as exc:
            text = str(exc)
            if "no such table" in text or "does not exist" in text:
                text += "; create the table with: keyguard db init"
            raise CommandError(text) from None
        except (ValueError, TypeError) as exc:
            raise CommandError(str(exc)) from None

    return run


def _announce(args: argparse.Namespace, key_id: str, err: TextIO) -> None:
    url = args.redis_url or os.environ.get("KEYGUARD_REDIS_URL", "").strip()
    if not url:
        return
    try:
        from .stores.redis_broadcast import RedisRevocationBroadcast  # noqa: PLC0415
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    broadcast = RedisRevocationBroadcast(url, channel=args.redis_channel)
    try:
        broadcast.publish(key_id)
    except StorageError as exc:
        err.write(f"keyguard: warning: {exc}; running apps see the change within their cache TTL\n")
    else:
        err.write(f"announced on the Redis channel {args.redis_channel!r}\n")
    finally:
        broadcast.close()


@_store_command
def _cmd_db_init(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    store = _open_store(args)
    try:
        store.create_schema()
    finally:
        store.close()
    url = store.url.render_as_string(hide_password=True)
    out.write(f"table {store.table.fullname} is ready in {url}\n")
    return 0


@_store_command
def _cmd_keys_create(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    manager = _open_manager(args)
    try:
        rate_limit = Policy.parse(args.rate_limit) if args.rate_limit else None
        issued = manager.create(
            args.owner,
            args.name,
            environment=args.environment,
            scopes=args.scope,
            expires_in=args.expires_in,
            rate_limit=rate_limit,
        )
    finally:
        manager.close()
    if args.json:
        _write_json(out, {"token": issued.token, **_record_json(issued.record, SYSTEM_CLOCK.now())})
    else:
        out.write(f"{issued.token}\n")
        err.write(f"key_id: {issued.key_id}\n")
    err.write(_ONCE_WARNING + "\n")
    return 0


@_store_command
def _cmd_keys_list(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    manager = _open_manager(args)
    try:
        records = manager.list(args.owner)
    finally:
        manager.close()
    now = SYSTEM_CLOCK.now()
    if args.json:
        _write_json(out, [_record_json(r, now) for r in records])
    elif records:
        _write_table(out, [_LIST_COLUMNS, *(_list_row(r, now) for r in records)])
    else:
        err.write("no keys\n")
    return 0


@_store_command
def _cmd_keys_show(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    manager = _open_manager(args)
    try:
        record = manager.get(args.key_id)
    finally:
        manager.close()
    shown = _record_json(record, SYSTEM_CLOCK.now())
    if args.json:
        _write_json(out, shown)
    else:
        for name, value in shown.items():
            if isinstance(value, list):
                text = " ".join(value) or "-"
            elif isinstance(value, dict):
                text = json.dumps(value, sort_keys=True)
            else:
                text = "-" if value is None else str(value)
            out.write(f"{name + ':':<14}{text}\n")
    return 0


@_store_command
def _cmd_keys_revoke(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    manager = _open_manager(args)
    try:
        record = manager.revoke(args.key_id)
    finally:
        manager.close()
    if args.json:
        _write_json(out, _record_json(record, SYSTEM_CLOCK.now()))
    else:
        out.write(f"revoked {record.key_id} (revoked at {_when(record.revoked_at)})\n")
    _announce(args, record.key_id, err)
    return 0


@_store_command
def _cmd_keys_rotate(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    manager = _open_manager(args)
    try:
        issued = manager.rotate(args.key_id, grace=args.grace)
        old = manager.get(args.key_id)
    finally:
        manager.close()
    if args.json:
        _write_json(
            out,
            {
                "token": issued.token,
                **_record_json(issued.record, SYSTEM_CLOCK.now()),
                "replaces": old.key_id,
                "replaced_key_expires_at": _record_json(old, SYSTEM_CLOCK.now())["expires_at"],
            },
        )
    else:
        out.write(f"{issued.token}\n")
        err.write(
            f"key_id: {issued.key_id} replaces {old.key_id}, "
            f"which keeps working until {_when(old.expires_at)}\n"
        )
    err.write(_ONCE_WARNING + "\n")
    _announce(args, old.key_id, err)
    return 0


@_store_command
def _cmd_keys_import(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    secret_hash = _read_token(args.secret_hash, stdin)
    manager = _open_manager(args)
    try:
        expires_at = None if args.expires_in is None else SYSTEM_CLOCK.now() + args.expires_in
        record = manager.import_key(
            args.key_id,
            secret_hash,
            owner=args.owner,
            name=args.name,
            environment=args.environment,
            scopes=args.scope,
            expires_at=expires_at,
        )
    finally:
        manager.close()
    if args.json:
        _write_json(out, _record_json(record, SYSTEM_CLOCK.now()))
    else:
        out.write(f"imported {record.key_id}\n")
    return 0


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the key store (default: $KEYGUARD_DATABASE_URL, "
        "else sqlite:///keyguard.db)",
    )
    parser.add_argument("--table", default="keyguard_keys", help="table name")
    parser.add_argument("--schema", help="PostgreSQL schema of the table")


def _add_broadcast_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url", help="announce the change on Redis (default: $KEYGUARD_REDIS_URL)"
    )
    parser.add_argument(
        "--redis-channel", default="keyguard:revocations", help="the revocation channel"
    )


def _add_store_commands(sub: Any) -> None:
    db = sub.add_parser("db", help="the key store's database")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    init = db_sub.add_parser("init", help="create the keys table if it is missing")
    _add_store_options(init)
    _add_format_options(init)
    init.set_defaults(handler=_cmd_db_init)

    keys = sub.add_parser("keys", help="create, list, show, revoke, rotate and import keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = keys_sub.add_parser("create", help="create a key and print its token once")
    create.add_argument("--owner", required=True, help="who the key belongs to")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--environment", help="live or test (default: the first, live)")
    create.add_argument(
        "--scope", action="append", default=[], help="a granted scope (repeat for more)"
    )
    create.add_argument("--expires-in", type=_duration, help="lifetime, such as 30d or 12h")
    create.add_argument("--rate-limit", help="per-key limit, such as 100/minute")
    create.set_defaults(handler=_cmd_keys_create)

    lst = keys_sub.add_parser("list", help="list keys (never their hashes)")
    lst.add_argument("--owner", help="only this owner's keys")
    lst.set_defaults(handler=_cmd_keys_list)

    show = keys_sub.add_parser("show", help="show one key")
    show.add_argument("key_id")
    show.set_defaults(handler=_cmd_keys_show)

    revoke = keys_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    _add_broadcast_options(revoke)
    revoke.set_defaults(handler=_cmd_keys_revoke)

    rotate = keys_sub.add_parser("rotate", help="issue a replacement; the old key expires later")
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace", type=_duration, default=timedelta(hours=24), help="old key's overlap (24h)"
    )
    _add_broadcast_options(rotate)
    rotate.set_defaults(handler=_cmd_keys_rotate)

    imp = keys_sub.add_parser("import", help="store a key made elsewhere, by its existing hash")
    imp.add_argument("--key-id", required=True, help="the key's public identifier")
    imp.add_argument(
        "--secret-hash", required=True, help="its stored hash (bcrypt, ...), or - for stdin"
    )
    imp.add_argument("--owner", required=True)
    imp.add_argument("--name", default="")
    imp.add_argument("--environment", default="live")
    imp.add_argument("--scope", action="append", default=[])
    imp.add_argument("--expires-in", type=_duration)
    imp.set_defaults(handler=_cmd_keys_import)

    for parser in (create, lst, show, revoke, rotate, imp):
        _add_store_options(parser)
        _add_format_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _add_format_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default="sk", help="key prefix (default: sk)")
    parser.add_argument(
        "--environments",
        default="live,test",
        help="comma-separated environment words (default: live,test)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="keyguard", description="API keys for HTTP APIs: generate, check, hash."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", help="make a new key and print it once")
    _add_format_options(gen)
    gen.add_argument("--environment", help="environment word (default: the first, live)")
    gen.add_argument("--json", action="store_true", help="print a JSON object")
    gen.set_defaults(handler=_cmd_generate)

    check = sub.add_parser("check", help="check a key's format and checksum, offline")
    _add_format_options(check)
    check.add_argument("--split", action="store_true", help="also accept identifier.secret keys")
    check.add_argument("token", help="the key, or - to read it from standard input")
    check.set_defaults(handler=_cmd_check)

    hsh = sub.add_parser(
        "hash", help="print the stored form of a key's secret (peppered by KEYGUARD_PEPPERS)"
    )
    _add_format_options(hsh)
    hsh.add_argument("--split", action="store_true", help="also accept identifier.secret keys")
    hsh.add_argument("token", help="the key, or - to read it from standard input")
    hsh.set_defaults(handler=_cmd_check)
    _add_store_commands(sub)
    demo = sub.add_parser(
        "demo", help="run the FastAPI example on localhost with a live key and curl lines"
    )
    demo.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    demo.add_argument(
        "--check", action="store_true", help="make the requests, print the answers, and exit"
    )
    demo.add_argument(
        "--tour", action="store_true", help="instead, a short offline tour of keys and denials"
    )
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run the command line; return the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args, out, err, stdin or sys.stdin)
    except (CommandError, KeyguardError) as exc:
        err.write(f"keyguard: error: {exc}\n")
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`keyguard keys list | head`): not an error worth a traceback.
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
