"""A tiny timing harness: best-of-N medians in µs per operation, printed as one table.

Every benchmark module ``benchmarks/bench_*.py`` defines ``rows() -> Iterable[Row]``;
``benchmarks/run.py`` runs them all in one process so that alternatives are
measured side by side on the same machine, at the same moment.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Row", "median_difference", "time_async", "time_async_interleaved", "time_sync"]


@dataclass(frozen=True)
class Row:
    group: str
    name: str
    value: float
    unit: str = "µs/op"
    note: str = ""


def _autorange(run: Callable[[int], float], target: float = 0.05) -> int:
    number = 1
    while True:
        if run(number) >= target or number >= 1_000_000:
            return number
        number *= 4


def time_sync(fn: Callable[[], object], *, repeat: int = 7, number: int | None = None) -> float:
    """Median over ``repeat`` runs of the µs one call of ``fn`` takes."""

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - start

    fn()  # warm up
    n = number or _autorange(run)
    return statistics.median(run(n) / n for _ in range(repeat)) * 1e6


async def time_async(
    fn: Callable[[], Awaitable[object]], *, repeat: int = 7, number: int | None = None
) -> float:
    """Median over ``repeat`` runs of the µs one awaited call of ``fn`` takes."""

    async def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        return time.perf_counter() - start

    await fn()
    if number is None:
        number = 1
        while number < 1_000_000 and await run(number) < 0.05:
            number *= 4
    samples = [await run(number) / number for _ in range(repeat)]
    return statistics.median(samples) * 1e6


async def time_async_interleaved(
    fns: Mapping[str, Callable[[], Awaitable[object]]],
    *,
    rounds: int = 31,
    target: float = 0.01,
) -> dict[str, list[float]]:
    """µs per awaited call of each of ``fns``, sampled in ``rounds`` interleaved rounds.

    Each round times every function once, back to back, in a rotating order,
    so that a slower stretch of a shared machine falls on all of them alike
    instead of on whichever was being timed alone. Returns every function's
    samples, one per round, in round order (for :func:`median_difference`).
    """
    names = list(fns)

    async def run(fn: Callable[[], Awaitable[object]], n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        return time.perf_counter() - start

    numbers = {}
    for name, fn in fns.items():
        await fn()
        number = 1
        while number < 1_000_000 and await run(fn, number) < target:
            number *= 2
        numbers[name] = number
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            samples[name].append(await run(fns[name], numbers[name]) / numbers[name] * 1e6)
    return samples


def median_difference(samples: Sequence[float], baseline: Sequence[float]) -> float:
    """The median over rounds of ``sample - baseline``: the cost added, measured pairwise."""
    return statistics.median(a - b for a, b in zip(samples, baseline, strict=True))


_COLLECTED = re.compile(rb"Collected : (\d+)")


def callgrind_count(script: str, case: str, n: int) -> int:
    """Instructions callgrind counts for ``python script case n`` (a fresh interpreter)."""
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            script,
            case,
            str(n),
        ],
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = _COLLECTED.search(result.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count for {case}: {result.stderr[-300:]!r}")
    return int(found.group(1))
