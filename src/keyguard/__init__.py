"""keyguard: machine-to-machine authentication for HTTP APIs.

API keys that are generated, stored and checked safely, per-key rate limits,
and ASGI and WSGI middleware. Start with :class:`KeyManager` (or
:class:`AsyncKeyManager`) over a store from :mod:`keyguard.stores`.
"""

from ._circuit import CircuitBreaker
from ._clock import Clock, SystemClock
from ._denials import Denial, DenialReason
from ._drive import NonBlocking
from ._errors import (
    CircuitOpenError,
    DuplicateKeyError,
    KeyguardError,
    KeyNotFoundError,
    MalformedKeyError,
    RateLimitBackendError,
    SecretTooLongError,
    StorageError,
)
from ._hashing import HmacSecretHasher, PasslibHasher, SecretHasher, VerifiedSecretCache
from ._keys import (
    DEFAULT_KEY_FORMAT,
    GeneratedKey,
    KeyFormat,
    ParsedKey,
    checksum,
    generate_key,
    parse_key,
)
from ._last_used import LastUsedRecorder
from ._manager import AsyncKeyManager, KeyManager
from ._options import MiddlewareOptions, MiddlewareOptionsFields
from ._pipeline import ANONYMOUS, Anonymous
from ._records import UNSET, IssuedKey, KeyChanges, KeyRecord, KeyStatus, Principal
from ._redact import RedactKeys
from ._verify import SlowHashWorkers, TokenMemo
from .asgi import KeyguardMiddleware
from .ratelimit import (
    AsyncRateLimiter,
    MemoryRateLimiter,
    PolicyState,
    RateLimitDecision,
    RateLimiter,
)
from .ratelimit._policy import Policy
from .wsgi import KeyguardWSGIMiddleware

__version__ = "0.1.0.dev0"

__all__ = [
    "ANONYMOUS",
    "DEFAULT_KEY_FORMAT",
    "UNSET",
    "Anonymous",
    "AsyncKeyManager",
    "AsyncRateLimiter",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "Denial",
    "DenialReason",
    "DuplicateKeyError",
    "GeneratedKey",
    "HmacSecretHasher",
    "IssuedKey",
    "KeyChanges",
    "KeyFormat",
    "KeyManager",
    "KeyNotFoundError",
    "KeyRecord",
    "KeyStatus",
    "KeyguardError",
    "KeyguardMiddleware",
    "KeyguardWSGIMiddleware",
    "LastUsedRecorder",
    "MalformedKeyError",
    "MemoryRateLimiter",
    "MiddlewareOptions",
    "MiddlewareOptionsFields",
    "NonBlocking",
    "ParsedKey",
    "PasslibHasher",
    "Policy",
    "PolicyState",
    "Principal",
    "RateLimitBackendError",
    "RateLimitDecision",
    "RateLimiter",
    "RedactKeys",
    "SecretHasher",
    "SecretTooLongError",
    "SlowHashWorkers",
    "StorageError",
    "SystemClock",
    "TokenMemo",
    "VerifiedSecretCache",
    "__version__",
    "checksum",
    "generate_key",
    "parse_key",
]
