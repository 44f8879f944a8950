"""The key store behind the store commands: ``db init``, and what ``_records`` uses.

The commands open the SQL store named by ``--database-url`` (default
``$KEYGUARD_DATABASE_URL`` or the SQLite file ``keyguard.db``), turn what it
refuses into one line (:func:`_store_command`), and announce a revocation or
rotation on the Redis revocation broadcast when ``--redis-url`` or
``$KEYGUARD_REDIS_URL`` is set (:func:`_announce`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import StorageError
from .._hashing import PasslibHasher, SecretHasher
from .._manager import DEFAULT_CLIENT_SECRET_PREFIX, KeyManager
from .._records import KeyRecord
from ._command import Command, CommandError, hasher_from_environment, key_format

if TYPE_CHECKING:
    from ..stores.sql import SQLKeyStore

__all__ = ["db_init"]


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


def _write_table(out: TextIO, rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


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
