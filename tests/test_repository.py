"""The repository's own hygiene: what running the README's commands leaves behind is ignored."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_sqlite_files_of_the_default_key_store_are_ignored(tmp_path: Path) -> None:
    """``keyguard db init`` and the examples make ``keyguard.db`` in the working directory,
    and WAL mode adds ``-wal`` and ``-shm`` files beside it: none may show up in git status."""
    pytest.importorskip("sqlalchemy")
    from keyguard import KeyManager
    from keyguard.stores.sql import SQLKeyStore

    store = SQLKeyStore(f"sqlite:///{tmp_path / 'keyguard.db'}")
    store.create_schema()
    manager = KeyManager(store, last_used=None)
    manager.create("acme")
    made = sorted(p.name for p in tmp_path.iterdir())  # while the connections are open
    manager.close()
    assert {"keyguard.db", "keyguard.db-wal", "keyguard.db-shm"} <= set(made)
    patterns = [
        line.strip()
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name in made:
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} is not in .gitignore"
