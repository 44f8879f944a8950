"""SQLKeyStore beyond the contract: schema, URLs, exact values, errors, statement counts."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from keyguard import KeyChanges, KeyManager, StorageError
from keyguard.stores import CachedKeyStore
from keyguard.stores import sql as sql_module
from keyguard.stores.sql import SQLKeyStore, default_database_url, keys_table
from keyguard.testing import FakeClock, sample_record

from .conftest import drop_schema, unique_schema


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StatementCounter:
    """Counts the SQL statements an engine sends (SQLAlchemy's before_cursor_execute)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def _on_execute(self, *args: Any) -> None:
        self.statements.append(args[2])

    def __enter__(self) -> StatementCounter:
        sa.event.listen(self.engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)


@pytest.mark.parametrize(
    ("url", "sync", "async_"),
    [
        pytest.param(
            "sqlite:///keys.db", "sqlite:///keys.db", "sqlite+aiosqlite:///keys.db", id="sqlite"
        ),
        pytest.param(
            "sqlite+pysqlite:////abs/k.db",
            "sqlite+pysqlite:////abs/k.db",
            "sqlite+aiosqlite:////abs/k.db",
            id="sqlite-explicit-driver",
        ),
        pytest.param(
            "postgresql://u@h/db",
            "postgresql+psycopg://u@h/db",
            "postgresql+psycopg://u@h/db",
            id="postgresql-bare",
        ),
        pytest.param(
            "postgresql+psycopg://u@h:5433/db",
            "postgresql+psycopg://u@h:5433/db",
            "postgresql+psycopg://u@h:5433/db",
            id="postgresql-psycopg",
        ),
        pytest.param(
            "postgresql+psycopg2://u@h/db",
            "postgresql+psycopg://u@h/db",
            "postgresql+psycopg://u@h/db",
            id="postgresql-psycopg2-means-psycopg3",
        ),
    ],
)
def test_async_url_is_derived(url: str, sync: str, async_: str) -> None:
    store = SQLKeyStore(url)
    assert store.url.render_as_string() == sync
    assert store.async_url.render_as_string() == async_


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("mysql://u@h/db", "supports SQLite and PostgreSQL", id="other-database"),
        pytest.param("not a url", "not a database URL", id="garbage"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SQLKeyStore(url)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"connect_timeout": 0}, ValueError, id="zero-connect-timeout"),
        pytest.param({"statement_timeout": -1}, ValueError, id="negative-statement-timeout"),
        pytest.param({"pool_timeout": float("inf")}, ValueError, id="endless-pool-wait"),
        pytest.param({"admin_timeout": float("nan")}, ValueError, id="nan-admin-timeout"),
        pytest.param({"statement_timeout": "1"}, TypeError, id="text-timeout"),
        pytest.param({"connect_timeout": True}, TypeError, id="bool-timeout"),
        pytest.param({"circuit": "on"}, TypeError, id="not-a-circuit"),
    ],
)
def test_bad_timeouts_and_circuits_are_refused(
    options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        SQLKeyStore("postgresql://u@h/db", **options)


def test_the_timeouts_default_to_well_under_a_second() -> None:
    store = SQLKeyStore("postgresql://u@h/db")
    assert (store.connect_timeout, store.statement_timeout, store.pool_timeout) == (0.5, 0.5, 0.5)
    assert store.circuit is not None
    assert (store.circuit.failure_threshold, store.circuit.reset_timeout) == (3, 2.0)
    assert SQLKeyStore("postgresql://u@h/db", circuit=False).circuit is None


def test_explicit_async_url_is_kept() -> None:
    store = SQLKeyStore("sqlite:///a.db", async_url="sqlite+aiosqlite:///b.db")
    assert store.async_url.render_as_string() == "sqlite+aiosqlite:///b.db"


def test_repr_hides_the_password() -> None:
    store = SQLKeyStore("postgresql://user:hunter2@db.internal/keys")
    assert "hunter2" not in repr(store)
    assert "db.internal" in repr(store)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, "sqlite:///keyguard.db", id="default"),
        pytest.param({"KEYGUARD_DATABASE_URL": "  "}, "sqlite:///keyguard.db", id="blank"),
        pytest.param(
            {"KEYGUARD_DATABASE_URL": "postgresql://x/y"}, "postgresql://x/y", id="from-env"
        ),
    ],
)
def test_default_database_url(environ: dict[str, str], expected: str) -> None:
    assert default_database_url(environ) == expected


def test_module_metadata_has_the_table_for_alembic() -> None:
    table = sql_module.metadata.tables["keyguard_keys"]
    assert table is sql_module.table
    assert [c.name for c in table.primary_key.columns] == ["key_id"]
    owner_indexes = [ix for ix in table.indexes if [c.name for c in ix.columns] == ["owner"]]
    assert len(owner_indexes) == 1
    assert SQLKeyStore("sqlite:///x.db").table is table


