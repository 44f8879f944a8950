"""Rate-limit policies: how many requests, over what window, with what burst."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["Params", "Policy"]

# Rate-limit state is counted in integers that Redis's Lua (IEEE doubles) must hold exactly.
_MAX_EXACT = 2**50
_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SPEC_RE = re.compile(
    r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(second|minute|hour|day|s|m|h|d)s?\s*(?:;\s*burst=(\d+)\s*)?"
)
_UNITS = {
    "second": 1,
    "s": 1,
    "minute": 60,
    "m": 60,
    "hour": 3600,
    "h": 3600,
    "day": 86400,
    "d": 86400,
}


class Params(NamedTuple):
    """A policy as GCRA sees it (all integers); see :mod:`keyguard.ratelimit.gcra`."""

    name: str
    quota: int
    window_ms: int
    capacity: int
    """``burst * window_ms``: the largest backlog, in units of ``1/quota`` ms."""


@dataclass(frozen=True, slots=True)
class Policy:
    """A limit of ``quota`` requests per ``window`` seconds, admitting up to ``burst`` at once.

    The sustained rate is ``quota / window``; ``burst`` (default: ``quota``) is
    how many requests a client that has been idle may send back to back. It
    is a rate, not a counter reset at fixed times: in any span of ``d``
    seconds at most ``burst + d * quota / window`` requests pass, so with the
    default burst an idle client may use up to about twice the quota in its
    first window. See ``docs/rate-limiting.md``.

    Args:
        name: Shown to clients in the ``RateLimit`` headers: 1 to 64 characters
            of A-Z, a-z, 0-9 and ``_.:-``.
        quota: Requests per window, at least 1.
        window: Seconds, a whole number of milliseconds, at least 0.001.
        burst: Requests admitted back to back, at least 1; default ``quota``.

    Raises:
        ValueError: A value is out of range.
    """

    name: str
    quota: int
    window: float
    burst: int | None = None
    # Made once here, as every hit of every limiter needs them, and every limited
    # response the policy's RateLimit-Policy item and the start of its RateLimit item.
    _params: Params = field(init=False, repr=False, compare=False)
    _header_item: str = field(init=False, repr=False, compare=False)
    _state_prefix: str = field(init=False, repr=False, compare=False)
    _header_item_raw: bytes = field(init=False, repr=False, compare=False)
    _state_prefix_raw: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ValueError(
                f"policy name must be 1 to 64 characters of A-Z, a-z, 0-9 and _.:-, "
                f"got {self.name!r}"
            )
        if isinstance(self.quota, bool) or not isinstance(self.quota, int) or self.quota < 1:
            raise ValueError(
                f"policy quota must be a whole number of at least 1, got {self.quota!r}"
            )
        if (
            isinstance(self.window, bool)
            or not isinstance(self.window, int | float)
            or not (self.window > 0)
            or not math.isfinite(self.window)
        ):
            raise ValueError(
                f"policy window must be a positive number of seconds, got {self.window!r}"
            )
        if self.burst is not None and (
            isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1
        ):
            raise ValueError(
                f"policy burst must be a whole number of at least 1, got {self.burst!r}"
            )
        window_ms = self.window * 1000
        if abs(window_ms - round(window_ms)) > 1e-6 * window_ms or round(window_ms) < 1:
            raise ValueError(
                f"policy window must be a whole number of milliseconds (at least 0.001 s), "
                f"got {self.window!r}"
            )
        if self.effective_burst * round(window_ms) + self.quota > _MAX_EXACT:
            raise ValueError(
                f"policy {self.name!r} is too large to count exactly: burst x window must stay "
                f"below 2**50 request-milliseconds; lower the burst or the window"
            )
        capacity = self.effective_burst * self.window_ms
        object.__setattr__(self, "_params", Params(self.name, self.quota, self.window_ms, capacity))
        # Names are 1 to 64 of [A-Za-z0-9_.:-]: quoted as Structured Field Strings, no escapes.
        item = f'"{self.name}";q={self.quota}'
        if self.window_ms % 1000 == 0:
            item += f";w={self.window_ms // 1000}"
        object.__setattr__(self, "_header_item", item)
        object.__setattr__(self, "_state_prefix", f'"{self.name}";r=')
        object.__setattr__(self, "_header_item_raw", item.encode("ascii"))
        object.__setattr__(self, "_state_prefix_raw", self._state_prefix.encode("ascii"))

    @property
    def window_ms(self) -> int:
        """``window`` in whole milliseconds, the unit the limiters count in."""
        return round(self.window * 1000)

    @property
    def effective_burst(self) -> int:
        """``burst``, or ``quota`` when no burst was given."""
        return self.quota if self.burst is None else self.burst

    @classmethod
    def parse(cls, spec: str, *, name: str = "default", burst: int | None = None) -> Policy:
        """Read ``"<n>/second|minute|hour|day"`` (also ``"10/5minutes"``, ``"100/m"``, and the
        :meth:`to_spec` form ``"100/60s;burst=10"``).

        Raises:
            ValueError: ``spec`` is not of that form.
        """
        match = _SPEC_RE.fullmatch(spec)
        if match is None:
            raise ValueError(
                f"rate limit must look like '100/minute' (units: second, minute, hour, day), "
                f"got {spec!r}"
            )
        quota, count, unit, spec_burst = match.groups()
        window = _UNITS[unit] * (float(count) if count else 1.0)
        if burst is None and spec_burst is not None:
            burst = int(spec_burst)
        return cls(name=name, quota=int(quota), window=window, burst=burst)

    def to_spec(self) -> str:
        """A compact text form, ``"<quota>/<window>s"`` plus ``";burst=<n>"`` when set."""
        window = int(self.window) if float(self.window).is_integer() else self.window
        text = f"{self.quota}/{window}s"
        return text if self.burst is None else f"{text};burst={self.burst}"
