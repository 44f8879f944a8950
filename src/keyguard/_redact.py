"""Taking API keys out of log lines that keyguard does not write: :class:`RedactKeys`."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping

from ._keys import KeyFormat
from ._options import DEFAULT_QUERY_PARAM_NAMES, checked_param_names
from ._pipeline import param_name

__all__ = ["REDACTED", "RedactKeys"]

#: What a secret is replaced with.
REDACTED = "[redacted]"

# One query parameter: its separator, name and value (up to the next separator, a space or
# a quote, which ends a URL inside a log line).
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#\s\"']+)=([^&;#\s\"']*)")


class RedactKeys(logging.Filter):
    """A logging filter that takes API keys out of other libraries' log records.

    A server logs each request line before the app sees the request. So a
    client that sends its key in the URL (``?api_key=...``) puts the key in
    uvicorn's, gunicorn's or werkzeug's access log, and the 400 keyguard
    answers cannot take it out again. Added to those loggers, or to a
    handler, this filter rewrites each record before it is formatted:

    - a token of ``key_format`` anywhere in the record keeps its prefix,
      environment and key_id (which are safe to log) and loses the rest:
      ``sk_live_M65wXtYRmqlf_[redacted]``;
    - the value of every query parameter named in ``query_param_names``
      (compared as the middleware does: decoded, in any case) becomes
      ``[redacted]``, whatever else it holds: a key of another form, a
      mistyped one. A key of ``key_format`` there keeps its key_id, as above,
      so the log still says which key to rotate.

    The record's arguments are rewritten one by one and keep their types, so
    formatters that read them (uvicorn's access formatter does) keep working.
    Only when a key is left in the formatted text (in the message itself, split
    between the message and an argument, inside a list) does the record become
    its redacted text, without arguments. The filter never drops a record,
    and a record that cannot be formatted passes on to its handler::

        import logging
        from keyguard import RedactKeys

        for name in ("uvicorn.access", "gunicorn.access", "werkzeug"):
            logging.getLogger(name).addFilter(RedactKeys())

    A filter on a logger sees only the records logged on that very logger;
    to cover its children too, add it to the handler instead.

    Args:
        key_format: The format of the API's keys (the prefix and environments).
        query_param_names: The query parameters whose values are redacted;
            default: the names the middleware refuses a key in.
    """

    def __init__(
        self,
        key_format: KeyFormat | None = None,
        query_param_names: Collection[str] = DEFAULT_QUERY_PARAM_NAMES,
    ) -> None:
        super().__init__()
        names = checked_param_names(query_param_names)
        self.key_format = key_format if key_format is not None else KeyFormat()
        self.query_param_names = frozenset(name.lower() for name in names)
        self._token = self.key_format._pattern
        self._prefix = self.key_format.prefix + "_"

    def __repr__(self) -> str:
        return (
            f"RedactKeys(key_format={self.key_format!r}, "
            f"query_param_names={sorted(self.query_param_names)!r})"
        )

    def redact(self, text: str) -> str:
        """``text`` without the secret part of any key and without the key parameters' values."""
        text = self._redact_tokens(text)
        if "=" in text:
            text = _QUERY_PARAM.sub(self._redact_param, text)
        return text

    def _redact_tokens(self, text: str) -> str:
        if self._prefix not in text:
            return text
        return self._token.sub(rf"\1_\2_\3_{REDACTED}", text)

    def _redact_param(self, match: re.Match[str]) -> str:
        value = match[3]
        # A value the token rule has redacted already keeps its key_id: the key to rotate.
        if (
            param_name(match[2]) not in self.query_param_names
            or not value
            or value.endswith(REDACTED)
        ):
            return match[0]
        return f"{match[1]}{match[2]}={REDACTED}"

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; always keep it."""
        try:
            args = record.args
            if isinstance(args, tuple):
                record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in args)
            elif isinstance(args, Mapping):
                record.args = {
                    k: self.redact(v) if isinstance(v, str) else v for k, v in args.items()
                }
            # What is left: a key in the message itself, or split between the message and
            # an argument, or inside an argument that is not a string. Then the record
            # becomes its redacted text, without arguments.
            message = record.getMessage()
            redacted = self.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, ()
        except Exception:
            # A log call must never fail because of its filter; the handler reports a
            # record that cannot be formatted, as it would without the filter.
            return True
        return True
