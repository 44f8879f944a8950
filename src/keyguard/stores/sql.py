"""A key store on SQL databases: SQLite (the embedded default) and PostgreSQL.

Install with ``pip install 'keyguard-auth[sql]'`` (SQLAlchemy 2 Core, psycopg 3,
aiosqlite). The table (``keyguard_keys``, see ``_sql_schema.py``) lives in
the module-level :data:`metadata` (for Alembic's ``target_metadata``), and
:func:`keys_table` adds it, under any name and schema, to a ``MetaData`` of
your own. :meth:`SQLKeyStore.create_schema` is the quick path for apps that
do not run migrations.

Each operation is written once, as a flow of :class:`_Execute` steps (one
statement and its parameters each), and driven by keyguard's one pair of
drivers: :func:`~keyguard._drive.drive_sync` on a ``Connection``,
:func:`~keyguard._drive.drive_async` on an ``AsyncConnection``.

Every driver error surfaces as :class:`~keyguard.StorageError` with the driver
error chained; statement parameters (which include secret hashes) are kept out
of messages and logs (SQLAlchemy's ``hide_parameters``). Every call to
PostgreSQL is bounded: the wait for a pooled connection (``pool_timeout``),
connecting (``connect_timeout``) and each operation (``statement_timeout``),
and a :class:`~keyguard.CircuitBreaker` stops calling a server that keeps
failing (see ``docs/stores.md``).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any, Final, TypeVar

from .._circuit import CircuitBreaker
from .._drive import Flow, Step, drive_async, drive_sync
from .._errors import DuplicateKeyError, StorageError
from .._records import KeyChanges, KeyRecord
from ._sql_deadline import Alarm, Watchdog, connect_within, pg_socket
from ._sql_schema import (
    DEFAULT_TABLE_NAME,
    UTCDateTime,
    check_text,
    encode,
    keys_table,
    metadata,
    record_from_row,
    record_values,
    table,
)

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import Connection, Dialect, Engine, make_url
    from sqlalchemy.engine.url import URL
    from sqlalchemy.sql.expression import Executable
except ImportError as exc:  # pragma: no cover (the extra is installed in tests)
    raise ImportError(
        "keyguard.stores.sql needs SQLAlchemy: pip install 'keyguard-auth[sql]'"
    ) from exc

__all__ = [
    "DEFAULT_ADMIN_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_STATEMENT_TIMEOUT",
    "DEFAULT_TABLE_NAME",
    "SQLKeyStore",
    "UTCDateTime",
    "default_database_url",
    "keys_table",
    "metadata",
    "table",
]

#: The embedded default: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///keyguard.db"
#: Seconds a new PostgreSQL connection may take (TCP, TLS, authentication).
DEFAULT_CONNECT_TIMEOUT: Final = 0.5
#: Seconds one operation on PostgreSQL (a lookup, a write, a batch of last-used
#: times) may take on its connection, commit included.
DEFAULT_STATEMENT_TIMEOUT: Final = 0.5
#: Seconds a call may wait for a free connection of the pool.
DEFAULT_POOL_TIMEOUT: Final = 0.5
#: Seconds ``list_keys`` and ``create_schema`` may take: they are not on the
#: request path, and a long list may take longer than a lookup.
DEFAULT_ADMIN_TIMEOUT: Final = 30.0
#: Where the alarm of a connection's first use (SQLAlchemy's dialect set-up) is kept.
_SETUP_ALARM: Final = "keyguard_setup_alarm"

T = TypeVar("T")

#: What a statement answers: its rows (none for a write without RETURNING).
Rows = Sequence[sa.Row[Any]]


def default_database_url(environ: Mapping[str, str] | None = None) -> str:
    """``$KEYGUARD_DATABASE_URL`` when set, else ``sqlite:///keyguard.db``."""
    env = os.environ if environ is None else environ
    return env.get("KEYGUARD_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL


def _derive_urls(url: str, async_url: str | None) -> tuple[URL, URL]:
    """The sync and async URLs: a bare ``postgresql://`` means psycopg 3 for both."""
    try:
        sync = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise ValueError(
            f"not a database URL: {exc}; use e.g. sqlite:///keyguard.db or "
            f"postgresql://user@host/db"
        ) from None
    backend = sync.get_backend_name()
    if backend == "postgresql" and ("+" not in sync.drivername or "psycopg2" in sync.drivername):
        sync = sync.set(drivername="postgresql+psycopg")
    if async_url is not None:
        return sync, make_url(async_url)
    if backend == "sqlite":
        return sync, sync.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return sync, sync.set(drivername="postgresql+psycopg")
    raise ValueError(
        f"keyguard's SQL store supports SQLite and PostgreSQL, not {backend!r}; "
        f"for another database pass async_url= explicitly and run the contract suite"
    )


class _Execute(Step[Rows]):
    """Run one statement on the flow's connection; answer its rows."""

    __slots__ = ("params", "statement")

    def __init__(self, statement: Executable, params: Any = None) -> None:
        self.statement = statement
        self.params = params  # may hold a secret hash: never in the repr

    def __repr__(self) -> str:
        return f"_Execute({type(self.statement).__name__})"

    def run(self, io: Connection) -> Rows:
        result = io.execute(self.statement, self.params)
        return result.all() if result.returns_rows else []

    async def arun(self, io: Any) -> Rows:
        result = await io.execute(self.statement, self.params)
        return result.all() if result.returns_rows else []


def _reading(engine: Any) -> Any:
    """The engine for reads: on PostgreSQL in autocommit, which saves the BEGIN and
    ROLLBACK round trips around each lookup (one statement needs no transaction)."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def _is_unique_violation(exc: BaseException | None) -> bool:
    if not isinstance(exc, sa_exc.IntegrityError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return bool(sqlstate == "23505")
    return "UNIQUE" in str(orig).upper()


def _is_outage(exc: BaseException) -> bool:
    """Whether a driver error says the database is unreachable, hung or broke the
    connection (what opens the circuit), rather than that it answered with an error."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)


def _in_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return float(value)


class SQLKeyStore:
    """A durable key store on SQLAlchemy 2 Core. Implements ``KeyStore`` and ``AsyncKeyStore``.

    The sync methods use an engine for ``url``; the ``a``-prefixed ones an
    async engine for ``async_url`` (by default the same database through
    aiosqlite or psycopg 3), made on first use. Each lookup is one query on the
    primary key; each write is one statement (``UPDATE ... RETURNING``), so
    concurrent revokes and updates of different fields never undo each other.

    On PostgreSQL no call waits without bound, even on a server that hangs:
    at most ``pool_timeout`` for a pooled connection, ``connect_timeout`` for
    a new one, and ``statement_timeout`` for the operation itself (a lookup,
    a write, a batch of last-used times; ``admin_timeout`` for
    :meth:`list_keys` and :meth:`create_schema`). A call past its deadline has
    its connection cut and fails with :class:`~keyguard.StorageError`. After
    ``circuit.failure_threshold`` failures in a row, calls fail at once with
    :class:`~keyguard.CircuitOpenError` until a probe finds the server back.
    The deadlines of operations are kept by one watchdog thread per store,
    started on first use and stopped by :meth:`close` / :meth:`aclose`.

    SQLite is for one machine: it serves many processes on one file, writes
    one at a time (waiting up to 5 s for the lock), and :meth:`create_schema`
    switches the file to WAL so that readers never wait for a writer. An
    in-memory SQLite URL gives every connection its own empty database: use a
    file. PostgreSQL is for everything else.

    Args:
        url: SQLAlchemy URL (default: :func:`default_database_url`).
            ``postgresql://`` uses psycopg 3.
        async_url: URL of the async engine, when it cannot be derived.
        table_name: Name of the keys table.
        schema: PostgreSQL schema of the table.
        connect_timeout: Seconds a new PostgreSQL connection may take (0.5).
        statement_timeout: Seconds one PostgreSQL operation may take on its
            connection (0.5).
        pool_timeout: Seconds a call waits for a free pooled connection (0.5),
            on PostgreSQL and SQLite files alike.
        admin_timeout: Seconds :meth:`list_keys` and :meth:`create_schema`
            may take on PostgreSQL (30).
        circuit: The :class:`~keyguard.CircuitBreaker` of this store; True (the
            default) for one with its defaults (3 failures in a row open it
            for 2 s), False for none.
        engine_options: Extra ``create_engine`` keyword arguments (pool sizes, ...).
        async_engine_options: Extra ``create_async_engine`` keyword arguments.

    Raises:
        TypeError: A timeout is not a number, or ``circuit`` not a breaker or a bool.
        ValueError: The URL is not one this store can use, or a timeout is not
            a positive, finite number of seconds.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        async_url: str | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        admin_timeout: float = DEFAULT_ADMIN_TIMEOUT,
        circuit: CircuitBreaker | bool = True,
        engine_options: Mapping[str, Any] | None = None,
        async_engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url, self.async_url = _derive_urls(url or default_database_url(), async_url)
        if table_name == DEFAULT_TABLE_NAME and schema is None:
            self.metadata, self.table = metadata, table
        else:
            self.metadata = sa.MetaData()
            self.table = keys_table(self.metadata, table_name, schema=schema)
        self.schema = schema
        self.connect_timeout = _positive("connect_timeout", connect_timeout)
        self.statement_timeout = _positive("statement_timeout", statement_timeout)
        self.pool_timeout = _positive("pool_timeout", pool_timeout)
        self.admin_timeout = _positive("admin_timeout", admin_timeout)
        if circuit is True:
            circuit = CircuitBreaker(name="SQL key store")
        elif circuit is not False and not isinstance(circuit, CircuitBreaker):
            raise TypeError(f"circuit must be a CircuitBreaker, True or False, got {circuit!r}")
        self.circuit: CircuitBreaker | None = circuit or None
        self._engine_options = self._options(self.url, engine_options)
        self._async_engine_options = self._options(self.async_url, async_engine_options)
        self._engine: Engine | None = None
        self._reader: Engine | None = None
        self._async_engine: Any = None
        self._async_reader: Any = None
        self._engine_lock = threading.Lock()
        #: How many times close() or aclose() ran: an operation that sees it change was
        #: running when its engine was disposed, and closes its connection itself.
        self._closings = 0
        self._watchdog = Watchdog()
        self._build_statements()

    def _options(self, url: URL, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        options: dict[str, Any] = {"hide_parameters": True}
        if not _in_memory(url):
            options["pool_timeout"] = self.pool_timeout
        if url.get_backend_name() == "postgresql":
            # libpq counts whole seconds from 2; the store's own deadline is the shorter one,
            # and this one ends a connect that the store gave up on.
            libpq_timeout = max(2, math.ceil(self.connect_timeout))
            options["connect_args"] = {"connect_timeout": libpq_timeout}
        options.update(extra or {})
        return options

    def _build_statements(self) -> None:
        t = self.table
        self._select_one = sa.select(t).where(t.c.key_id == sa.bindparam("p_key_id"))
        self._insert = sa.insert(t)
        self._revoke = (
            sa.update(t)
            .where(t.c.key_id == sa.bindparam("p_key_id"))
            .values(
                revoked_at=sa.func.coalesce(t.c.revoked_at, sa.bindparam("p_at", type_=UTCDateTime))
            )
        )
        self._touch = (
            sa.update(t)
            .where(t.c.key_id == sa.bindparam("p_key_id"))
            .where(
                sa.or_(
                    t.c.last_used_at.is_(None),
                    t.c.last_used_at < sa.bindparam("p_when", type_=UTCDateTime),
                )
            )
            .values(last_used_at=sa.bindparam("p_when", type_=UTCDateTime))
        )

    def __repr__(self) -> str:
        return (
            f"SQLKeyStore(url={self.url.render_as_string(hide_password=True)!r}, "
            f"table={self.table.fullname!r})"
        )

    # -- engines --------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The sync engine, made on first use."""
        with self._engine_lock:
            if self._engine is None:
                engine = sa.create_engine(self.url, **self._engine_options)
                if engine.dialect.name == "postgresql":
                    sa.event.listen(engine, "do_connect", self._connect_within)
                    self._guard_setup(engine.pool)
                self._engine = engine
            return self._engine

    @property
    def _read_engine(self) -> Engine:
        reader = self._reader
        if reader is None:
            reader = self._reader = _reading(self.engine)
        return reader

    @property
    def _async_read_engine(self) -> Any:
        if self._async_reader is None:
            self._async_reader = _reading(self.async_engine)
        return self._async_reader

    @property
    def async_engine(self) -> Any:
        """The async engine (``sqlalchemy.ext.asyncio.AsyncEngine``), made on first use."""
        with self._engine_lock:
            if self._async_engine is None:
                from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415 (lazy)

                options = dict(self._async_engine_options)
                postgres = self.async_url.get_backend_name() == "postgresql"
                if postgres and "psycopg" in self.async_url.drivername:
                    options.setdefault("async_creator", self._aconnect_within)
                self._async_engine = create_async_engine(self.async_url, **options)
                if postgres:
                    self._guard_setup(self._async_engine.sync_engine.pool)
            return self._async_engine

    def _connect_within(self, dialect: Dialect, record: Any, cargs: Any, cparams: Any) -> Any:
        """SQLAlchemy's ``do_connect``: a sync PostgreSQL connection within ``connect_timeout``."""

        def connect() -> Any:
            return dialect.connect(*cargs, **cparams)

        try:
            return connect_within(connect, self.connect_timeout, _close_quietly)
        except TimeoutError as exc:
            raise _connect_timeout_error(self.connect_timeout) from exc

    async def _aconnect_within(self) -> Any:
        """The async engine's ``async_creator``: psycopg's connect under ``asyncio.timeout``,
        which ends it promptly (unlike a cancelled query)."""
        import psycopg  # noqa: PLC0415 (the async engine's driver, imported by SQLAlchemy too)

        engine = self._async_engine
        cargs, cparams = engine.sync_engine.dialect.create_connect_args(self.async_url)
        cparams.update(self._async_engine_options.get("connect_args", {}))
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await psycopg.AsyncConnection.connect(*cargs, **cparams)
        except TimeoutError as exc:
            raise _connect_timeout_error(self.connect_timeout) from exc

    def _guard_setup(self, pool: Any) -> None:
        """Bound SQLAlchemy's set-up queries on a pool's first connection (its
        ``first_connect`` event) by ``statement_timeout``, like any operation."""

        def arm(dbapi_connection: Any, record: Any) -> None:
            driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
            fileno = pg_socket(driver)
            if fileno is not None:
                record.info[_SETUP_ALARM] = self._watchdog.arm(fileno, self.statement_timeout)

        def disarm(dbapi_connection: Any, record: Any) -> None:
            alarm = record.info.pop(_SETUP_ALARM, None)
            if alarm is not None:
                self._watchdog.disarm(alarm)

        sa.event.listen(pool, "first_connect", arm, insert=True)
        sa.event.listen(pool, "connect", disarm)

    def _arm(self, pooled: Any, timeout: float) -> Alarm | None:
        fileno = pg_socket(pooled.driver_connection)
        return None if fileno is None else self._watchdog.arm(fileno, timeout)

    # -- the operations, written once as statement flows -------------------------------

    def _get_flow(self, key_id: str) -> Flow[KeyRecord | None]:
        rows = yield from _Execute(self._select_one, {"p_key_id": key_id})
        return record_from_row(rows[0]) if rows else None

    def _add_flow(self, record: KeyRecord) -> Flow[None]:
        values = record_values(record)
        try:
            yield from _Execute(self._insert, values)
        except StorageError as exc:
            if _is_unique_violation(exc.__cause__):
                raise DuplicateKeyError(
                    f"a key with key_id {record.key_id!r} exists already"
                ) from exc.__cause__
            raise

    def _returning(self, statement: sa.Update, dialect: Dialect) -> sa.Update:
        if dialect.update_returning:
            return statement.returning(*self.table.c)
        return statement

    def _update_flow(
        self, key_id: str, changes: KeyChanges, dialect: Dialect
    ) -> Flow[KeyRecord | None]:
        values = check_text({name: encode(name, value) for name, value in changes.items()})
        if not values:
            return (yield from self._get_flow(key_id))
        statement = sa.update(self.table).where(self.table.c.key_id == key_id).values(**values)
        rows = yield from _Execute(self._returning(statement, dialect))
        if not dialect.update_returning:
            return (yield from self._get_flow(key_id))
        return record_from_row(rows[0]) if rows else None

    def _revoke_flow(self, key_id: str, at: datetime, dialect: Dialect) -> Flow[KeyRecord | None]:
        # COALESCE keeps the first revocation time, atomically, however many race.
        rows = yield from _Execute(
            self._returning(self._revoke, dialect), {"p_key_id": key_id, "p_at": at}
        )
        if not dialect.update_returning:
            return (yield from self._get_flow(key_id))
        return record_from_row(rows[0]) if rows else None

    def _list_flow(self, owner: str | None) -> Flow[list[KeyRecord]]:
        t = self.table
        statement = sa.select(t).order_by(t.c.created_at.asc().nulls_first(), t.c.key_id)
        if owner is not None:
            statement = statement.where(t.c.owner == owner)
        rows = yield from _Execute(statement)
        return [record_from_row(row) for row in rows]

    def _touch_flow(self, last_used: Mapping[str, datetime]) -> Flow[None]:
        if not last_used:
            return
        # Sorted, so that two batches lock rows in the same order and never deadlock.
        params = [{"p_key_id": k, "p_when": last_used[k]} for k in sorted(last_used)]
        yield from _Execute(self._touch, params)

    # -- failures and the circuit -----------------------------------------------------------

    def _error(self, operation: str, exc: BaseException) -> StorageError:
        cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        detail = f"{type(cause).__name__}: {first_line}" if first_line else type(cause).__name__
        error = StorageError(f"SQL key store: {operation} failed ({detail})")
        error.__cause__ = exc
        return error

    def _failure(self, operation: str, exc: Exception) -> Exception:
        """The error a caller gets: a driver error (raised, or wrapped by the driver of
        the flow) as a one-line StorageError; keyguard's own errors as they are."""
        if isinstance(exc, sa_exc.SQLAlchemyError):
            return self._error(operation, exc)
        if type(exc) is StorageError and isinstance(exc.__cause__, sa_exc.SQLAlchemyError):
            return self._error(operation, exc.__cause__)
        return exc

    def _admit(self) -> bool:
        return False if self.circuit is None else self.circuit.admit()

    def _report(self, probe: bool, failure: Exception | None) -> None:
        """Tell the circuit what a call proved about the database."""
        circuit = self.circuit
        if circuit is None:
            return
        if failure is None:
            circuit.succeeded(probe)
            return
        cause = failure if isinstance(failure, sa_exc.SQLAlchemyError) else failure.__cause__
        if isinstance(cause, sa_exc.TimeoutError):  # the pool was busy: waiting, not an outage
            circuit.abandoned(probe)
        elif isinstance(cause, sa_exc.SQLAlchemyError):
            if _is_outage(cause):
                circuit.failed(probe)
            else:  # the database answered, with an error (a duplicate key, a missing table)
                circuit.succeeded(probe)
        else:
            circuit.abandoned(probe)

    # -- sync ---------------------------------------------------------------------------

    @contextmanager
    def _accounted(self, operation: str) -> Iterator[None]:
        """One operation for the circuit: admitted (or refused while it is open), and
        reported as what it proved about the database; a driver error leaves it as a
        one-line :class:`StorageError`."""
        probe = self._admit()
        try:
            yield
        except Exception as exc:
            failure = self._failure(operation, exc)
            self._report(probe, failure)
            if failure is exc:
                raise
            raise failure from failure.__cause__
        except BaseException:  # interrupted or cancelled: proves nothing about the database
            if self.circuit is not None:
                self.circuit.abandoned(probe)
            raise
        self._report(probe, None)

    def _spent(self, alarm: Alarm | None, closings: int) -> bool:
        """Whether the connection of an operation that began at ``closings`` must not go
        back to a pool: cut at its deadline, or its engine was disposed meanwhile (the
        pool it would go back to is gone, and would leave it for the garbage collector)."""
        cut = alarm is not None and self._watchdog.disarm(alarm)
        return cut or self._closings != closings

    def _run(self, operation: str, flow: Flow[T], *, write: bool, timeout: float) -> T:
        with self._accounted(operation):
            closings = self._closings
            engine = self.engine if write else self._read_engine
            with engine.connect() as conn:
                alarm = self._arm(conn.connection, timeout)
                try:
                    if write:
                        with conn.begin():
                            return drive_sync(flow, conn)
                    return drive_sync(flow, conn)
                finally:
                    if self._spent(alarm, closings):
                        conn.invalidate()

    def get(self, key_id: str) -> KeyRecord | None:
        """Return the record for ``key_id`` or ``None``: one query on the primary key."""
        return self._run("get", self._get_flow(key_id), write=False, timeout=self.statement_timeout)

    def add(self, record: KeyRecord) -> None:
        """Insert ``record``.

        Raises:
            DuplicateKeyError: The key_id is taken.
            ValueError: A text field of the record (owner, name, ...) is not a string.
        """
        self._run("add", self._add_flow(record), write=True, timeout=self.statement_timeout)

    def update(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        """Apply ``changes`` in one ``UPDATE``; return the new record or ``None``.

        Raises:
            ValueError: A changed text field (name, ...) is not a string.
        """
        flow = self._update_flow(key_id, changes, self.engine.dialect)
        return self._run("update", flow, write=True, timeout=self.statement_timeout)

    def revoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        """Set ``revoked_at`` unless set (idempotent, race-free); return the record or ``None``."""
        flow = self._revoke_flow(key_id, at, self.engine.dialect)
        return self._run("revoke", flow, write=True, timeout=self.statement_timeout)

    def list_keys(self, owner: str | None = None) -> list[KeyRecord]:
        """All records, or those of ``owner``, oldest first."""
        flow = self._list_flow(owner)
        return self._run("list_keys", flow, write=False, timeout=self.admin_timeout)

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        """Record last-used times in one transaction; a time never moves backwards."""
        flow = self._touch_flow(last_used)
        self._run("touch", flow, write=True, timeout=self.statement_timeout)

    def create_schema(self) -> None:
        """Create the table and its index if missing (and the schema, on PostgreSQL).

        On SQLite this also turns on WAL journaling for the file, so that
        lookups never wait behind a write. For migrations, add :data:`metadata`
        (or :func:`keys_table`) to Alembic instead.
        """
        try:
            if self.engine.dialect.name == "sqlite":
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            with self.engine.connect() as conn:
                alarm = self._arm(conn.connection, self.admin_timeout)
                try:
                    with conn.begin():
                        self._create(conn)
                finally:
                    if alarm is not None and self._watchdog.disarm(alarm):
                        conn.invalidate()
        except sa_exc.SQLAlchemyError as exc:
            raise self._error("create_schema", exc) from exc

    def _create(self, conn: Connection) -> None:
        if self.schema is not None and conn.dialect.name != "sqlite":
            conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
        self.metadata.create_all(conn, tables=[self.table], checkfirst=True)

    def close(self) -> None:
        """Close the sync engine's connections and stop the watchdog thread.
        Async users call :meth:`aclose`."""
        self._closings += 1
        if self._engine is not None:
            self._engine.dispose()
            self._engine = self._reader = None
        self._watchdog.close()  # started again by the next call, if there is one

    # -- async --------------------------------------------------------------------------

    async def _arun(self, operation: str, flow: Flow[T], *, write: bool, timeout: float) -> T:
        with self._accounted(operation):
            closings = self._closings
            engine = self.async_engine if write else self._async_read_engine
            async with engine.connect() as conn:
                alarm = self._arm(await conn.get_raw_connection(), timeout)
                try:
                    if write:
                        async with conn.begin():
                            return await drive_async(flow, conn)
                    return await drive_async(flow, conn)
                finally:
                    if self._spent(alarm, closings):
                        await conn.invalidate()

    async def aget(self, key_id: str) -> KeyRecord | None:
        """See :meth:`get`."""
        flow = self._get_flow(key_id)
        return await self._arun("get", flow, write=False, timeout=self.statement_timeout)

    async def aadd(self, record: KeyRecord) -> None:
        """See :meth:`add`."""
        flow = self._add_flow(record)
        await self._arun("add", flow, write=True, timeout=self.statement_timeout)

    async def aupdate(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        """See :meth:`update`."""
        flow = self._update_flow(key_id, changes, self.async_engine.dialect)
        return await self._arun("update", flow, write=True, timeout=self.statement_timeout)

    async def arevoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        """See :meth:`revoke`."""
        flow = self._revoke_flow(key_id, at, self.async_engine.dialect)
        return await self._arun("revoke", flow, write=True, timeout=self.statement_timeout)

    async def alist_keys(self, owner: str | None = None) -> list[KeyRecord]:
        """See :meth:`list_keys`."""
        flow = self._list_flow(owner)
        return await self._arun("list_keys", flow, write=False, timeout=self.admin_timeout)

    async def atouch(self, last_used: Mapping[str, datetime]) -> None:
        """See :meth:`touch`."""
        flow = self._touch_flow(last_used)
        await self._arun("touch", flow, write=True, timeout=self.statement_timeout)

    async def acreate_schema(self) -> None:
        """See :meth:`create_schema`."""
        try:
            if self.async_engine.dialect.name == "sqlite":
                async with self.async_engine.connect() as conn:
                    await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            async with self.async_engine.connect() as conn:
                alarm = self._arm(await conn.get_raw_connection(), self.admin_timeout)
                try:
                    async with conn.begin():
                        await conn.run_sync(self._create)
                finally:
                    if alarm is not None and self._watchdog.disarm(alarm):
                        await conn.invalidate()
        except sa_exc.SQLAlchemyError as exc:
            raise self._error("create_schema", exc) from exc

    async def aclose(self) -> None:
        """Close the connections of both engines and stop the watchdog thread."""
        self._closings += 1
        if self._async_engine is not None:
            await self._async_engine.dispose()
            self._async_engine = self._async_reader = None
        self.close()


def _connect_timeout_error(timeout: float) -> Exception:
    """psycopg's own timeout error, which SQLAlchemy wraps like any driver error."""
    import psycopg  # noqa: PLC0415 (only PostgreSQL engines connect through here)

    return psycopg.errors.ConnectionTimeout(f"connection timeout expired ({timeout} s)")


def _close_quietly(connection: Any) -> None:
    with suppress(Exception):
        connection.close()
