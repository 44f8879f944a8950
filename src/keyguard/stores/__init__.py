"""Key stores: protocols, backends and the lookup cache.

The SQL store lives in ``keyguard.stores.sql`` (extra ``sql``), the Redis revocation
broadcast in ``keyguard.stores.redis_broadcast`` (extra ``redis``).
"""

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
