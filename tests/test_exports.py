from __future__ import annotations

import keyguard
import keyguard.ratelimit
import keyguard.stores


def _isort_style(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then the rest."""
    if name.isupper():
        return (0, name)
    return (1, name) if name[0].isupper() else (2, name)


def test_all_is_sorted_and_complete() -> None:
    for module in (keyguard, keyguard.stores, keyguard.ratelimit):
        names = module.__all__
        assert names == sorted(names, key=_isort_style), f"{module.__name__}.__all__ unsorted"
        assert len(set(names)) == len(names)
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name} is missing"
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not isinstance(value, type(keyguard))
            and getattr(value, "__module__", module.__name__).startswith("keyguard")
        }
        assert public <= set(names) | {"annotations"}, public - set(names)


def test_version() -> None:
    from importlib.metadata import version

    assert keyguard.__version__ == version("keyguard")