def test_keys_table_in_your_own_metadata(sqlite_url: str) -> None:
    mine = sa.MetaData()
    sa.Table("orders", mine, sa.Column("id", sa.Integer, primary_key=True))
    keys_table(mine, "api_keys")
    engine = sa.create_engine(sqlite_url)
    mine.create_all(engine)  # what a migration tool does with your metadata
    engine.dispose()
    store = SQLKeyStore(sqlite_url, table_name="api_keys")
    record = sample_record()
    store.add(record)
    assert store.get(record.key_id) == record
    assert "ix_api_keys_owner" in {
        ix["name"] for ix in sa.inspect(store.engine).get_indexes("api_keys")
    }
    store.close()


def test_create_schema_is_idempotent_and_uses_wal(sqlite_url: str) -> None:
    store = SQLKeyStore(sqlite_url)
    store.create_schema()
    record = sample_record()
    store.add(record)
    store.create_schema()
    assert store.get(record.key_id) == record
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest) -> SQLKeyStore:
    name = "sqlite_store" if request.param == "sqlite" else "pg_store"
    store: SQLKeyStore = request.getfixturevalue(name)
    return store


def test_datetimes_round_trip_exactly_and_come_back_in_utc(any_store: SQLKeyStore) -> None:
    paris = timezone(timedelta(hours=2))
    created = datetime(2026, 6, 1, 14, 0, 0, 1, tzinfo=paris)
    record = sample_record(
        created_at=created, expires_at=datetime(2027, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)
    )
    any_store.add(record)
    got = any_store.get(record.key_id)
    assert got is not None
    assert got.created_at == created
    assert got.created_at.tzinfo is UTC
    assert got.created_at.microsecond == 1
    assert got.expires_at == record.expires_at


def test_lookup_is_one_statement(any_store: SQLKeyStore) -> None:
    record = sample_record()
    any_store.add(record)
    with StatementCounter(any_store.engine) as counter:
        assert any_store.get(record.key_id) == record
        assert any_store.get("AAAAAAAAAAAA") is None
    assert len(counter.statements) == 2
    assert all("WHERE" in s and "key_id" in s for s in counter.statements)


def test_a_record_with_a_missing_text_field_never_reaches_the_database(
    any_store: SQLKeyStore,
) -> None:
    """PostgreSQL would refuse it quoting the whole row ("Failing row contains ..."),
    secret hash included, in the driver error chained to the StorageError."""
    record = sample_record(name=None)
    with pytest.raises(ValueError, match="name must be a string") as info:
        any_store.add(record)
    assert info.value.__cause__ is None
    assert record.secret_hash not in str(info.value)
    assert any_store.get(record.key_id) is None
    stored = sample_record()
    any_store.add(stored)
    with pytest.raises(ValueError, match="name must be a string"):
        any_store.update(stored.key_id, KeyChanges(name=None))  # type: ignore[arg-type]
    assert any_store.get(stored.key_id) == stored


def test_statement_reprs_leave_out_the_parameters() -> None:
    record = sample_record()
    statement = sql_module._Execute(sa.text("SELECT 1"), sql_module.record_values(record))
    assert record.secret_hash not in repr(statement)


def test_owner_is_indexed_in_the_database(any_store: SQLKeyStore) -> None:
    table = any_store.table
    indexes = sa.inspect(any_store.engine).get_indexes(table.name, schema=table.schema)
    assert [ix["column_names"] for ix in indexes] == [["owner"]]


def test_touch_of_many_keys_is_one_executemany(any_store: SQLKeyStore) -> None:
    records = [sample_record() for _ in range(5)]
    for record in records:
        any_store.add(record)
    when = datetime(2026, 5, 5, tzinfo=UTC)
    with StatementCounter(any_store.engine) as counter:
        any_store.touch({r.key_id: when for r in records})
    assert sum(s.lstrip().upper().startswith("UPDATE") for s in counter.statements) == 1
    assert {r.key_id: r.last_used_at for r in any_store.list_keys()} == {
        r.key_id: when for r in records
    }


def test_a_malformed_row_is_a_storage_error(sqlite_store: SQLKeyStore) -> None:
    record = sample_record()
    sqlite_store.add(record)
    with sqlite_store.engine.begin() as conn:
        conn.execute(
            sa.update(sqlite_store.table).values(rate_limit={"quota": "lots"}),
        )
    with pytest.raises(StorageError, match="malformed"):
        sqlite_store.get(record.key_id)


def test_update_with_no_changes_returns_the_record(sqlite_store: SQLKeyStore) -> None:
    record = sample_record()
    sqlite_store.add(record)
    assert sqlite_store.update(record.key_id, KeyChanges()) == record
    assert sqlite_store.update("AAAAAAAAAAAA", KeyChanges()) is None


# -- driver errors become StorageError, without secrets in the message --------------------


@pytest.fixture(params=["postgres-closed-port", "sqlite-missing-directory"])
def broken_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLKeyStore]:
    if request.param == "postgres-closed-port":
        url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    else:
        url = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'k.db'}"
    store = SQLKeyStore(url)
    yield store
    store.close()


