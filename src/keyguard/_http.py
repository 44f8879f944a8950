"""A :class:`~keyguard.Denial` as HTTP: status, headers and an RFC 9457 problem body.

The ASGI and WSGI middlewares and the framework integrations all answer
through :class:`Responder`, so a refusal looks the same whichever way an app
is built:

=====================  ======  ==========================================
reason                 status  ``WWW-Authenticate`` / extra headers
=====================  ======  ==========================================
missing_credentials    401     ``Bearer realm="..."`` (no error code)
invalid_request        400     ``Bearer realm="...", error="invalid_request"``
malformed_key,         401     ``Bearer realm="...", error="invalid_token"``
unknown_key, ...
insufficient_scope     403     ``... error="insufficient_scope", scope="..."``
rate_limited           429     ``Retry-After``, ``RateLimit-Policy``, ``RateLimit``
store_unavailable      503     ``Retry-After``
=====================  ======  ==========================================

Every refusal carries ``Cache-Control: no-store`` and a body of type
``application/problem+json``. The body holds the denial's ``detail`` and an
``error`` code, never the reason (``unknown_key`` and ``wrong_secret`` give
byte-identical responses), the key_id or anything the client sent.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus

from ._flow import Denial, DenialReason

__all__ = ["STATUS_BY_REASON", "Responder", "Response"]

STATUS_BY_REASON: dict[DenialReason, int] = {
    DenialReason.MISSING_CREDENTIALS: 401,
    DenialReason.INVALID_REQUEST: 400,
    DenialReason.MALFORMED_KEY: 401,
    DenialReason.UNKNOWN_KEY: 401,
    DenialReason.WRONG_SECRET: 401,
    DenialReason.WRONG_ENVIRONMENT: 401,
    DenialReason.REVOKED: 401,
    DenialReason.EXPIRED: 401,
    DenialReason.INSUFFICIENT_SCOPE: 403,
    DenialReason.RATE_LIMITED: 429,
    DenialReason.STORE_UNAVAILABLE: 503,
}

#: The RFC 6750 error code (or keyguard's own, for 429 and 503) in the body.
_ERROR_CODE = {
    400: "invalid_request",
    401: "invalid_token",
    403: "insufficient_scope",
    429: "rate_limited",
    503: "temporarily_unavailable",
}


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Response:
    """A rendered refusal. ``headers`` are lowercase ``(name, value)`` string pairs."""

    __slots__ = ("body", "headers", "status", "status_line")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.status_line = f"{status} {HTTPStatus(status).phrase}"
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Response(status={self.status})"

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as ASGI wants them."""
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]


class Responder:
    """Turns denials into responses for one realm.

    Args:
        realm: Already validated by :class:`~keyguard.MiddlewareOptions`.
    """

    __slots__ = ("_challenge", "realm")

    def __init__(self, realm: str) -> None:
        self.realm = realm
        self._challenge = f"Bearer realm={_quoted(realm)}"

    def __repr__(self) -> str:
        return f"Responder(realm={self.realm!r})"

    @staticmethod
    def status(denial: Denial) -> int:
        """The HTTP status of ``denial``."""
        return STATUS_BY_REASON[denial.reason]

    def challenge(self, denial: Denial) -> str | None:
        """The ``WWW-Authenticate`` value for ``denial``, or ``None`` for 429 and 503."""
        status = STATUS_BY_REASON[denial.reason]
        if status == 401 and denial.reason is DenialReason.MISSING_CREDENTIALS:
            return self._challenge
        if status in (400, 401):
            return f"{self._challenge}, error={_quoted(_ERROR_CODE[status])}"
        if status == 403:
            scope = " ".join(sorted(denial.missing_scopes))
            return f'{self._challenge}, error="insufficient_scope", scope={_quoted(scope)}'
        return None

    @staticmethod
    def close_reason(denial: Denial) -> str:
        """A WebSocket close reason for ``denial``: status and error code, nothing more."""
        status = STATUS_BY_REASON[denial.reason]
        if denial.reason is DenialReason.MISSING_CREDENTIALS:
            return "401 missing credentials"
        return f"{status} {_ERROR_CODE[status]}"

    def render(self, denial: Denial) -> Response:
        """Status, headers and problem+json body for ``denial``."""
        status = STATUS_BY_REASON[denial.reason]
        problem: dict[str, object] = {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": denial.detail,
        }
        if denial.reason is not DenialReason.MISSING_CREDENTIALS:
            problem["error"] = _ERROR_CODE[status]
        if denial.missing_scopes:
            problem["scope"] = " ".join(sorted(denial.missing_scopes))
        body = json.dumps(problem, separators=(",", ":")).encode("ascii")
        headers = [
            ("content-type", "application/problem+json"),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
        ]
        challenge = self.challenge(denial)
        if challenge is not None:
            headers.append(("www-authenticate", challenge))
        extra = [(name.lower(), value) for name, value in denial.headers]
        if denial.retry_after is not None and not any(n == "retry-after" for n, _ in extra):
            headers.append(("retry-after", str(max(1, math.ceil(denial.retry_after)))))
        headers.extend(extra)
        return Response(status, headers, body)
