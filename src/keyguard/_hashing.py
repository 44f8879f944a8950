"""Secret hashing: the :class:`SecretHasher` protocol and its implementations.

The default, :class:`HmacSecretHasher`, is HMAC-SHA256 with a server-side pepper
(``hmac-sha256$<version>$<hex digest>``), or plain SHA-256 (``sha256$<hex
digest>``) without one. Both are sound for a secret of 190 random bits and
cost about a microsecond, so they can run on every request. Slow password
hashes (bcrypt, argon2) exist here only for keys imported from another system,
through :class:`PasslibHasher`, and their verifications are remembered by a
:class:`VerifiedSecretCache` so the slow hash runs once per key and process.

The peppers are configured one way everywhere: :meth:`HmacSecretHasher.from_environment`
reads ``KEYGUARD_PEPPERS`` for apps, the ``keyguard`` command and the examples alike, so
the hashes they make and check cannot silently differ. A stored hash whose pepper version
the app does not have is refused like a wrong secret, and :func:`warn_unreadable_hash`
says so in the log, once per key and interval.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol, runtime_checkable

from ._errors import SecretTooLongError
from ._logsafe import KeyWarnings

__all__ = [
    "PEPPERS_VARIABLE",
    "HmacSecretHasher",
    "PasslibHasher",
    "SecretHasher",
    "VerifiedSecretCache",
    "stored_hash_warnings",
    "warn_unreadable_hash",
]

#: The environment variable of the peppers: ``version:base64[,version:base64...]``.
PEPPERS_VARIABLE: Final = "KEYGUARD_PEPPERS"

_HMAC_SCHEME = "hmac-sha256"
_SHA256_SCHEME = "sha256"
_MIN_PEPPER_BYTES = 16
#: A pepper version as the constructor accepts it (letters, digits and '-', not only '-'),
#: of a length fit for a log line.
_VERSION = re.compile(r"(?=[-]*[A-Za-z0-9])[A-Za-z0-9-]{1,64}")
_BCRYPT_MAX_BYTES = 72
_MAX_SPLITS = 4096


@runtime_checkable
class SecretHasher(Protocol):
    """**Protocol**: turns a secret into its stored form and checks a secret against it.

    Implementations must compare in constant time and must never put the
    secret into an exception message.
    """

    #: True for deliberately slow hashes (bcrypt, argon2): their successful
    #: verifications are remembered by the verified-secret cache.
    slow: bool

    def hash(self, secret: str) -> str:
        """Return the self-describing stored form of ``secret``."""
        ...

    def verify(self, secret: str, stored: str) -> bool:
        """Return whether ``secret`` matches ``stored``; ``False`` for a foreign form."""
        ...

    def identify(self, stored: str) -> bool:
        """Return whether this hasher understands the stored form ``stored``."""
        ...

    def needs_rehash(self, stored: str) -> bool:
        """Return whether ``stored`` should be replaced by a fresh :meth:`hash`."""
        ...


class HmacSecretHasher:
    """HMAC-SHA256 with versioned peppers; plain SHA-256 when no pepper is given.

    The pepper is a server-side secret kept out of the database (an
    environment variable or a secrets manager), so that a leaked table of
    hashes cannot be checked against guessed keys. Several pepper versions
    may be accepted at once while keys migrate; new hashes use ``current``.

    Args:
        peppers: Pepper version name -> pepper bytes (at least 16 bytes).
        current: The version new hashes use; required when there are several.

    Raises:
        ValueError: A pepper is too short, a version name is not a plain word,
            or ``current`` names no pepper.
    """

    slow = False

    def __init__(
        self, peppers: Mapping[str, bytes] | None = None, *, current: str | None = None
    ) -> None:
        peppers = dict(peppers or {})
        for version, pepper in peppers.items():
            if not version or not version.isascii() or not version.replace("-", "").isalnum():
                raise ValueError(
                    f"pepper version must be a non-empty word of letters, digits and '-', "
                    f"got {version!r}"
                )
            if not isinstance(pepper, bytes) or len(pepper) < _MIN_PEPPER_BYTES:
                raise ValueError(
                    f"pepper {version!r} must be at least {_MIN_PEPPER_BYTES} bytes; "
                    f"make one with secrets.token_bytes(32)"
                )
        if current is None and len(peppers) > 1:
            raise ValueError("several peppers given: name the one for new hashes with current=")
        if current is None and peppers:
            current = next(iter(peppers))
        if current is not None and current not in peppers:
            raise ValueError(f"current pepper version {current!r} is not among the peppers")
        self._peppers = peppers
        self._current = current
        # stored form -> (pepper version, digest): each stored hash is taken apart
        # three times per verification otherwise. Bounded; holds no secrets.
        self._splits: dict[str, tuple[str | None, str]] = {}

    def __repr__(self) -> str:
        return f"HmacSecretHasher(versions={sorted(self._peppers)!r}, current={self._current!r})"

    @property
    def versions(self) -> tuple[str, ...]:
        """The pepper versions this hasher has, the current one first (names, not peppers)."""
        return tuple(sorted(self._peppers, key=lambda v: v != self._current))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> HmacSecretHasher:
        """The hasher configured by ``KEYGUARD_PEPPERS``: the one way keyguard reads peppers.

        The ``keyguard`` command and the example apps call it too, so an app that
        builds its hasher with it hashes and checks exactly as the command does.

        ``KEYGUARD_PEPPERS`` is ``version:base64[,version:base64...]``: pepper
        version names (letters, digits and ``-``) with the pepper in standard
        base64 (at least 16 bytes; make one with
        ``base64.b64encode(secrets.token_bytes(32))``). The first is current:
        new hashes use it, the others are still accepted while keys migrate.
        Spaces around entries are ignored. Unset or blank: no pepper, plain
        SHA-256 (``HmacSecretHasher()``).

        Args:
            environ: Where to read the variable; ``os.environ`` when None.

        Raises:
            ValueError: The variable is set but malformed: an entry without ``:``
                or empty, a version given twice or not a plain word, a pepper
                that is not base64 or shorter than 16 bytes. The message names
                the version, never the pepper.
        """
        env = os.environ if environ is None else environ
        spec = env.get(PEPPERS_VARIABLE, "").strip()
        if not spec:
            return cls()
        peppers: dict[str, bytes] = {}
        for position, item in enumerate(spec.split(","), start=1):
            version, sep, encoded = item.strip().partition(":")
            version = version.strip()
            if not sep or not version:
                raise ValueError(
                    f"{PEPPERS_VARIABLE} must be 'version:base64[,version:base64...]'; "
                    f"entry {position} has no 'version:' in front"
                )
            if version in peppers:
                raise ValueError(f"{PEPPERS_VARIABLE}: pepper version {version!r} is given twice")
            try:
                peppers[version] = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise ValueError(
                    f"{PEPPERS_VARIABLE}: pepper {version!r} is not standard base64"
                ) from None
        try:
            return cls(peppers, current=next(iter(peppers)))
        except ValueError as exc:
            raise ValueError(f"{PEPPERS_VARIABLE}: {exc}") from None

    def _digest(self, secret: str, version: str | None) -> str:
        data = secret.encode("utf-8")
        if version is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self._peppers[version], data, hashlib.sha256).hexdigest()

    def hash(self, secret: str) -> str:
        if self._current is None:
            return f"{_SHA256_SCHEME}${self._digest(secret, None)}"
        return f"{_HMAC_SCHEME}${self._current}${self._digest(secret, self._current)}"

    def _split(self, stored: str) -> tuple[str | None, str] | None:
        """Return (pepper version or None, digest), or None for a foreign form."""
        split = self._splits.get(stored)
        if split is not None:
            return split
        parts = stored.split("$")
        if len(parts) == 2 and parts[0] == _SHA256_SCHEME:
            split = None, parts[1]
        elif len(parts) == 3 and parts[0] == _HMAC_SCHEME and parts[1] in self._peppers:
            split = parts[1], parts[2]
        else:
            return None
        if len(self._splits) >= _MAX_SPLITS:
            self._splits.clear()
        self._splits[stored] = split
        return split

    def identify(self, stored: str) -> bool:
        return self._split(stored) is not None

    def verify(self, secret: str, stored: str) -> bool:
        split = self._split(stored)
        if split is None:
            return False
        version, digest = split
        return hmac.compare_digest(
            self._digest(secret, version).encode("ascii"), digest.encode("ascii", "replace")
        )

    def needs_rehash(self, stored: str) -> bool:
        split = self._split(stored)
        return split is None or split[0] != self._current

    def missing_pepper(self, stored: str) -> str | None:
        """The pepper version ``stored`` was made with, when this hasher lacks that pepper.

        None when it has it, for a plain SHA-256 form, and for a form that is not
        this hasher's at all. Such a hash cannot be checked: :meth:`verify`
        refuses every secret for it, like a wrong one, until the pepper is
        configured again. The version is a name, not a secret, and may be logged.
        """
        parts = stored.split("$")
        if len(parts) != 3 or parts[0] != _HMAC_SCHEME or parts[1] in self._peppers:
            return None
        return parts[1] if _VERSION.fullmatch(parts[1]) else None


class PasslibHasher:
    """Verifies imported slow hashes (bcrypt, argon2, ...) through a passlib ``CryptContext``.

    Install with ``pip install 'keyguard-auth[passlib]'`` (the maintained ``libpass``
    fork, which imports as ``passlib``). Keys verified by this hasher are
    re-hashed with the default hasher on their first success, so the slow
    hash is paid once per key, not per request.

    Args:
        context: A ``passlib.context.CryptContext``; default: bcrypt and argon2.
    """

    slow = True

    def __init__(self, context: Any = None) -> None:
        if context is None:
            try:
                from passlib.context import CryptContext  # noqa: PLC0415 (optional extra)
            except ImportError as exc:
                raise ImportError(
                    "PasslibHasher needs passlib: pip install 'keyguard-auth[passlib]'"
                ) from exc
            context = CryptContext(schemes=["bcrypt", "argon2"])
        self._context = context

    def __repr__(self) -> str:
        return f"PasslibHasher(schemes={list(self._context.schemes())!r})"

    def _check_length(self, secret: str, scheme: str | None) -> None:
        if scheme == "bcrypt" and len(secret.encode("utf-8")) > _BCRYPT_MAX_BYTES:
            raise SecretTooLongError(
                f"bcrypt accepts at most {_BCRYPT_MAX_BYTES} bytes of secret; this one is longer"
            )

    def hash(self, secret: str) -> str:
        """Hash with the context's default scheme.

        Raises:
            SecretTooLongError: The scheme is bcrypt and the secret is over 72 bytes.
        """
        self._check_length(secret, self._context.default_scheme())
        return str(self._context.hash(secret))

    def identify(self, stored: str) -> bool:
        try:
            return self._context.identify(stored) is not None
        except ValueError:
            return False

    def verify(self, secret: str, stored: str) -> bool:
        """Check ``secret`` against ``stored``.

        Raises:
            SecretTooLongError: The stored form is bcrypt and the secret is
                over 72 bytes, so it cannot be what was hashed.
        """
        try:
            scheme = self._context.identify(stored)
        except ValueError:
            return False
        if scheme is None:
            return False
        self._check_length(secret, scheme)
        try:
            return bool(self._context.verify(secret, stored))
        except ValueError:
            return False

    def needs_rehash(self, stored: str) -> bool:
        return True


class VerifiedSecretCache:
    """Remembers recent slow-hash outcomes, so bcrypt runs once per key and process.

    A success is kept per key: the key_id, the stored hash it was verified
    against, and the SHA-256 of the secret (never the secret). A later request
    for the same key and stored hash is checked against that digest in
    constant time. A failure is kept per (key_id, stored hash, secret digest),
    so a wrong secret sent again for a key with a slow hash costs no slow hash
    either: the brute-force budget still counts each attempt, but an attacker
    cannot burn a worker's CPU by repeating one. A changed stored hash, an
    expired entry or :meth:`discard` (called on revoke, rotate and update)
    forces the slow hash again. Both halves are bounded and evict in O(1).

    Args:
        max_size: Most entries kept in each half; the least recently used go first.
        ttl: Seconds an entry stays valid.
        clock: Monotonic seconds; injectable for tests.

    Raises:
        ValueError: ``max_size`` or ``ttl`` is not positive.
    """

    def __init__(
        self,
        max_size: int = 10_000,
        ttl: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if ttl <= 0:
            raise ValueError("ttl must be positive (seconds)")
        self._max_size = max_size
        self._ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, bytes, float]] = OrderedDict()
        self._failures: OrderedDict[tuple[str, str, bytes], float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"VerifiedSecretCache(size={len(self)}, max_size={self._max_size}, ttl={self._ttl})"

    def check(self, key_id: str, stored: str, secret: str) -> bool:
        """Return True when this secret was verified against this stored hash recently."""
        return self.outcome(key_id, stored, secret) is True

    def outcome(self, key_id: str, stored: str, secret: str) -> bool | None:
        """True (verified recently), False (failed recently) or None (not known)."""
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key_id)
            if entry is not None:
                cached_stored, cached_digest, expires = entry
                if expires <= now or cached_stored != stored:
                    del self._entries[key_id]
                else:
                    self._entries.move_to_end(key_id)
                    if hmac.compare_digest(digest, cached_digest):
                        return True
            failed = (key_id, stored, digest)
            expires_at = self._failures.get(failed)
            if expires_at is None:
                return None
            if expires_at <= now:
                del self._failures[failed]
                return None
            self._failures.move_to_end(failed)
        return False

    def remember(self, key_id: str, stored: str, secret: str, *, ok: bool = True) -> None:
        """Record the outcome of a slow verification (a success unless ``ok`` is False)."""
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        expires = self._clock() + self._ttl
        with self._lock:
            if ok:
                self._entries[key_id] = (stored, digest, expires)
                self._entries.move_to_end(key_id)
                if len(self._entries) > self._max_size:
                    self._entries.popitem(last=False)
            else:
                failed = (key_id, stored, digest)
                self._failures[failed] = expires
                self._failures.move_to_end(failed)
                if len(self._failures) > self._max_size:
                    self._failures.popitem(last=False)

    def discard(self, key_id: str) -> None:
        """Forget the success of ``key_id`` (on revoke, rotate or update)."""
        with self._lock:
            self._entries.pop(key_id, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()
            self._failures.clear()


#: The warnings about stored hashes no configured hasher can check, on logger ``keyguard``:
#: one per key and kind every 5 minutes, however many requests bring the key.
stored_hash_warnings: Final = KeyWarnings(logging.getLogger("keyguard"), interval=300.0)


def warn_unreadable_hash(key_id: str, stored: str, hashers: Iterable[SecretHasher]) -> None:
    """Warn that the stored hash of ``key_id`` is one no hasher of ``hashers`` can check.

    Called when a key was refused for that reason: the client sees a plain 401,
    as for a wrong secret, so the log is where an operator learns that the app
    lacks a pepper version the key was hashed with (one ``KEYGUARD_PEPPERS``
    for the command and another for the app, or a pepper dropped too early), or
    lacks the hasher of an imported key. Logged at WARNING with the key_id and
    the missing pepper version, never the pepper or the hash, once per key and
    interval (:data:`stored_hash_warnings`). Does nothing when a hasher
    understands ``stored``.
    """
    hashers = tuple(hashers)
    if any(h.identify(stored) for h in hashers):
        return
    for hasher in hashers:
        if isinstance(hasher, HmacSecretHasher):
            version = hasher.missing_pepper(stored)
            if version is not None:
                stored_hash_warnings.warn(
                    key_id,
                    "missing pepper",
                    "key %s is refused: its stored hash was made with pepper version %r, which "
                    "this app does not have (it has %s); configure that pepper, the same "
                    "KEYGUARD_PEPPERS as the keyguard command (HmacSecretHasher.from_environment)",
                    key_id,
                    version,
                    ", ".join(repr(v) for v in hasher.versions) or "none",
                )
                return
    stored_hash_warnings.warn(
        key_id,
        "unknown hash",
        "key %s is refused: no configured hasher understands its stored hash; "
        "add its hasher to legacy_hashers",
        key_id,
    )
