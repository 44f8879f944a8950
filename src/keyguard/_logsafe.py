"""keyguard's own logs kept short and free of secrets: key shapes redacted, failures throttled.

Two things every log line keyguard writes itself must respect:

- no token: a path or any other text a client sent goes through
  :func:`redact_key_shapes` before it is logged, so a key sent where it does
  not belong (``GET /invoices/sk_live_...``) loses its secret, whatever its
  prefix, environment or length;
- no flood: a backend that is down fails every request. :class:`FailureLog`
  logs the first failure of each kind with its traceback, counts the others,
  and reports the count with the next failure logged in full, once the
  interval has passed: one traceback a minute, not one per request. A key
  that keeps failing for the same reason (its hash made with a pepper the app
  lacks) is logged by :class:`KeyWarnings` once per key and interval.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from ._keys import KEY_ID_LENGTH

__all__ = [
    "REDACTED",
    "FailureLog",
    "KeyWarnings",
    "failures",
    "key_pattern",
    "redact_key_shapes",
]

#: What a secret is replaced with.
REDACTED: Final = "[redacted]"

#: A separator of a key's parts: ``_``, or ``%5F`` when a client percent-encoded it.
KEY_SEPARATOR: Final = r"(?:_|%5[Ff])"


def key_pattern(prefix: str, environment: str) -> re.Pattern[str]:
    """A key whose prefix and environment match these patterns, however cut or lengthened.

    Group 1 is what may be logged: prefix, environment and the 12-character
    key_id. What follows is the secret and checksum, cut short or with more
    letters and digits after them, and any keys run on after it (a token
    pasted twice: the first secret swallows the second prefix, so the rest of
    that key follows as ``_live_<key_id>_<secret>``).
    """
    sep, key_id = KEY_SEPARATOR, f"[0-9A-Za-z]{{{KEY_ID_LENGTH}}}"
    return re.compile(
        rf"({prefix}{sep}{environment}{sep}{key_id}{sep})"
        rf"[0-9A-Za-z]+(?:{sep}{environment}{sep}{key_id}{sep}[0-9A-Za-z]+)*"
    )


# Any key of any KeyFormat.
_KEY_SHAPE: Final = key_pattern("[a-z][a-z0-9]{1,15}", "[a-z][a-z0-9]{0,15}")


def redact_key_shapes(text: str) -> str:
    """``text`` with the secret of anything shaped like a key of any format replaced.

    The prefix, environment and key_id stay: the key_id is public and says
    which key to rotate. Used on text keyguard logs although a client chose
    it (the path); it does not know the app's :class:`~keyguard.KeyFormat`, so
    it takes every prefix and environment.
    """
    if "_" not in text and "%5" not in text:
        return text
    return _KEY_SHAPE.sub(rf"\1{REDACTED}", text)


def _kind_of(exc: BaseException) -> str:
    """The exception's type and its causes': ``StorageError<-sqlalchemy.exc.OperationalError``."""
    names: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(names) < 8:
        cls = type(seen)
        module = cls.__module__
        if module == "builtins" or module.startswith("keyguard."):
            names.append(cls.__qualname__)
        else:
            names.append(f"{module}.{cls.__qualname__}")
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return "<-".join(names)


class _Window:
    __slots__ = ("count", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0


class FailureLog:
    """Logs repeated failures once per interval and kind, with a count of the rest.

    A *kind* is what failed (``what``) and the exception's type with the types
    of its causes, so a database that is down and a bug in a custom store (a
    ``TypeError``) are two kinds, each logged with its traceback; the message
    is not part of the kind (it may name a key or an address). Within ``interval``
    seconds of a kind's logged failure, further failures of that kind are only
    counted; the next one after the interval is logged in full again, preceded
    by one line with the count::

        key store lookup failed (StorageError<-sqlalchemy.exc.OperationalError<-
        psycopg.OperationalError): 1523 more failures of this kind in the last 61 s,
        not logged one by one

    The count is reported when the next failure of the kind arrives (no timer
    runs in the background), so after an outage ends the last count waits for
    the next failure of that kind.

    Args:
        logger: Where the failures are logged.
        interval: Seconds between two tracebacks of one kind.
        clock: Monotonic seconds (injected in tests).
        max_kinds: Kinds remembered at once; the oldest is forgotten first.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 64,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            raise ValueError(f"interval must be a number of seconds >= 0, got {interval!r}")
        if isinstance(max_kinds, bool) or not isinstance(max_kinds, int) or max_kinds < 1:
            raise ValueError(f"max_kinds must be a whole number of at least 1, got {max_kinds!r}")
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.max_kinds = max_kinds
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FailureLog({self.logger.name!r}, interval={self.interval})"

    def failed(
        self,
        what: str,
        key_id: str | None,
        exc: BaseException,
        *,
        level: int = logging.ERROR,
        with_traceback: bool = True,
    ) -> None:
        """Log the failure ``what`` (of a request for ``key_id``), or count it.

        Args:
            what: What failed, the same text for every failure of its kind
                (``"key store lookup failed"``); no secret, no client input.
            key_id: The key the request named, or None; public, and logged.
            exc: The exception; its traceback is logged once per interval.
            level: The level of both lines.
            with_traceback: Whether the logged failure carries the traceback.
        """
        if not self.logger.isEnabledFor(level):
            return
        kind = _kind_of(exc)
        now = self.clock()
        with self._lock:
            window = self._windows.get((what, kind))
            if window is not None and now - window.start < self.interval:
                window.count += 1
                return
            missed, since = (0, 0.0) if window is None else (window.count, now - window.start)
            self._windows[what, kind] = _Window(now)
            self._windows.move_to_end((what, kind))
            if len(self._windows) > self.max_kinds:
                self._windows.popitem(last=False)
        if missed:
            self.logger.log(
                level,
                "%s (%s): %d more failures of this kind in the last %d s, not logged one by one",
                what,
                kind,
                missed,
                round(since),
            )
        message = what if key_id is None else f"{what} for key %s"
        args = () if key_id is None else (key_id,)
        self.logger.log(
            level,
            message + " (%s); further failures of this kind in the next %d s are counted",
            *args,
            kind,
            round(self.interval),
            exc_info=exc if with_traceback else None,
        )

    def reset(self) -> None:
        """Forget every kind: the next failure of each is logged in full."""
        with self._lock:
            self._windows.clear()


