"""A :class:`~keyguard.Denial` as HTTP: status, headers and an RFC 9457 problem body.

The ASGI and WSGI middlewares and the framework integrations all answer
through :class:`Responder`, so a refusal looks the same whichever way an app
is built. What each reason means (status, ``error`` code, challenge) is the
table ``RULES`` in ``_denials.py``; this module only writes it out:

- 401, 400 and 403 carry ``WWW-Authenticate: Bearer realm="..."``, with
  ``error="..."`` when a credential was sent and ``scope="..."`` for 403;
- 429 and 503 carry ``Retry-After``, and 429 the ``RateLimit`` headers;
- every refusal carries ``Cache-Control: no-store`` and a body of type
  ``application/problem+json``. The body holds the denial's ``detail`` and its
  ``error`` code, never the reason (``unknown_key`` and ``wrong_secret`` give
  byte-identical responses), the key_id or anything the client sent.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from ._denials import RULES, Denial, retry_after_seconds

__all__ = ["Responder", "Response"]


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
        return RULES[denial.reason].status

    def challenge(self, denial: Denial) -> str | None:
        """The ``WWW-Authenticate`` value for ``denial``, or ``None`` (429, 503)."""
        rule = RULES[denial.reason]
        if not rule.challenge:
            return None
        if rule.error is None:
            return self._challenge
        challenge = f"{self._challenge}, error={_quoted(rule.error)}"
        if rule.status == 403:
            challenge += f", scope={_quoted(' '.join(sorted(denial.missing_scopes)))}"
        return challenge

    @staticmethod
    def close_reason(denial: Denial) -> str:
        """A WebSocket close reason for ``denial``: status and error code, nothing more."""
        rule = RULES[denial.reason]
        return f"{rule.status} {rule.error or 'missing credentials'}"

    def render(self, denial: Denial) -> Response:
        """Status, headers and problem+json body for ``denial``."""
        rule = RULES[denial.reason]
        status = rule.status
        problem: dict[str, object] = {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": denial.detail,
        }
        if rule.error is not None:
            problem["error"] = rule.error
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
            headers.append(("retry-after", str(retry_after_seconds(denial.retry_after))))
        headers.extend(extra)
        return Response(status, headers, body)
