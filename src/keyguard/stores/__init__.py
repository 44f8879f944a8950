"""Key stores: protocols and backends. SQL lives in ``keyguard.stores.sql`` (extra ``sql``)."""

from ._base import AsyncKeyStore, AsyncRevocationBroadcast, KeyStore, RevocationBroadcast
from .cached import CachedKeyStore
from .memory import MemoryKeyStore

__all__ = [
    "AsyncKeyStore",
    "AsyncRevocationBroadcast",
    "CachedKeyStore",
    "KeyStore",
    "MemoryKeyStore",
    "RevocationBroadcast",
]
