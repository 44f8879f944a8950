"""Code run in child processes by the multi-process tests (spawned, so importable)."""

from __future__ import annotations

import traceback
from typing import Any

from keyguard import KeyManager
from keyguard.stores import CachedKeyStore
from keyguard.stores.redis_broadcast import RedisRevocationBroadcast
from keyguard.stores.sql import SQLKeyStore


def create_and_revoke(
    url: str, schema: str | None, shared_key_id: str, count: int, barrier: Any, results: Any
) -> None:
    """Create ``count`` keys and revoke ``shared_key_id`` between them, all at once with a twin."""
    store = SQLKeyStore(url, schema=schema)
    try:
        manager = KeyManager(store, last_used=None)
        barrier.wait(timeout=30)
        created, revoked_at = [], []
        for _ in range(count):
            created.append(manager.create("racer").key_id)
            revoked_at.append(manager.revoke(shared_key_id).revoked_at)
        results.put(("ok", created, revoked_at))
    except BaseException:
        results.put(("error", traceback.format_exc(), []))
    finally:
        store.close()


def revoke_and_announce(url: str, redis_url: str, channel: str, key_id: str, results: Any) -> None:
    """Another process: revoke through its own cache, which announces the revocation."""
    broadcast = RedisRevocationBroadcast(redis_url, channel=channel)
    store = CachedKeyStore(SQLKeyStore(url), broadcast=broadcast)
    try:
        KeyManager(store, last_used=None).revoke(key_id)
        results.put(("ok", key_id))
    except BaseException:
        results.put(("error", traceback.format_exc()))
    finally:
        store.close()
