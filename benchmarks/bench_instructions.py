"""Instructions per request of the ASGI stacks of ``bench_middleware``, counted by callgrind.

Timings on a shared machine move with whatever else runs on it; instruction
counts do not (the same interpreter, code and inputs give the same count
within a few hundred instructions). So this is the measure to compare two versions
of the hot path with. It is not time: the stacks differ in how many
instructions they run per cycle, and the targets are in microseconds.

Each stack serves 100 and then 1,100 requests in a fresh interpreter under
``valgrind --tool=callgrind``; the difference, over 1,000, is the count per
request. Opt in with ``KEYGUARD_BENCH_INSTRUCTIONS=1`` (two to three minutes
on two cores); needs valgrind. It is the guard against regressions of the hot path.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _harness import Row, callgrind_count

GROUP = "middleware (instr)"
CASES = (
    "bare",
    "keyguard",
    "keyguard+limiter",
    "keyguard+2policies",
    "keyguard+3policies",
    "starlette",
    "starlette+slowapi",
)


def _count(case: str, requests: int) -> int:
    return callgrind_count(str(Path(__file__).resolve()), case, requests)


def _per_request(case: str) -> float:
    return (_count(case, 1100) - _count(case, 100)) / 1000


def rows() -> Iterator[Row]:
    if os.environ.get("KEYGUARD_BENCH_INSTRUCTIONS") != "1":
        yield Row(GROUP, "skipped: set KEYGUARD_BENCH_INSTRUCTIONS=1 (about a minute)", 0.0, "")
        return
    if shutil.which("valgrind") is None:
        yield Row(GROUP, "skipped: valgrind is not installed", 0.0, "")
        return
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(zip(CASES, pool.map(_per_request, CASES), strict=True))
    bare = counts["bare"]
    unit = "instr"
    yield Row(GROUP, "bare Starlette app, one route", bare, unit)
    for case in CASES[1:]:
        yield Row(GROUP, f"overhead: {case}", counts[case] - bare, unit)
    full = counts["keyguard+limiter"] - bare
    for policies in (2, 3):
        yield Row(
            GROUP,
            f"ratio: {policies} policies / 1 policy (overhead)",
            (counts[f"keyguard+{policies}policies"] - bare) / full,
            unit="x",
            note="target <= 1.3",
        )
    yield Row(
        GROUP,
        "ratio: (Starlette auth + slowapi) / (keyguard auth + limiter)",
        (counts["starlette+slowapi"] - bare) / full,
        unit="x",
        note="target >= 10",
    )


def _serve(case: str, requests: int) -> None:
    from bench_middleware import BASE_SCOPE, REQUEST, _apps

    apps, common, with_key = _apps()
    app = apps[case]
    headers = common if case == "bare" else with_key

    async def receive() -> dict[str, Any]:
        return REQUEST

    async def send(message: dict[str, Any]) -> None:
        pass

    async def serve() -> None:
        for _ in range(requests):
            await app({**BASE_SCOPE, "headers": headers}, receive, send)

    asyncio.run(serve())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _serve(sys.argv[1], int(sys.argv[2]))
