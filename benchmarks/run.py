"""Run every ``benchmarks/bench_*.py`` in one process and print one table.

Usage: ``make bench`` (or ``python benchmarks/run.py [name-filter ...]``).
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import Row  # noqa: E402 (after the path is set)


def main(argv: list[str]) -> int:
    filters = argv[1:]
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if filters:
        modules = [m for m in modules if any(f in m for f in filters)]
    print(f"keyguard benchmarks: Python {platform.python_version()}, {platform.machine()}")
    print(f"{'group':<29} {'benchmark':<58} {'value':>12}  unit     note")
    for name in modules:
        module = importlib.import_module(name)
        row: Row
        for row in module.rows():
            print(
                f"{row.group:<29} {row.name:<58} {row.value:>12.2f}  {row.unit:<8} {row.note}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
