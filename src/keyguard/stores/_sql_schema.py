"""The keys table and the codecs between :class:`KeyRecord` and its rows.

One table, defined once and used by the sync and the async engine alike::

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

The public names (:data:`metadata`, :func:`keys_table`, :data:`table`) are
imported from :mod:`keyguard.stores.sql`, where Alembic users find them; this
module keeps the schema apart from the store that runs statements on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .._errors import StorageError
from .._records import KeyRecord
from ..ratelimit._policy import Policy

try:
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.engine import Dialect
except ImportError as exc:  # pragma: no cover (the extra is installed in tests)
    raise ImportError(
        "keyguard.stores.sql needs SQLAlchemy: pip install 'keyguard-auth[sql]'"
    ) from exc

__all__ = [
    "DEFAULT_TABLE_NAME",
    "UTCDateTime",
    "check_text",
    "encode",
    "keys_table",
    "metadata",
    "record_from_row",
    "record_values",
    "table",
]

DEFAULT_TABLE_NAME = "keyguard_keys"


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


def encode(field_name: str, value: Any) -> Any:
    encoder = _ENCODERS.get(field_name)
    return value if encoder is None else encoder(value)


#: The NOT NULL text columns. A NULL there would fail in the database, and
#: PostgreSQL's error would quote the whole row, secret hash included.
_REQUIRED_TEXT = ("key_id", "owner", "name", "environment", "secret_hash")


def check_text(values: Mapping[str, Any]) -> Mapping[str, Any]:
    for name in _REQUIRED_TEXT:
        if name in values and not isinstance(values[name], str):
            raise ValueError(f"{name} must be a string, not {type(values[name]).__name__}")
    return values


def record_values(record: KeyRecord) -> Mapping[str, Any]:
    return check_text(
        {
            "key_id": record.key_id,
            "owner": record.owner,
            "name": record.name,
            "environment": record.environment,
            "secret_hash": record.secret_hash,
            "scopes": encode("scopes", record.scopes),
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "revoked_at": record.revoked_at,
            "last_used_at": record.last_used_at,
            "metadata": encode("metadata", record.metadata),
            "rate_limit": encode("rate_limit", record.rate_limit),
            "replaced_by": record.replaced_by,
        }
    )


def record_from_row(row: sa.Row[Any]) -> KeyRecord:
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
