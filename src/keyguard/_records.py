"""What is stored about a key (:class:`KeyRecord`) and who a request is (:class:`Principal`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Final, Literal

from .ratelimit._policy import Policy

__all__ = [
    "CLIENT_HASH_MARK",
    "UNSET",
    "IssuedKey",
    "KeyChanges",
    "KeyKind",
    "KeyRecord",
    "KeyStatus",
    "Principal",
]

KeyStatus = Literal["active", "revoked", "expired"]
#: What a record is: an API key, or an OAuth client (whose secret only buys access tokens).
KeyKind = Literal["api_key", "oauth_client"]
#: Starts the stored secret hash of an OAuth client: ``oauth-client$<the hasher's own form>``.
#: No key hasher understands the marked form, so a client secret never verifies as an API
#: key, and the kind needs no column of its own in any store (see docs/oauth.md).
CLIENT_HASH_MARK: Final = "oauth-client$"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """Everything stored about one key. Only a hash of the secret is kept.

    ``secret_hash`` is left out of the repr so that a logged record cannot
    help anyone guess keys offline.
    """

    key_id: str
    owner: str
    name: str
    environment: str
    secret_hash: str = field(repr=False)
    scopes: frozenset[str] = frozenset()
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    rate_limit: Policy | None = None
    replaced_by: str | None = None

    @property
    def kind(self) -> KeyKind:
        """``"oauth_client"`` for an OAuth client, else ``"api_key"``: read from the
        stored hash's :data:`CLIENT_HASH_MARK`."""
        return "oauth_client" if self.secret_hash.startswith(CLIENT_HASH_MARK) else "api_key"

    def status(self, now: datetime | Callable[[], datetime]) -> KeyStatus:
        """``"revoked"``, ``"expired"`` (at ``now``) or ``"active"``.

        ``now`` may be a clock (such as ``Clock.now``): it is then read only for
        a key that has an expiry, which spares the clock on every request.
        """
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (now() if callable(now) else now) >= self.expires_at:
            return "expired"
        return "active"


class _Unset:
    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


#: Marks a field of :class:`KeyChanges` that is not to be changed.
UNSET: Final = _Unset()


@dataclass(frozen=True, slots=True)
class KeyChanges:
    """A partial update of a :class:`KeyRecord`: fields left ``UNSET`` stay as they are.

    Stores apply it as one targeted write, so concurrent updates of different
    fields (a revoke and a scope change, say) never undo each other.
    """

    name: str | _Unset = UNSET
    scopes: frozenset[str] | _Unset = UNSET
    expires_at: datetime | _Unset | None = UNSET
    secret_hash: str | _Unset = field(default=UNSET, repr=False)
    metadata: Mapping[str, Any] | _Unset = UNSET
    rate_limit: Policy | _Unset | None = UNSET
    replaced_by: str | _Unset | None = UNSET

    def items(self) -> list[tuple[str, Any]]:
        """The (field name, new value) pairs that are set."""
        return [
            (f.name, getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not UNSET
        ]

    def apply(self, record: KeyRecord) -> KeyRecord:
        """Return ``record`` with these changes made."""
        return replace(record, **dict(self.items()))


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created or rotated: the token, to be shown exactly once, and its record."""

    token: str = field(repr=False)
    record: KeyRecord

    @property
    def key_id(self) -> str:
        return self.record.key_id


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made an authenticated request.

    In ASGI apps it is ``scope["user"]`` and ``scope["auth"]``, shaped so that
    Starlette's ``request.user.is_authenticated``, ``request.user.display_name``,
    ``request.auth.scopes`` and ``requires()`` work without keyguard importing
    Starlette. In WSGI apps it is ``environ["keyguard.principal"]``.
    """

    key_id: str
    owner: str
    scopes: frozenset[str] = frozenset()
    environment: str | None = None
    name: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    rate_limit: Policy | None = None
    auth_method: Literal["api_key", "oauth"] = "api_key"

    @classmethod
    def from_record(cls, record: KeyRecord) -> Principal:
        """The principal of a verified key."""
        return cls(
            key_id=record.key_id,
            owner=record.owner,
            scopes=record.scopes,
            environment=record.environment,
            name=record.name,
            metadata=record.metadata,
            rate_limit=record.rate_limit,
        )

    @property
    def is_authenticated(self) -> bool:
        """Always true (Starlette's ``BaseUser`` interface)."""
        return True

    @property
    def display_name(self) -> str:
        """The owner (Starlette's ``BaseUser`` interface)."""
        return self.owner

    @property
    def identity(self) -> str:
        """The key_id (Starlette's ``BaseUser`` interface)."""
        return self.key_id

    def has_scopes(self, scopes: Iterable[str]) -> bool:
        """Return whether every scope in ``scopes`` was granted."""
        return self.scopes.issuperset(scopes)
