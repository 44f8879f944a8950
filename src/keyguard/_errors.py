"""The exceptions keyguard raises.

Every exception is a :class:`KeyguardError`, which is never raised itself.
Where a caller would reasonably catch a builtin, the exception mixes it in::

    KeyguardError
    ├── MalformedKeyError (ValueError)       the token is not a key of this format
    ├── SecretTooLongError (ValueError)      a slow hash cannot take this secret
    ├── KeyNotFoundError (LookupError)       no key with that key_id
    ├── DuplicateKeyError (ValueError)       a key with that key_id exists already
    └── StorageError                         a backend failed (driver errors chained)
        ├── CircuitOpenError                 a backend that keeps failing is not called for now
        └── RateLimitBackendError            the rate-limit backend failed

No message ever contains a secret or a whole token: at most the key_id, which is
public by design.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "DuplicateKeyError",
    "KeyNotFoundError",
    "KeyguardError",
    "MalformedKeyError",
    "RateLimitBackendError",
    "SecretTooLongError",
    "StorageError",
]


class KeyguardError(Exception):
    """Base class of every keyguard exception; never raised directly."""


class MalformedKeyError(KeyguardError, ValueError):
    """The token does not match the key grammar, or its checksum is wrong.

    The message says what is wrong (length, alphabet, prefix, checksum, ...)
    without repeating the token.
    """


class SecretTooLongError(KeyguardError, ValueError):
    """The secret is longer than the stored hash scheme accepts (bcrypt: 72 bytes)."""


class KeyNotFoundError(KeyguardError, LookupError):
    """No key with the given key_id exists in the store."""


class DuplicateKeyError(KeyguardError, ValueError):
    """A key with the given key_id already exists in the store."""


class StorageError(KeyguardError):
    """A backend (key store or rate limiter) failed; the driver error is chained.

    Authentication fails closed on this error: the middleware answers 503.
    """


class CircuitOpenError(StorageError):
    """A backend failed repeatedly, so it is not called until a probe finds it back.

    Raised at once, without touching the backend, by a
    :class:`~keyguard.CircuitBreaker` that is open. ``retry_after`` is the
    number of seconds until the next probe may be made: the middleware
    sends it as ``Retry-After`` with its 503.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, float]]:
        return (type(self), (str(self), self.retry_after))


class RateLimitBackendError(StorageError):
    """The rate-limit backend failed; what happens next is ``on_backend_error``."""
