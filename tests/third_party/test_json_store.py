"""A JSON-file key store written as a third party would passes keyguard's store contract,
failures included: a corrupt file makes every operation raise StorageError."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyguard.testing import AsyncKeyStoreContract, KeyStoreContract
from tests.third_party.json_store import JsonFileKeyStore


def _corrupt(path: Path) -> JsonFileKeyStore:
    path.write_text('{"half a record": ', encoding="utf-8")
    return JsonFileKeyStore(path)


class TestJsonFileKeyStore(KeyStoreContract, AsyncKeyStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> JsonFileKeyStore:
        return JsonFileKeyStore(tmp_path / "keys.json")

    @pytest.fixture
    def async_store(self, tmp_path: Path) -> JsonFileKeyStore:
        return JsonFileKeyStore(tmp_path / "keys.json")

    @pytest.fixture
    def broken_store(self, tmp_path: Path) -> JsonFileKeyStore:
        return _corrupt(tmp_path / "keys.json")

    @pytest.fixture
    def async_broken_store(self, tmp_path: Path) -> JsonFileKeyStore:
        return _corrupt(tmp_path / "keys.json")
