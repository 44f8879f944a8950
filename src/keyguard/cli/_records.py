"""The commands that work on the store's records: ``keys ...`` and ``clients ...``.

An OAuth client is a record of the key store like an API key (see
docs/oauth.md), so one set of commands (create, list, show, revoke, rotate)
serves both, each run for a :class:`Kind`. The two differ only where a client
differs from a key:

- A client has a ``client_id`` and a ``client_secret``: its JSON has
  ``client_id`` where a key has ``key_id``, and ``create`` and ``rotate`` print
  its secret (``cs_live_...``) once, as ``client_secret`` with ``--json``
  (a key's as ``token``).
- Each kind's commands work on that kind only: ``keys list`` leaves clients
  out, and ``keys show|revoke|rotate`` given a client_id name the ``clients``
  command to use (and the other way round).
- A token or client secret given where an id belongs is refused without being
  repeated (:func:`~keyguard.cli._tokens.checked_key_id`).

``keys import`` (a key made elsewhere, by its hash) is the keys' own.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from .._clock import SYSTEM_CLOCK
from .._keys import KeyFormat
from .._manager import KeyManager
from .._records import KeyKind, KeyRecord
from ..ratelimit._policy import Policy
from ._command import Command, CommandError, key_format, read_token
from ._store import (
    _announce,
    _open_manager,
    _record_json,
    _store_command,
    _when,
    _write_json,
    _write_table,
)
from ._tokens import checked_key_id

__all__ = [
    "CLIENTS",
    "KEYS",
    "Kind",
    "clients_create",
    "clients_list",
    "clients_revoke",
    "clients_rotate",
    "clients_show",
    "keys_create",
    "keys_import",
    "keys_list",
    "keys_revoke",
    "keys_rotate",
    "keys_show",
]


@dataclass(frozen=True)
class Kind:
    """What the record commands say and do differently for one kind of record."""

    #: The records' kind in the store.
    kind: KeyKind
    #: The word for one record: ``key`` or ``client``.
    noun: str
    #: Its public id's name, in JSON, messages and the command line.
    id_name: str
    #: The name its secret is printed under with ``--json``.
    printed_as: str
    #: Printed on stderr each time a secret is shown.
    once_warning: str
    #: What ``revoke`` prints before the id.
    revoked: str
    #: A second line ``revoke`` prints on stderr, if any.
    revoke_note: str | None = None

    @property
    def is_client(self) -> bool:
        return self.kind == "oauth_client"

    def manager(self, args: argparse.Namespace) -> KeyManager:
        """A manager over the store the options name, with this kind's secret format."""
        if self.is_client:
            return _open_manager(args, args.client_secret_prefix)
        return _open_manager(args)

    def record_id(self, args: argparse.Namespace) -> str:
        """The id given on the command line, refused (unrepeated) when it is a secret."""
        fmt = key_format(args)
        if self.is_client:
            fmt = KeyFormat(prefix=args.client_secret_prefix, environments=fmt.environments)
        return checked_key_id(getattr(args, self.id_name), fmt, client=self.is_client)

    def shown(self, record: KeyRecord, now: datetime) -> dict[str, Any]:
        """A record for scripts: every field but the secret hash, its id first."""
        shown = _record_json(record, now)
        return {self.id_name: shown.pop("key_id"), **shown}

    def expect(self, record: KeyRecord, command: str) -> None:
        """Refuse to work on a record of the other kind, naming the command that does."""
        if record.kind == self.kind:
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


KEYS = Kind(
    kind="api_key",
    noun="key",
    id_name="key_id",
    printed_as="token",
    once_warning=(
        "This is the only time the key is shown: keyguard keeps only its hash and cannot show "
        "it again. Store it now."
    ),
    revoked="revoked",
)

CLIENTS = Kind(
    kind="oauth_client",
    noun="client",
    id_name="client_id",
    printed_as="client_secret",
    once_warning=(
        "This is the only time the client secret is shown: keyguard keeps only its hash and "
        "cannot show it again. Store it now; the client exchanges it at the token endpoint "
        "(POST /oauth/token, grant_type=client_credentials) and never sends it to the API."
    ),
    revoked="revoked client",
    revoke_note=(
        "its secret gets no more tokens; the tokens it has are refused as a revoked key is: "
        "within the apps' lookup cache TTL, or about a second with the Redis broadcast"
    ),
)

