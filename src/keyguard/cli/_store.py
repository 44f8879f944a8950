"""The commands that work on a key store: ``db init`` and ``keys ...``.

The ``keys`` commands work on API keys only: ``keys list`` leaves OAuth clients
out, and ``keys show|revoke|rotate`` given a client_id point at the ``clients``
command instead (whose secrets and messages are a client's, see ``_clients``).

They open the SQL store named by ``--database-url`` (default
``$KEYGUARD_DATABASE_URL`` or the SQLite file ``keyguard.db``), and revoke and
rotate announce the change on the Redis revocation broadcast when
``--redis-url`` or ``$KEYGUARD_REDIS_URL`` is set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from .._clock import SYSTEM_CLOCK
from .._errors import StorageError
from .._hashing import PasslibHasher, SecretHasher
from .._manager import DEFAULT_CLIENT_SECRET_PREFIX, KeyManager
from .._records import KeyKind, KeyRecord
from ..ratelimit._policy import Policy
from ._command import Command, CommandError, hasher_from_environment, key_format, read_token
from ._tokens import checked_key_id

if TYPE_CHECKING:
    from ..stores.sql import SQLKeyStore

__all__ = [
    "db_init",
    "keys_create",
    "keys_import",
    "keys_list",
    "keys_revoke",
    "keys_rotate",
    "keys_show",
]


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
        from ..stores.sql import SQLKeyStore  # noqa: PLC0415 (optional extra)
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    try:
        return SQLKeyStore(args.database_url, table_name=args.table, schema=args.schema)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _open_manager(
    args: argparse.Namespace, client_secret_prefix: str = DEFAULT_CLIENT_SECRET_PREFIX
) -> KeyManager:
    """A manager over the SQL store named by the options (no last-used writes)."""
    fmt = key_format(args)
    hasher = hasher_from_environment()
    legacy: list[SecretHasher] = []
    with contextlib.suppress(ImportError):
        legacy.append(PasslibHasher())
    store = _open_store(args)
    try:
        return KeyManager(
            store,
            key_format=fmt,
            hasher=hasher,
            legacy_hashers=legacy,
            last_used=None,
            client_secret_prefix=client_secret_prefix,
        )
    except ValueError:
        store.close()
        raise


def _expect_kind(record: KeyRecord, kind: KeyKind, command: str) -> None:
    """Refuse to work on a record of the other kind, naming the command that does."""
    if record.kind == kind:
        return
    if record.kind == "oauth_client":
        raise CommandError(
            f"{record.key_id} is an OAuth client, not an API key: "
            f"use keyguard clients {command} {record.key_id}"
        )
    raise CommandError(
        f"{record.key_id} is an API key, not an OAuth client: "
        f"use keyguard keys {command} {record.key_id}"
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
        from ..stores.redis_broadcast import RedisRevocationBroadcast  # noqa: PLC0415
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
def db_init(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    store = _open_store(args)
    try:
        store.create_schema()
    finally:
        store.close()
    url = store.url.render_as_string(hide_password=True)
    out.write(f"table {store.table.fullname} is ready in {url}\n")
    return 0


@_store_command
def keys_create(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
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
def keys_list(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    manager = _open_manager(args)
    try:
        records = [r for r in manager.list(args.owner) if r.kind == "api_key"]
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
def keys_show(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    key_id = checked_key_id(args.key_id, key_format(args))
    manager = _open_manager(args)
    try:
        record = manager.get(key_id)
    finally:
        manager.close()
    _expect_kind(record, "api_key", "show")
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
def keys_revoke(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    key_id = checked_key_id(args.key_id, key_format(args))
    manager = _open_manager(args)
    try:
        _expect_kind(manager.get(key_id), "api_key", "revoke")
        record = manager.revoke(key_id)
    finally:
        manager.close()
    if args.json:
        _write_json(out, _record_json(record, SYSTEM_CLOCK.now()))
    else:
        out.write(f"revoked {record.key_id} (revoked at {_when(record.revoked_at)})\n")
    _announce(args, record.key_id, err)
    return 0


@_store_command
def keys_rotate(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    key_id = checked_key_id(args.key_id, key_format(args))
    manager = _open_manager(args)
    try:
        _expect_kind(manager.get(key_id), "api_key", "rotate")
        issued = manager.rotate(key_id, grace=args.grace)
        old = manager.get(key_id)
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
def keys_import(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    key_id = checked_key_id(args.key_id, key_format(args))
    secret_hash = read_token(args.secret_hash, stdin)
    manager = _open_manager(args)
    try:
        expires_at = None if args.expires_in is None else SYSTEM_CLOCK.now() + args.expires_in
        record = manager.import_key(
            key_id,
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
