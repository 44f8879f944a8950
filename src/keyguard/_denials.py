"""Why a request is refused (:class:`Denial`), and the one table of what each reason means.

Every decision that depends on the reason of a refusal reads :data:`RULES`:
the HTTP status, the ``error`` code of the ``WWW-Authenticate`` challenge and
the problem body, and whether the refusal spends the client address's failure
budget (the brute-force defence). ``Retry-After`` is rounded in one place,
:func:`~keyguard.ratelimit.retry_after_seconds` (up, and at least 1).

=====================  ======  ===========================  ==============
reason                 status  error code                   spends budget
=====================  ======  ===========================  ==============
missing_credentials    401     (none: a bare challenge)     no
invalid_request        400     ``invalid_request``          no
malformed_key          401     ``invalid_token``            yes
unknown_key            401     ``invalid_token``            yes
wrong_secret           401     ``invalid_token``            yes
wrong_environment      401     ``invalid_token``            no
invalid_token          401     ``invalid_token``            yes
client_secret_bearer   401     ``invalid_token``            no
revoked                401     ``invalid_token``            no
expired                401     ``invalid_token``            no
insufficient_scope     403     ``insufficient_scope``       no
rate_limited           429     ``rate_limited``             no
store_unavailable      503     ``temporarily_unavailable``  no
=====================  ======  ===========================  ==============

Only the failures that prove nothing about who holds the credential (a
malformed token, an unknown key_id, a wrong secret, an access token that
does not verify) spend the budget. An OAuth client secret sent as a bearer
token (``client_secret_bearer``) is refused by its shape, without a lookup:
it is a client's mistake, told so, and proves nothing either way. A
revoked, expired or wrong-environment key was presented with its right
secret: its holder is refused, and a client still sending its old key after
a rotation does not lock its own address out of the new one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from .ratelimit._headers import retry_after_seconds

__all__ = ["RULES", "Denial", "DenialReason", "DenialRule", "retry_after_seconds"]


class DenialReason(enum.Enum):
    """Why a request was not authenticated. The value is safe to log."""

    MISSING_CREDENTIALS = "missing_credentials"
    INVALID_REQUEST = "invalid_request"
    MALFORMED_KEY = "malformed_key"
    UNKNOWN_KEY = "unknown_key"
    WRONG_SECRET = "wrong_secret"  # noqa: S105 (a reason code, not a password)
    WRONG_ENVIRONMENT = "wrong_environment"
    INVALID_TOKEN = "invalid_token"  # noqa: S105 (a reason code: a JWT that does not verify)
    CLIENT_SECRET_AS_BEARER = "client_secret_bearer"  # noqa: S105 (a reason code)
    REVOKED = "revoked"
    EXPIRED = "expired"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    RATE_LIMITED = "rate_limited"
    STORE_UNAVAILABLE = "store_unavailable"


@dataclass(frozen=True, slots=True)
class Denial:
    """A request that is not let through, and why.

    ``detail`` is written for the client and never contains the token. For
    ``UNKNOWN_KEY`` and ``WRONG_SECRET`` the detail is the same text, so that
    a client cannot tell which key_ids exist; the reason itself is for logs.
    """

    reason: DenialReason
    detail: str
    key_id: str | None = None
    missing_scopes: frozenset[str] = frozenset()
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class DenialRule:
    """What one :class:`DenialReason` means over HTTP.

    Attributes:
        status: The HTTP status.
        error: The ``error`` code of the challenge and the problem body; None
            for a request that sent no credential (a bare challenge, RFC 6750 §3.1).
        challenge: Whether the response carries ``WWW-Authenticate``.
        spends_budget: Whether the refusal counts against the client
            address's failure budget.
    """

    status: int
    error: str | None
    challenge: bool
    spends_budget: bool


def _rule(status: int, error: str | None, *, spends_budget: bool = False) -> DenialRule:
    return DenialRule(status, error, status in (400, 401, 403), spends_budget)


_INVALID_TOKEN: Final = "invalid_token"  # noqa: S105 (an RFC 6750 error code)

#: The one table: what each reason means over HTTP.
RULES: Final[Mapping[DenialReason, DenialRule]] = {
    DenialReason.MISSING_CREDENTIALS: _rule(401, None),
    DenialReason.INVALID_REQUEST: _rule(400, "invalid_request"),
    DenialReason.MALFORMED_KEY: _rule(401, _INVALID_TOKEN, spends_budget=True),
    DenialReason.UNKNOWN_KEY: _rule(401, _INVALID_TOKEN, spends_budget=True),
    DenialReason.WRONG_SECRET: _rule(401, _INVALID_TOKEN, spends_budget=True),
    DenialReason.WRONG_ENVIRONMENT: _rule(401, _INVALID_TOKEN),
    DenialReason.INVALID_TOKEN: _rule(401, _INVALID_TOKEN, spends_budget=True),
    DenialReason.CLIENT_SECRET_AS_BEARER: _rule(401, _INVALID_TOKEN),
    DenialReason.REVOKED: _rule(401, _INVALID_TOKEN),
    DenialReason.EXPIRED: _rule(401, _INVALID_TOKEN),
    DenialReason.INSUFFICIENT_SCOPE: _rule(403, "insufficient_scope"),
    DenialReason.RATE_LIMITED: _rule(429, "rate_limited"),
    DenialReason.STORE_UNAVAILABLE: _rule(503, "temporarily_unavailable"),
}
