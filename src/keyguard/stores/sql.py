"""A key store on SQL databases: SQLite (the embedded default) and PostgreSQL.

Install with ``pip install 'keyguard[sql]'`` (SQLAlchemy 2 Core, psycopg 3,
aiosqlite). One table, defined once and used by the sync and the async
engine alike::

    keyguard_keys
      key_id        VARCHAR(64)   primary key      public part of the token
      owner         TEXT          indexed          who the key belongs to
      name          TEXT
      environment   VARCHAR(32)
      secret_hash   TEXT                           never the secret itself
      scopes        JSON (JSONB)                   sorted array of strings
      created_at, expires_at, revoked_at, last_used_at
                    TIMESTAMP WITH TIME ZONE       UTC; naive UTC text on SQLite
      metadata      JSON (JSONB)
      rate_limit    JSON (JSONB)                   {"name","quota","window","burst"} or NULL
      replaced_by   VARCHAR(64)

The table lives in the module-level :data:`metadata` (for Alembic's
``target_metadata``), and :func:`keys_table` adds it, under any name and
schema, to a ``MetaData`` of your own. :meth:`SQLKeyStore.create_schema` is
the quick path for apps that do not run migrations.

Every driver error surfaces as :class:`~keyguard.StorageError` with the driver
error chained; statement parameters (which include secret hashes) are kept out
of messages and logs (SQLAlchemy's ``hide_parameters``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from .._errors import DuplicateKeyError, KeyguardError, StorageError
from .._records import KeyChanges, KeyRecord
from ..ratelimit._policy import Policy

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.engine import Connection, Dialect, Engine, make_url
    from sqlalchemy.engine.url import URL
    from sqlalchemy.sql.expression import Executable
except ImportError as exc:  # pragma: no cover (the extra is installed in tests)
    raise ImportError("keyguard.stores.sql needs SQLAlchemy: pip install 'keyguard[sql]'") from exc

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_TABLE_NAME",
    "SQLKeyStore",
    "default_database_url",
    "keys_table",
    "metadata",
    "table",
]

#: The embedded default: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///keyguard.db"
DEFAULT_TABLE_NAME = "keyguard_keys"
#: Seconds a PostgreSQL connection attempt may take before the store reports
#: itself unavailable (authentication then fails closed with 503).
DEFAULT_CONNECT_TIMEOUT = 5

T = TypeVar("T")


def default_database_url(environ: Mapping[str, str] | None = None) -> str:
    """``$KEYGUARD_DATABASE_URL`` when set, else ``sqlite:///keyguard.db``."""
    env = os.environ if environ is None else environ
    return env.get("KEYGUARD_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime, stored exactly (microseconds included).

    PostgreSQL keeps ``timestamptz``; SQLite keeps naive UTC text of fixed
    width, so that comparisons in SQL (``last_used_at < ?``) stay correct.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("keyguard stores only timezone-aware datetimes (use datetime.UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def keys_table(
    metadata: sa.MetaData, name: str = DEFAULT_TABLE_NAME, *, schema: str | None = None
) -> sa.Table:
    """Define the keys table in ``metadata`` (yours, for your Alembic migrations).

    Args:
        metadata: Where the table is added.
        name: Table name; the owner index is ``ix_<name>_owner``.
        schema: PostgreSQL schema, or ``None`` for the default one.
    """
    return sa.Table(
        name,
        metadata,
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("scopes", _json(), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=True),
        sa.Column("expires_at", UTCDateTime, nullable=True),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.Column("last_used_at", UTCDateTime, nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("rate_limit", _json(), nullable=True),
        sa.Column("replaced_by", sa.String(64), nullable=True),
        sa.Index(f"ix_{name}_owner", "owner"),
        schema=schema,
    )


#: The default table's ``MetaData``: ``target_metadata`` for Alembic.
metadata = sa.MetaData()
#: The default table, ``keyguard_keys`` in the default schema.
table = keys_table(metadata)


def _policy_to_json(policy: Policy | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    return {
        "name": policy.name,
        "quota": policy.quota,
        "window": policy.window,
        "burst": policy.burst,
    }


def _policy_from_json(value: Mapping[str, Any] | None) -> Policy | None:
    if value is None:
        return None
    return Policy(
        name=value["name"], quota=value["quota"], window=value["window"], burst=value["burst"]
    )


_ENCODERS: dict[str, Any] = {
    "scopes": sorted,
    "metadata": dict,
    "rate_limit": _policy_to_json,
}


def _encode(field_name: str, value: Any) -> Any:
    encoder = _ENCODERS.get(field_name)
    return value if encoder is None else encoder(value)


#: The NOT NULL text columns. A NULL there would fail in the database, and
#: PostgreSQL's error would quote the whole row, secret hash included.
_REQUIRED_TEXT = ("key_id", "owner", "name", "environment", "secret_hash")


def _check_text(values: Mapping[str, Any]) -> Mapping[str, Any]:
    for name in _REQUIRED_TEXT:
        if name in values and not isinstance(values[name], str):
            raise ValueError(f"{name} must be a string, not {type(values[name]).__name__}")
    return values


def _record_values(record: KeyRecord) -> Mapping[str, Any]:
    return _check_text(
        {
            "key_id": record.key_id,
            "owner": record.owner,
            "name": record.name,
            "environment": record.environment,
            "secret_hash": record.secret_hash,
            "scopes": _encode("scopes", record.scopes),
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "revoked_at": record.revoked_at,
            "last_used_at": record.last_used_at,
            "metadata": _encode("metadata", record.metadata),
            "rate_limit": _encode("rate_limit", record.rate_limit),
            "replaced_by": record.replaced_by,
        }
    )


def _record_from_row(row: sa.Row[Any]) -> KeyRecord:
    m = row._mapping
    try:
        return KeyRecord(
            key_id=m["key_id"],
            owner=m["owner"],
            name=m["name"],
            environment=m["environment"],
            secret_hash=m["secret_hash"],
            scopes=frozenset(m["scopes"]),
            created_at=m["created_at"],
            expires_at=m["expires_at"],
            revoked_at=m["revoked_at"],
            last_used_at=m["last_used_at"],
            metadata=dict(m["metadata"]),
            rate_limit=_policy_from_json(m["rate_limit"]),
            replaced_by=m["replaced_by"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageError(
            f"the stored record of key {m['key_id']!r} is malformed ({type(exc).__name__}); "
            f"was the table edited by hand?"
        ) from exc


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


@dataclass(frozen=True, slots=True)
class _Statement:
    statement: Executable
    params: Any = field(default=None, repr=False)  # may hold a secret hash


#: An SQL operation: yields statements, receives each one's rows.
_SqlFlow = Generator[_Statement, Sequence[sa.Row[Any]], T]


def _run_sync(flow: _SqlFlow[T], conn: Connection) -> T:
    try:
        step = next(flow)
        while True:
            result = conn.execute(step.statement, step.params)
            step = flow.send(result.all() if result.returns_rows else [])
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _reading(engine: Any) -> Any:
    """The engine for reads: on PostgreSQL in autocommit, which saves the BEGIN and
    ROLLBACK round trips around each lookup (one statement needs no transaction)."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def _is_unique_violation(exc: sa_exc.IntegrityError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return bool(sqlstate == "23505")
    return "UNIQUE" in str(orig).upper()


class SQLKeyStore:
    """A durable key store on SQLAlchemy 2 Core. Implements ``KeyStore`` and ``AsyncKeyStore``.

    The sync methods use an engine for ``url``; the ``a``-prefixed ones an
    async engine for ``async_url`` (by default the same database through
    aiosqlite or psycopg 3), made on first use. Each lookup is one query on the
    primary key; each write is one statement (``UPDATE ... RETURNING``), so
    concurrent revokes and updates of different fields never undo each other.

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
        engine_options: Extra ``create_engine`` keyword arguments (pool sizes, ...).
        async_engine_options: Extra ``create_async_engine`` keyword arguments.

    Raises:
        ValueError: The URL is not one this store can use.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        async_url: str | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
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
        self._engine_options = self._options(self.url, engine_options)
        self._async_engine_options = self._options(self.async_url, async_engine_options)
        self._engine: Engine | None = None
        self._reader: Engine | None = None
        self._async_engine: Any = None
        self._async_reader: Any = None
        self._engine_lock = threading.Lock()
        self._build_statements()

    @staticmethod
    def _options(url: URL, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        options: dict[str, Any] = {"hide_parameters": True}
        if url.get_backend_name() == "postgresql":
            options["connect_args"] = {"connect_timeout": DEFAULT_CONNECT_TIMEOUT}
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

    @property
    def engine(self) -> Engine:
        """The sync engine, made on first use."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = sa.create_engine(self.url, **self._engine_options)
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

                self._async_engine = create_async_engine(
                    self.async_url, **self._async_engine_options
                )
            return self._async_engine

    def _error(self, operation: str, exc: Exception) -> StorageError:
        cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        detail = f"{type(cause).__name__}: {first_line}" if first_line else type(cause).__name__
        return StorageError(f"SQL key store: {operation} failed ({detail})")

    # -- the operations, written once as statement flows -------------------------------

    def _get_flow(self, key_id: str) -> _SqlFlow[KeyRecord | None]:
        rows = yield _Statement(self._select_one, {"p_key_id": key_id})
        return _record_from_row(rows[0]) if rows else None

    def _add_flow(self, record: KeyRecord) -> _SqlFlow[None]:
        yield _Statement(self._insert, _record_values(record))

    def _returning(self, statement: sa.Update, dialect: Dialect) -> sa.Update:
        if dialect.update_returning:
            return statement.returning(*self.table.c)
        return statement

    def _update_flow(
        self, key_id: str, changes: KeyChanges, dialect: Dialect
    ) -> _SqlFlow[KeyRecord | None]:
        values = _check_text({name: _encode(name, value) for name, value in changes.items()})
        if not values:
            return (yield from self._get_flow(key_id))
        statement = sa.update(self.table).where(self.table.c.key_id == key_id).values(**values)
        rows = yield _Statement(self._returning(statement, dialect))
        if not dialect.update_returning:
            return (yield from self._get_flow(key_id))
        return _record_from_row(rows[0]) if rows else None

    def _revoke_flow(
        self, key_id: str, at: datetime, dialect: Dialect
    ) -> _SqlFlow[KeyRecord | None]:
        # COALESCE keeps the first revocation time, atomically, however many race.
        rows = yield _Statement(
            self._returning(self._revoke, dialect), {"p_key_id": key_id, "p_at": at}
        )
        if not dialect.update_returning:
            return (yield from self._get_flow(key_id))
        return _record_from_row(rows[0]) if rows else None

    def _list_flow(self, owner: str | None) -> _SqlFlow[list[KeyRecord]]:
        t = self.table
        statement = sa.select(t).order_by(t.c.created_at.asc().nulls_first(), t.c.key_id)
        if owner is not None:
            statement = statement.where(t.c.owner == owner)
        rows = yield _Statement(statement)
        return [_record_from_row(row) for row in rows]

    def _touch_flow(self, last_used: Mapping[str, datetime]) -> _SqlFlow[None]:
        if not last_used:
            return
        # Sorted, so that two batches lock rows in the same order and never deadlock.
        params = [{"p_key_id": k, "p_when": last_used[k]} for k in sorted(last_used)]
        yield _Statement(self._touch, params)

    # -- sync ---------------------------------------------------------------------------

    def _read(self, operation: str, flow: _SqlFlow[T]) -> T:
        try:
            with self._read_engine.connect() as conn:
                return _run_sync(flow, conn)
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(operation, exc) from exc

    def _write(self, operation: str, flow: _SqlFlow[T], key_id: str | None = None) -> T:
        try:
            with self.engine.begin() as conn:
                return _run_sync(flow, conn)
        except sa_exc.SQLAlchemyError as exc:
            raise self._write_error(operation, exc, key_id) from exc

    def _write_error(
        self, operation: str, exc: sa_exc.SQLAlchemyError, key_id: str | None
    ) -> KeyguardError:
        if (
            operation == "add"
            and isinstance(exc, sa_exc.IntegrityError)
            and _is_unique_violation(exc)
        ):
            return DuplicateKeyError(f"a key with key_id {key_id!r} exists already")
        return self._error(operation, exc)

    def get(self, key_id: str) -> KeyRecord | None:
        """Return the record for ``key_id`` or ``None``: one query on the primary key."""
        return self._read("get", self._get_flow(key_id))

    def add(self, record: KeyRecord) -> None:
        """Insert ``record``.

        Raises:
            DuplicateKeyError: The key_id is taken.
            ValueError: A text field of the record (owner, name, ...) is not a string.
        """
        self._write("add", self._add_flow(record), record.key_id)

    def update(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        """Apply ``changes`` in one ``UPDATE``; return the new record or ``None``.

        Raises:
            ValueError: A changed text field (name, ...) is not a string.
        """
        return self._write("update", self._update_flow(key_id, changes, self.engine.dialect))

    def revoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        """Set ``revoked_at`` unless set (idempotent, race-free); return the record or ``None``."""
        return self._write("revoke", self._revoke_flow(key_id, at, self.engine.dialect))

    def list_keys(self, owner: str | None = None) -> list[KeyRecord]:
        """All records, or those of ``owner``, oldest first."""
        return self._read("list_keys", self._list_flow(owner))

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        """Record last-used times in one transaction; a time never moves backwards."""
        self._write("touch", self._touch_flow(last_used))

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
            with self.engine.begin() as conn:
                self._create(conn)
        except sa_exc.SQLAlchemyError as exc:
            raise self._error("create_schema", exc) from exc

    def _create(self, conn: Connection) -> None:
        if self.schema is not None and conn.dialect.name != "sqlite":
            conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
        self.metadata.create_all(conn, tables=[self.table], checkfirst=True)

    def close(self) -> None:
        """Close the sync engine's connections. Async users call :meth:`aclose`."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = self._reader = None

    # -- async --------------------------------------------------------------------------

    async def _aread(self, operation: str, flow: _SqlFlow[T]) -> T:
        try:
            async with self._async_read_engine.connect() as conn:
                return await _run_async(flow, conn)
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(operation, exc) from exc

    async def _awrite(self, operation: str, flow: _SqlFlow[T], key_id: str | None = None) -> T:
        try:
            async with self.async_engine.begin() as conn:
                return await _run_async(flow, conn)
        except sa_exc.SQLAlchemyError as exc:
            raise self._write_error(operation, exc, key_id) from exc

    async def aget(self, key_id: str) -> KeyRecord | None:
        """See :meth:`get`."""
        return await self._aread("get", self._get_flow(key_id))

    async def aadd(self, record: KeyRecord) -> None:
        """See :meth:`add`."""
        await self._awrite("add", self._add_flow(record), record.key_id)

    async def aupdate(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        """See :meth:`update`."""
        dialect = self.async_engine.dialect
        return await self._awrite("update", self._update_flow(key_id, changes, dialect))

    async def arevoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        """See :meth:`revoke`."""
        dialect = self.async_engine.dialect
        return await self._awrite("revoke", self._revoke_flow(key_id, at, dialect))

    async def alist_keys(self, owner: str | None = None) -> list[KeyRecord]:
        """See :meth:`list_keys`."""
        return await self._aread("list_keys", self._list_flow(owner))

    async def atouch(self, last_used: Mapping[str, datetime]) -> None:
        """See :meth:`touch`."""
        await self._awrite("touch", self._touch_flow(last_used))

    async def acreate_schema(self) -> None:
        """See :meth:`create_schema`."""
        try:
            if self.async_engine.dialect.name == "sqlite":
                async with self.async_engine.connect() as conn:
                    await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            async with self.async_engine.begin() as conn:
                await conn.run_sync(self._create)
        except sa_exc.SQLAlchemyError as exc:
            raise self._error("create_schema", exc) from exc

    async def aclose(self) -> None:
        """Close the connections of both engines."""
        if self._async_engine is not None:
            await self._async_engine.dispose()
            self._async_engine = self._async_reader = None
        self.close()


async def _run_async(flow: _SqlFlow[T], conn: Any) -> T:
    try:
        step = next(flow)
        while True:
            result = await conn.execute(step.statement, step.params)
            step = flow.send(result.all() if result.returns_rows else [])
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
