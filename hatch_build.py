"""The guard of the compiled build: it is made on Python 3.11 only (docs/performance.md).

Runs with the mypyc hook (both are off until ``HATCH_BUILD_HOOKS_ENABLE=1``), before it.
On Python 3.12 and later, mypyc's code passes an exception on into the coroutine it
awaits with the three-argument ``throw()``, which warns there (mypyc/mypyc#1214).
"""

from __future__ import annotations

import sys
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CompiledBuildGuard(BuildHookInterface):  # type: ignore[type-arg]
    """Refuses to start the compiled build on a Python it is not made for."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if sys.version_info[:2] != (3, 11):
            raise RuntimeError(
                f"the compiled build of keyguard is made on Python 3.11 only, not "
                f"{sys.version_info[0]}.{sys.version_info[1]} (mypyc/mypyc#1214, see "
                f"docs/performance.md); build without HATCH_BUILD_HOOKS_ENABLE for the "
                f"pure-Python wheel"
            )
