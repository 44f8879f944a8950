"""An in-process key store: the embedded default for tests and single-process apps."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Final

from .._errors import DuplicateKeyError
from .._records import KeyChanges, KeyRecord

__all__ = ["MemoryKeyStore"]


class MemoryKeyStore:
    """Keeps records in a dict, guarded by a lock. Implements ``KeyStore`` and ``AsyncKeyStore``.

    Nothing survives the process: use :class:`~keyguard.stores.sql.SQLKeyStore`
    (SQLite by default) for keys that must outlive a restart.
    """

    #: No I/O: an async caller may call the sync methods directly (``NonBlocking``).
    nonblocking: Final = True

    def __init__(self, records: Sequence[KeyRecord] = ()) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._lock = threading.Lock()
        for record in records:
            self.add(record)

    def __repr__(self) -> str:
        return f"MemoryKeyStore(keys={len(self._records)})"

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    def add(self, record: KeyRecord) -> None:
        with self._lock:
            if record.key_id in self._records:
                raise DuplicateKeyError(f"a key with key_id {record.key_id!r} exists already")
            self._records[record.key_id] = record

    def update(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        with self._lock:
            record = self._records.get(key_id)
            if record is None:
                return None
            record = self._records[key_id] = changes.apply(record)
            return record

    def revoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        with self._lock:
            record = self._records.get(key_id)
            if record is None or record.revoked_at is not None:
                return record
            record = self._records[key_id] = replace(record, revoked_at=at)
            return record

    def list_keys(self, owner: str | None = None) -> list[KeyRecord]:
        with self._lock:
            records = list(self._records.values())
        if owner is not None:
            records = [r for r in records if r.owner == owner]
        return records

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        with self._lock:
            for key_id, when in last_used.items():
                record = self._records.get(key_id)
                if record is not None and (
                    record.last_used_at is None or record.last_used_at < when
                ):
                    self._records[key_id] = replace(record, last_used_at=when)

    def close(self) -> None:
        """Nothing to release."""

    async def aget(self, key_id: str) -> KeyRecord | None:
        return self.get(key_id)

    async def aadd(self, record: KeyRecord) -> None:
        self.add(record)

    async def aupdate(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        return self.update(key_id, changes)

    async def arevoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        return self.revoke(key_id, at)

    async def alist_keys(self, owner: str | None = None) -> list[KeyRecord]:
        return self.list_keys(owner)

    async def atouch(self, last_used: Mapping[str, datetime]) -> None:
        self.touch(last_used)

    async def aclose(self) -> None:
        """Nothing to release."""
