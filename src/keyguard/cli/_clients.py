"""The commands that work on OAuth clients: ``clients create|list|show|revoke|rotate``.

A client is a record of the key store like an API key (see docs/oauth.md), so
these commands open the same store as the ``keys`` commands (``--database-url``)
and announce a revocation on the same Redis broadcast (``--redis-url``). They
differ where a client differs:

- They speak of a ``client_id`` and a ``client_secret``: the JSON has
  ``client_id`` where a key has ``key_id``, and ``create`` and ``rotate`` print
  the secret (``cs_live_...``) once, as ``client_secret`` with ``--json``.
- They work on clients only: an API key's key_id is refused, naming the
  ``keys`` command to use; ``keys`` commands do the same for a client_id.
- A client secret given where a client_id belongs is refused without being
  repeated (:func:`~keyguard.cli._tokens.checked_key_id`).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any, TextIO

from .._clock import SYSTEM_CLOCK
from .._keys import KeyFormat
from .._records import KeyRecord
from ..ratelimit._policy import Policy
from ._command import key_format
from ._store import (
    _announce,
    _expect_kind,
    _open_manager,
    _record_json,
    _store_command,
    _when,
    _write_json,
    _write_table,
)
from ._tokens import checked_key_id

__all__ = [
    "clients_create",
    "clients_list",
    "clients_revoke",
    "clients_rotate",
    "clients_show",
]

_ONCE_WARNING = (
    "This is the only time the client secret is shown: keyguard keeps only its hash and "
    "cannot show it again. Store it now; the client exchanges it at the token endpoint "
    "(POST /oauth/token, grant_type=client_credentials) and never sends it to the API."
)

_LIST_COLUMNS = (
    "CLIENT_ID",
    "OWNER",
    "NAME",
    "ENV",
    "SCOPES",
    "CREATED",
    "EXPIRES",
    "LAST_USED",
    "STATUS",
)


def _client_json(record: KeyRecord, now: datetime) -> dict[str, Any]:
    """A client for scripts: every field but the secret hash, ``client_id`` first."""
    shown = _record_json(record, now)
    return {"client_id": shown.pop("key_id"), **shown}


def _client_id(args: argparse.Namespace) -> str:
    fmt = key_format(args)
    secrets = KeyFormat(prefix=args.client_secret_prefix, environments=fmt.environments)
    return checked_key_id(args.client_id, secrets, client=True)


@_store_command
def clients_create(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    manager = _open_manager(args, args.client_secret_prefix)
    try:
        rate_limit = Policy.parse(args.rate_limit) if args.rate_limit else None
        issued = manager.create_client(
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
        record = _client_json(issued.record, SYSTEM_CLOCK.now())
        _write_json(out, {"client_secret": issued.token, **record})
    else:
        out.write(f"{issued.token}\n")
        err.write(f"client_id: {issued.key_id}\n")
    err.write(_ONCE_WARNING + "\n")
    return 0


@_store_command
def clients_list(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    manager = _open_manager(args, args.client_secret_prefix)
    try:
        records = [r for r in manager.list(args.owner) if r.kind == "oauth_client"]
    finally:
        manager.close()
    now = SYSTEM_CLOCK.now()
    if args.json:
        _write_json(out, [_client_json(r, now) for r in records])
    elif records:
        rows = [
            (
                r.key_id,
                r.owner,
                r.name or "-",
                r.environment,
                ",".join(sorted(r.scopes)) or "-",
                _when(r.created_at),
                _when(r.expires_at),
                _when(r.last_used_at),
                r.status(now),
            )
            for r in records
        ]
        _write_table(out, [_LIST_COLUMNS, *rows])
    else:
        err.write("no clients\n")
    return 0


@_store_command
def clients_show(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    client_id = _client_id(args)
    manager = _open_manager(args, args.client_secret_prefix)
    try:
        record = manager.get(client_id)
    finally:
        manager.close()
    _expect_kind(record, "oauth_client", "show")
    shown = _client_json(record, SYSTEM_CLOCK.now())
    if args.json:
        _write_json(out, shown)
        return 0
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
def clients_revoke(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    client_id = _client_id(args)
    manager = _open_manager(args, args.client_secret_prefix)
    try:
        _expect_kind(manager.get(client_id), "oauth_client", "revoke")
        record = manager.revoke(client_id)
    finally:
        manager.close()
    if args.json:
        _write_json(out, _client_json(record, SYSTEM_CLOCK.now()))
    else:
        out.write(f"revoked client {record.key_id} (revoked at {_when(record.revoked_at)})\n")
        err.write(
            "its secret gets no more tokens; the tokens it has are refused as a revoked key "
            "is: within the apps' lookup cache TTL, or about a second with the Redis broadcast\n"
        )
    _announce(args, record.key_id, err)
    return 0


@_store_command
def clients_rotate(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    client_id = _client_id(args)
    manager = _open_manager(args, args.client_secret_prefix)
    try:
        _expect_kind(manager.get(client_id), "oauth_client", "rotate")
        issued = manager.rotate(client_id, grace=args.grace)
        old = manager.get(client_id)
    finally:
        manager.close()
    now = SYSTEM_CLOCK.now()
    if args.json:
        _write_json(
            out,
            {
                "client_secret": issued.token,
                **_client_json(issued.record, now),
                "replaces": old.key_id,
                "replaced_client_expires_at": _client_json(old, now)["expires_at"],
            },
        )
    else:
        out.write(f"{issued.token}\n")
        err.write(
            f"client_id: {issued.key_id} replaces {old.key_id}, "
            f"which keeps working until {_when(old.expires_at)}\n"
        )
    err.write(_ONCE_WARNING + "\n")
    _announce(args, old.key_id, err)
    return 0
