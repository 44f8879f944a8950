"""A tiny timing harness: best-of-N medians in µs per operation, printed as one table.

Every benchmark module ``benchmarks/bench_*.py`` defines ``rows() -> Iterable[Row]``;
``benchmarks/run.py`` runs them all in one process so that alternatives are
measured side by side on the same machine, at the same moment.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Row", "time_async", "time_sync"]


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
