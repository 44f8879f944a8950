"""A key store in one JSON file: an example of the KeyStore and AsyncKeyStore protocols.

Written from keyguard's public API only, as a third party would. Every operation reads
the file, and a write replaces it atomically (a temporary file, then ``os.replace``),
under a lock that serialises this process's operations; the file is not meant to be
shared between processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keyguard import DuplicateKeyError, KeyChanges, KeyRecord, StorageError
from keyguard.ratelimit import Policy

_NEVER = datetime.min.replace(tzinfo=UTC)
_TIMES = ("created_at", "expires_at", "revoked_at", "last_used_at")


def _to_json(record: KeyRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "key_id": record.key_id,
        "owner": record.owner,
        "name": record.name,
        "environment": record.environment,
        "secret_hash": record.secret_hash,
        "scopes": sorted(record.scopes),
        "metadata": dict(record.metadata),
        "replaced_by": record.replaced_by,
        "rate_limit": None,
    }
    for name in _TIMES:
        value = getattr(record, name)
        # ISO 8601 with its offset: the instant survives, whatever the zone it was given in.
        fields[name] = None if value is None else value.isoformat()
    policy = record.rate_limit
    if policy is not None:
        fields["rate_limit"] = {
            "name": policy.name,
            "quota": policy.quota,
            "window": policy.window,
            "burst": policy.burst,
        }
    return fields


def _from_json(fields: dict[str, Any]) -> KeyRecord:
    times = {
        name: None if fields[name] is None else datetime.fromisoformat(fields[name])
        for name in _TIMES
    }
    policy = fields["rate_limit"]
    return KeyRecord(
        key_id=fields["key_id"],
        owner=fields["owner"],
        name=fields["name"],
        environment=fields["environment"],
        secret_hash=fields["secret_hash"],
        scopes=frozenset(fields["scopes"]),
        metadata=fields["metadata"],
        replaced_by=fields["replaced_by"],
        rate_limit=None if policy is None else Policy(**policy),
        **times,
    )


class JsonFileKeyStore:
    """Every record in one JSON file, keyed by key_id.

    Args:
        path: The file; it is created on the first write.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonFileKeyStore({str(self._path)!r})"

    @contextlib.contextmanager
    def _records(self, *, write: bool) -> Iterator[dict[str, KeyRecord]]:
        """The records, under the lock; written back after the block when ``write``.

        What the file system refuses, or a file that is not this store's JSON, is a
        StorageError naming the operation's kind, never a record (a secret hash)."""
        with self._lock:
            try:
                try:
                    text = self._path.read_text(encoding="utf-8")
                except FileNotFoundError:
                    text = "{}"
                records = {key_id: _from_json(f) for key_id, f in json.loads(text).items()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise self._error("read", exc) from exc
            yield records  # what the operation raises (DuplicateKeyError) passes as it is
            if not write:
                return
            try:
                temporary = self._path.with_name(self._path.name + ".tmp")
                data = {key_id: _to_json(r) for key_id, r in records.items()}
                temporary.write_text(json.dumps(data), encoding="utf-8")
                os.replace(temporary, self._path)
            except (OSError, ValueError, TypeError) as exc:
                raise self._error("write", exc) from exc

    def _error(self, what: str, exc: Exception) -> StorageError:
        return StorageError(
            f"JSON key store {self._path.name}: {what} failed ({type(exc).__name__})"
        )

    def get(self, key_id: str) -> KeyRecord | None:
        with self._records(write=False) as records:
            return records.get(key_id)

    def add(self, record: KeyRecord) -> None:
        with self._records(write=True) as records:
            if record.key_id in records:
                raise DuplicateKeyError(f"a key with key_id {record.key_id!r} exists already")
            records[record.key_id] = record

    def update(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        with self._records(write=True) as records:
            record = records.get(key_id)
            if record is not None:
                record = records[key_id] = changes.apply(record)
            return record

    def revoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        with self._records(write=True) as records:
            record = records.get(key_id)
            if record is not None and record.revoked_at is None:
                record = records[key_id] = replace(record, revoked_at=at)
            return record  # revoking again keeps the first time

    def list_keys(self, owner: str | None = None) -> list[KeyRecord]:
        with self._records(write=False) as records:
            found = [r for r in records.values() if owner is None or r.owner == owner]
        return sorted(found, key=lambda r: r.created_at or _NEVER)  # by instant, oldest first

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        with self._records(write=True) as records:
            for key_id, when in last_used.items():
                record = records.get(key_id)
                if record is not None and (
                    record.last_used_at is None or record.last_used_at < when
                ):
                    records[key_id] = replace(record, last_used_at=when)

    def close(self) -> None:
        """Nothing stays open between operations."""

    # The async flavour: the same operations in a worker thread, off the event loop.

    async def aget(self, key_id: str) -> KeyRecord | None:
        return await asyncio.to_thread(self.get, key_id)

    async def aadd(self, record: KeyRecord) -> None:
        await asyncio.to_thread(self.add, record)

    async def aupdate(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        return await asyncio.to_thread(self.update, key_id, changes)

    async def arevoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        return await asyncio.to_thread(self.revoke, key_id, at)

    async def alist_keys(self, owner: str | None = None) -> list[KeyRecord]:
        return await asyncio.to_thread(self.list_keys, owner)

    async def atouch(self, last_used: Mapping[str, datetime]) -> None:
        await asyncio.to_thread(self.touch, last_used)

    async def aclose(self) -> None:
        """Nothing stays open between operations."""
