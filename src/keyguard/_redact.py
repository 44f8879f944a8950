"""Taking API keys out of log lines that keyguard does not write: :class:`RedactKeys`."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping, MutableMapping
from contextlib import suppress
from typing import Any

from ._keys import KEY_ID_LENGTH, KeyFormat
from ._logsafe import KEY_SEPARATOR, REDACTED, key_pattern
from ._options import DEFAULT_QUERY_PARAM_NAMES, checked_param_names
from ._pipeline import param_name

__all__ = ["DEFAULT_HEADER_NAMES", "REDACTED", "RedactKeys"]

#: The request headers whose values are credentials, as servers may log them.
DEFAULT_HEADER_NAMES = ("authorization", "proxy-authorization", "x-api-key")

# A query parameter's name and its "=": after a separator, the start of a query string,
# or a quote, space or bracket before a bare query string. No name holds one of those
# characters, so each character is read by one attempt at most: the search stays linear
# in a long line a client wrote.
_PARAM_NAME = re.compile(r"(?:^|(?<=[?&;\s'\"(,]))([^=&;#?\s\"'(,]+)=")
# Its value: up to the next separator, a space or a quote, which ends a URL in a log line.
_PARAM_VALUE = re.compile(r"[^&;#\s\"']*")
# A header value: an optional scheme (``Basic``, ``Bearer``) and the credential.
_SCHEMED = re.compile(r"([A-Za-z][\w-]*[ \t]+)(\S+)")
_TCHAR = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A split key's identifier (``KeyFormat(accept_split_keys=True)``), before its ``.``.
_SPLIT_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"


def _checked_header_names(names: Collection[str]) -> frozenset[str]:
    if isinstance(names, str):
        raise TypeError(
            f"header_names must be a collection of names, not the single string {names!r}"
        )
    checked = tuple(names)
    for name in checked:
        if not isinstance(name, str) or not _TCHAR.fullmatch(name):
            raise ValueError(f"header_names: {name!r} is not an HTTP header name")
    return frozenset(name.lower().replace("_", "-") for name in checked)


def _header_of(key: str) -> str:
    """The header a log-record argument names: gunicorn's ``{x-api-key}i`` atom or its
    ``{http_x_api_key}e`` environ atom, a WSGI ``HTTP_X_API_KEY``: ``x-api-key``."""
    name = key.lower()
    if name.startswith("{") and name[-2:] in ("}i", "}e"):
        name = name[1:-2]
    name = name.replace("_", "-")
    return name[5:] if name.startswith("http-") else name


class RedactKeys(logging.Filter):
    """A logging filter that takes API keys out of other libraries' log records.

    A server logs each request line before the app sees the request. So a
    client that sends its key in the URL (``?api_key=...``, or in the path)
    puts the key in uvicorn's, gunicorn's or werkzeug's access log, and the
    400 keyguard answers cannot take it out again; a server's error log may
    quote an invalid request line, and a trace log the whole request. Added
    to those loggers, or to a handler, this filter rewrites each record
    before it is formatted:

    - anything that starts like a key of ``key_format`` (prefix, environment,
      key_id) keeps those parts, which are safe to log and say which key to
      rotate, and loses every letter and digit after them, however truncated
      or extended: ``sk_live_M65wXtYRmqlf_[redacted]``;
    - the value of every query parameter named in ``query_param_names``
      (compared as the middleware does: decoded, in any case) becomes
      ``[redacted]``, whatever it holds: a key of another form, a mistyped
      one;
    - the credential after ``Bearer``, and the value of every header named in
      ``header_names`` where a log line shows a header (``Authorization:
      Basic [redacted]``, ``(b'x-api-key', b'[redacted]')``, gunicorn's
      ``{authorization}i`` atom), becomes ``[redacted]``;
    - a split key (``identifier.secret``, when ``key_format`` accepts them)
      keeps its identifier in those values: ``legacy-7.[redacted]``. Elsewhere
      in a line a split key cannot be told from a host or file name
      (``api.example.com``), so it is left alone.

    The filter reads the record's formatted line; most lines hold nothing to
    take out, and their record is left as it is. Otherwise the record's
    arguments are rewritten one by one and keep their types, so formatters
    that read them (uvicorn's access formatter does, gunicorn's access log
    formats a mapping that answers ``-`` for a missing atom) keep working.
    Only when a key is left in the formatted text (in the message itself,
    split between the message and an argument, inside a list) does the record
    become its redacted text, without arguments. A traceback that
    holds a key becomes its redacted text (``exc_text``; ``exc_info`` is
    cleared, so no formatter prints the original). The filter never drops a
    record, and a record that cannot be formatted passes on to its handler::

        import logging
        from keyguard import RedactKeys

        for name in ("uvicorn.access", "uvicorn.error", "uvicorn.asgi",
                     "gunicorn.access", "gunicorn.error", "werkzeug"):
            logging.getLogger(name).addFilter(RedactKeys())

    A filter on a logger sees only the records logged on that very logger;
    to cover its children too, add it to the handler instead.

    Args:
        key_format: The format of the API's keys (the prefix and environments).
        query_param_names: The query parameters whose values are redacted;
            default: the names the middleware refuses a key in.
        header_names: The headers whose values are redacted (any case; ``-``
            and ``_`` alike); add the middleware's ``api_key_header`` if it
            is not ``X-API-Key``.

    Raises:
        TypeError: A collection of names is a single string.
        ValueError: A name is empty, or not a header name.
    """

    def __init__(
        self,
        key_format: KeyFormat | None = None,
        query_param_names: Collection[str] = DEFAULT_QUERY_PARAM_NAMES,
        header_names: Collection[str] = DEFAULT_HEADER_NAMES,
    ) -> None:
        super().__init__()
        names = checked_param_names(query_param_names)
        self.key_format = key_format if key_format is not None else KeyFormat()
        self.query_param_names = frozenset(name.lower() for name in names)
        self.header_names = _checked_header_names(header_names)
        fmt = self.key_format
        environment = f"(?:{'|'.join(fmt.environments)})"
        head = (
            f"{re.escape(fmt.prefix)}{KEY_SEPARATOR}{environment}"
            f"{KEY_SEPARATOR}[0-9A-Za-z]{{{KEY_ID_LENGTH}}}{KEY_SEPARATOR}"
        )
        self._prefix = fmt.prefix
        self._token = key_pattern(re.escape(fmt.prefix), environment)
        self._split = re.compile(rf"({_SPLIT_ID})\.") if fmt.accept_split_keys else None
        split_kept = rf"|{_SPLIT_ID}\." if fmt.accept_split_keys else ""
        self._kept = re.compile(rf"(?:{head}{split_kept})?{re.escape(REDACTED)}")
        headers = "|".join(
            re.escape(name).replace(r"\-", "-").replace("-", "[-_]")
            for name in sorted(self.header_names, key=len, reverse=True)
        )
        # Searched in the lowercased text (faster than IGNORECASE).
        self._credential_hint = re.compile(f"bearer|{headers}")
        # A parameter name may be percent-encoded (``Api%5FKey``) or hold a ``+`` (a space).
        self._param_hint = re.compile(
            "|".join([r"%", r"\+", *map(re.escape, sorted(self.query_param_names))])
        )
        # Where a line shows a credential: after a header's name and its separator (as
        # text, JSON, a repr of a header list or of a WSGI environ), after an optional
        # scheme; or after the word Bearer.
        self._credential = re.compile(
            r"((?<![\w-])(?:"
            rf"(?:http[-_])?(?:{headers})[\"']?[ \t]*[:=,][ \t]*(?-i:b)?[\"']?"
            r"(?:[A-Za-z][\w-]*[ \t]+)?"
            r"|bearer[ \t]+))"
            r"([^\s\"',;)}>&]+)",
            re.IGNORECASE,
        )

    def __repr__(self) -> str:
        return (
            f"RedactKeys(key_format={self.key_format!r}, "
            f"query_param_names={sorted(self.query_param_names)!r}, "
            f"header_names={sorted(self.header_names)!r})"
        )

    def redact(self, text: str) -> str:
        """``text`` without the secret part of any key, nor any credential or key parameter
        value."""
        # Each rule runs only when its words are in the text: most log lines hold none.
        lower = text.lower()
        if self._credential_hint.search(lower) is not None:
            text = self._credential.sub(self._redact_credential, text)
        if "=" in text and self._param_hint.search(lower) is not None:
            text = self._redact_params(text)
        if self._prefix in text:
            text = self._token.sub(rf"\1{REDACTED}", text)
        return text

    def _secret_removed(self, value: str) -> str:
        """A credential without its secret: a key keeps its key_id, a split key its
        identifier, anything else becomes ``[redacted]``."""
        if self._kept.fullmatch(value):
            return value  # redacted already (by a filter on the logger and one on the handler)
        match = self._token.match(value)
        if match is None and self._split is not None:
            match = self._split.match(value)
            if match is not None:
                return f"{match[1]}.{REDACTED}"
        return REDACTED if match is None else match[1] + REDACTED

    def _redact_credential(self, match: re.Match[str]) -> str:
        return match[1] + self._secret_removed(match[2])

    def _redact_params(self, text: str) -> str:
        parts: list[str] = []
        done = pos = 0
        while (name := _PARAM_NAME.search(text, pos)) is not None:
            pos = name.end()  # another name's value is read on: ``?next=/x?api_key=...``
            if param_name(name[1]) not in self.query_param_names:
                continue
            value = _PARAM_VALUE.match(text, pos)
            if value is not None and value[0]:
                parts += (text[done:pos], self._secret_removed(value[0]))
                done = pos = value.end()
        if not parts:
            return text
        parts.append(text[done:])
        return "".join(parts)

    def _redact_header(self, value: str) -> str:
        value = value.strip()
        scheme = _SCHEMED.fullmatch(value)
        if scheme is not None:
            return scheme[1] + self._secret_removed(scheme[2])
        return self._secret_removed(value) if value else value

    def _redact_mapping(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        changed: dict[str, str] = {}
        for key, value in args.items():
            if not isinstance(value, str):
                continue
            if isinstance(key, str) and _header_of(key) in self.header_names:
                redacted = self._redact_header(value)
            else:
                redacted = self.redact(value)
            if redacted != value:
                changed[key] = redacted
        if not changed:
            return args
        if isinstance(args, MutableMapping):
            # In place: the mapping's own type answers for missing keys (gunicorn's atoms).
            args.update(changed)
            return args
        return {**args, **changed}

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; always keep it."""
        # A log call must never fail because of its filter; the handler reports a record
        # that cannot be formatted, as it would without the filter.
        with suppress(Exception):
            self._redact_traceback(record)
        with suppress(Exception):
            self._redact_message(record)
        return True

    def _redact_message(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            self._redact_args(record)  # the handler prints them when it reports the record
            return
        if self.redact(message) == message:
            return  # the common case: nothing to take out of the line
        self._redact_args(record)
        # What is left: a key in the message itself, or split between the message and an
        # argument, or inside an argument that is not a string. Then the record becomes its
        # redacted text, without arguments.
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()

    def _redact_args(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, Mapping):
            record.args = self._redact_mapping(args)

    def _redact_traceback(self, record: logging.LogRecord) -> None:
        """A traceback or stack that quotes a key becomes its redacted text."""
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            redacted = self.redact(text)
            if redacted != text:
                # Formatters print exc_text; without exc_info none formats the original.
                record.exc_text, record.exc_info = redacted, None
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