OPERATIONS: list[Any] = [
    pytest.param("get", ("AAAAAAAAAAAA",), id="get"),
    pytest.param("add", (sample_record(secret_hash="sha256$" + "5e" * 32),), id="add"),
    pytest.param("update", ("AAAAAAAAAAAA", KeyChanges(name="x")), id="update"),
    pytest.param("revoke", ("AAAAAAAAAAAA", datetime(2026, 1, 1, tzinfo=UTC)), id="revoke"),
    pytest.param("list_keys", (None,), id="list_keys"),
    pytest.param("touch", ({"AAAAAAAAAAAA": datetime(2026, 1, 1, tzinfo=UTC)},), id="touch"),
    pytest.param("create_schema", (), id="create_schema"),
]


@pytest.mark.parametrize(("method", "args"), OPERATIONS)
def test_driver_errors_become_storage_errors(
    broken_store: SQLKeyStore, method: str, args: tuple[Any, ...]
) -> None:
    with pytest.raises(StorageError) as caught:
        getattr(broken_store, method)(*args)
    assert caught.value.__cause__ is not None
    assert "5e5e5e" not in str(caught.value)
    assert "5e5e5e" not in str(caught.value.__cause__)


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "args"), OPERATIONS)
async def test_async_driver_errors_become_storage_errors(
    broken_store: SQLKeyStore, method: str, args: tuple[Any, ...]
) -> None:
    try:
        with pytest.raises(StorageError) as caught:
            await getattr(broken_store, "a" + method)(*args)
        assert caught.value.__cause__ is not None
        assert "5e5e5e" not in str(caught.value.__cause__)
    finally:
        await broken_store.aclose()
        await join_aiosqlite_workers()


async def join_aiosqlite_workers() -> None:
    """Let aiosqlite's worker threads finish while the event loop still runs.

    After a failed connect, aiosqlite stops its worker thread by queueing a call
    that reports back to the loop; if the test's loop closes first the thread
    raises "Event loop is closed" (omnilib/aiosqlite#241). A long-lived app
    loop never sees this.
    """
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            await anyio.to_thread.run_sync(thread.join, 5.0)


def test_a_failing_store_is_a_503_denial_not_an_exception(broken_store: SQLKeyStore) -> None:
    manager = KeyManager(broken_store)
    token = "sk_live_M65wXtYRmqlf_YvcmInz8IPd6wyHrsvMXo8eaDATs2aRs2o7KnQ"
    denial = manager.authenticate(token)
    assert not denial
    assert denial.reason.value == "store_unavailable"  # type: ignore[union-attr]


# -- PostgreSQL specifics ----------------------------------------------------------------


@pytest.mark.postgres
def test_create_schema_makes_the_postgres_schema(postgres_url: str) -> None:
    schema = unique_schema()
    store = SQLKeyStore(postgres_url, schema=schema, table_name="api_keys")
    try:
        store.create_schema()
        store.create_schema()
        assert "api_keys" in sa.inspect(store.engine).get_table_names(schema=schema)
        record = replace(sample_record(), metadata={"big": 2**40, "ratio": 0.25, "s": "é"})
        store.add(record)
        assert store.get(record.key_id) == record
    finally:
        store.close()
        drop_schema(postgres_url, schema)


def test_warm_cache_request_runs_no_sql(any_store: SQLKeyStore) -> None:
    clock = FakeClock()
    manager = KeyManager(
        CachedKeyStore(any_store, clock=clock.monotonic), clock=clock, last_used=60.0
    )
    issued = manager.create("acme")
    assert manager.authenticate(issued.token)  # cold: one lookup
    # The first use is written by the background writer, which leaves the cached record
    # in place (with its new last_used_at): no re-read.
    deadline = time.monotonic() + 30
    while any_store.get(issued.key_id).last_used_at is None:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the last-used writer did not write"
    with StatementCounter(any_store.engine) as counter:
        for _ in range(20):
            assert manager.authenticate(issued.token)
    assert counter.statements == []
    manager.close()


def test_a_connection_in_use_when_the_store_closes_is_closed_not_left_to_the_gc(
    sqlite_url: str, sqlite_store: SQLKeyStore
) -> None:
    """close() disposes the pool; an operation still running then (another thread's, a
    last-used write at shutdown) must close its connection rather than hand it back to the
    disposed pool, which would leave it open until the garbage collector finds it."""

    record = sample_record()
    sqlite_store.add(record)
    checked_out: list[Any] = []
    sa.event.listen(sqlite_store.engine, "checkout", lambda dbapi, *_: checked_out.append(dbapi))
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the write below waits for this lock
    revoked: list[Any] = []
    writer = threading.Thread(
        target=lambda: revoked.append(sqlite_store.revoke(record.key_id, datetime.now(UTC)))
    )
    writer.start()
    deadline = time.monotonic() + 5
    while not checked_out and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the writer is waiting on the lock, its connection checked out
    sqlite_store.close()
    blocker.execute("ROLLBACK")
    blocker.close()
    writer.join(10)
    assert revoked, "the revoke did not finish"
    assert revoked[0].revoked_at is not None  # the operation itself succeeded
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        checked_out[0].execute("SELECT 1")