class KeyWarnings:
    """Logs a warning about a key once per interval and kind, however many requests bring it.

    A key refused for a reason only the operator can fix (its stored hash was
    made with a pepper version the app lacks) is refused on every request that
    uses it; this logs the first, counts the others, and logs the next one
    after ``interval`` with that count. Memory is bounded: at most ``max_keys``
    (key, kind) pairs are remembered, the least recently logged forgotten
    first, in O(1); a forgotten key is simply logged again.

    Args:
        logger: Where the warnings go (at WARNING).
        interval: Seconds between two warnings about one key and kind.
        clock: Monotonic seconds (injected in tests).
        max_keys: (key, kind) pairs remembered at once.

    Raises:
        ValueError: ``interval`` is negative or ``max_keys`` below 1.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            raise ValueError(f"interval must be a number of seconds >= 0, got {interval!r}")
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be a whole number of at least 1, got {max_keys!r}")
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.max_keys = max_keys
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyWarnings({self.logger.name!r}, interval={self.interval})"

    def __len__(self) -> int:
        return len(self._windows)

    def warn(self, key_id: str, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` at WARNING, unless it was logged for this key and kind
        less than ``interval`` seconds ago (then count it); return whether it was logged.

        Args:
            key_id: The key (public, and logged as the message says).
            kind: What is wrong, the same text each time (``"missing pepper"``).
            message: A %-format with no secret in it or in ``args``.
            args: Its arguments.
        """
        if not self.logger.isEnabledFor(logging.WARNING):
            return False
        now = self.clock()
        with self._lock:
            window = self._windows.get((key_id, kind))
            if window is not None and now - window.start < self.interval:
                window.count += 1
                return False
            missed = 0 if window is None else window.count
            self._windows[key_id, kind] = _Window(now)
            self._windows.move_to_end((key_id, kind))
            if len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        if missed:
            message += "; %d more times since the last warning"
            args = (*args, missed)
        self.logger.warning(message, *args)
        return True

    def reset(self) -> None:
        """Forget every key: the next warning of each is logged."""
        with self._lock:
            self._windows.clear()


#: The failures of key-store lookups and other backends behind a request, on logger
#: ``keyguard``: one per process, as the logging configuration is.
failures: Final = FailureLog(logging.getLogger("keyguard"))