_COLUMNS = ("OWNER", "NAME", "ENV", "SCOPES", "CREATED", "EXPIRES", "LAST_USED", "STATUS")

#: A record command, run for one kind.
KindCommand = Callable[[Kind, argparse.Namespace, TextIO, TextIO], int]


def _create(kind: Kind, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manager = kind.manager(args)
    try:
        rate_limit = Policy.parse(args.rate_limit) if args.rate_limit else None
        create = manager.create_client if kind.is_client else manager.create
        issued = create(
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
        shown = kind.shown(issued.record, SYSTEM_CLOCK.now())
        _write_json(out, {kind.printed_as: issued.token, **shown})
    else:
        out.write(f"{issued.token}\n")
        err.write(f"{kind.id_name}: {issued.key_id}\n")
    err.write(kind.once_warning + "\n")
    return 0


def _list(kind: Kind, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    manager = kind.manager(args)
    try:
        records = [r for r in manager.list(args.owner) if r.kind == kind.kind]
    finally:
        manager.close()
    now = SYSTEM_CLOCK.now()
    if args.json:
        _write_json(out, [kind.shown(r, now) for r in records])
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
        _write_table(out, [(kind.id_name.upper(), *_COLUMNS), *rows])
    else:
        err.write(f"no {kind.noun}s\n")
    return 0


def _show(kind: Kind, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    record_id = kind.record_id(args)
    manager = kind.manager(args)
    try:
        record = manager.get(record_id)
    finally:
        manager.close()
    kind.expect(record, "show")
    shown = kind.shown(record, SYSTEM_CLOCK.now())
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


def _revoke(kind: Kind, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    record_id = kind.record_id(args)
    manager = kind.manager(args)
    try:
        kind.expect(manager.get(record_id), "revoke")
        record = manager.revoke(record_id)
    finally:
        manager.close()
    if args.json:
        _write_json(out, kind.shown(record, SYSTEM_CLOCK.now()))
    else:
        out.write(f"{kind.revoked} {record.key_id} (revoked at {_when(record.revoked_at)})\n")
        if kind.revoke_note is not None:
            err.write(kind.revoke_note + "\n")
    _announce(args, record.key_id, err)
    return 0


def _rotate(kind: Kind, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    record_id = kind.record_id(args)
    manager = kind.manager(args)
    try:
        kind.expect(manager.get(record_id), "rotate")
        issued = manager.rotate(record_id, grace=args.grace)
        old = manager.get(record_id)
    finally:
        manager.close()
    now = SYSTEM_CLOCK.now()
    if args.json:
        _write_json(
            out,
            {
                kind.printed_as: issued.token,
                **kind.shown(issued.record, now),
                "replaces": old.key_id,
                f"replaced_{kind.noun}_expires_at": kind.shown(old, now)["expires_at"],
            },
        )
    else:
        out.write(f"{issued.token}\n")
        err.write(
            f"{kind.id_name}: {issued.key_id} replaces {old.key_id}, "
            f"which keeps working until {_when(old.expires_at)}\n"
        )
    err.write(kind.once_warning + "\n")
    _announce(args, old.key_id, err)
    return 0


def _for(kind: Kind, command: KindCommand) -> Command:
    """``command`` for ``kind``, as the parser's handlers are called."""

    def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
        return command(kind, args, out, err)

    return _store_command(run)


keys_create = _for(KEYS, _create)
keys_list = _for(KEYS, _list)
keys_show = _for(KEYS, _show)
keys_revoke = _for(KEYS, _revoke)
keys_rotate = _for(KEYS, _rotate)
clients_create = _for(CLIENTS, _create)
clients_list = _for(CLIENTS, _list)
clients_show = _for(CLIENTS, _show)
clients_revoke = _for(CLIENTS, _revoke)
clients_rotate = _for(CLIENTS, _rotate)


@_store_command
def keys_import(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    key_id = KEYS.record_id(args)
    secret_hash = read_token(args.secret_hash, stdin)
    manager = KEYS.manager(args)
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
        _write_json(out, KEYS.shown(record, SYSTEM_CLOCK.now()))
    else:
        out.write(f"imported {record.key_id}\n")
    return 0
