"""Key stores: protocols and backends. SQL lives in ``keyguard.stores.sql`` (extra ``sql``)."""

from ._base import AsyncKeyStore, KeyStore
from .memory import MemoryKeyStore

__all__ = ["AsyncKeyStore", "KeyStore", "MemoryKeyStore"]
