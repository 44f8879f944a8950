from __future__ import annotations

import pytest

from keyguard.stores import AsyncKeyStore, KeyStore, MemoryKeyStore


def test_memory_store_implements_both_protocols() -> None:
    store = MemoryKeyStore()
    assert isinstance(store, KeyStore)
    assert isinstance(store, AsyncKeyStore)


class BrokenStore(MemoryKeyStore):
    """Loses updates: the contract suite must catch it."""

    def update(self, key_id, changes):  # type: ignore[no-untyped-def]
        return self.get(key_id)


def test_contract_catches_a_broken_store() -> None:
    from keyguard._drive import drive_sync
    from keyguard._steps import Backends
    from keyguard.testing import KEY_STORE_CHECKS

    with pytest.raises(AssertionError, match="update"):
        drive_sync(KEY_STORE_CHECKS["update"](), Backends(BrokenStore()))
