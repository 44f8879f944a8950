"""Two processes creating keys and revoking the same key at once lose nothing, raise nothing."""

from __future__ import annotations

import multiprocessing

import pytest

from keyguard import KeyManager
from keyguard.stores.sql import SQLKeyStore

from . import _workers

KEYS_PER_PROCESS = 25


def race(url: str, schema: str | None) -> None:
    setup = SQLKeyStore(url, schema=schema)
    setup.create_schema()
    shared = KeyManager(setup, last_used=None).create("shared").key_id
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_workers.create_and_revoke,
            args=(url, schema, shared, KEYS_PER_PROCESS, barrier, results),
        )
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    errors = [detail for status, detail, _ in outcomes if status != "ok"]
    assert errors == []
    created = [key_id for _, ids, _ in outcomes for key_id in ids]
    revoked_at = {when for _, _, whens in outcomes for when in whens}

    stored = {r.key_id: r for r in setup.list_keys()}
    assert len(created) == 2 * KEYS_PER_PROCESS
    assert set(created) <= set(stored)
    assert {stored[k].owner for k in created} == {"racer"}
    # Every revoke returned the same, first, revocation time: none overwrote another.
    assert revoked_at == {stored[shared].revoked_at}
    setup.close()


@pytest.mark.slow
def test_two_processes_on_one_sqlite_file(sqlite_url: str) -> None:
    race(sqlite_url, None)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_on_postgres(postgres_url: str, pg_schema: str) -> None:
    race(postgres_url, pg_schema)
