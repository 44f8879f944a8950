"""The pins of ``.ci/floors.txt`` are the floors that pyproject.toml declares for the extras.

``make test-floors`` installs the checkout with those pins as constraints and runs the suite:
a requirement without a pin, or a pin above its floor's release series, would leave a
declared floor untested.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# The suite's own runner, which the dev group installs at its newest.
UNPINNED = {"pytest"}


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found: dict[str, Requirement] = {}
    for requirements in project["optional-dependencies"].values():
        for text in requirements:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            if name != canonicalize_name(project["name"]):  # `all` and `demo` name extras
                found[name] = requirement
    return found


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        text = line.partition("#")[0].strip()
        if text:
            pin = Requirement(text)
            (specifier,) = pin.specifier
            assert specifier.operator == "==", f"{text!r} is not an exact pin"
            pins[canonicalize_name(pin.name)] = Version(specifier.version)
    return pins


REQUIREMENTS = _requirements()


def test_each_pin_is_a_requirement_of_an_extra() -> None:
    assert sorted(_pins()) == sorted(set(REQUIREMENTS) - UNPINNED)


@pytest.mark.parametrize("name", sorted(REQUIREMENTS))
def test_the_pin_is_the_requirements_floor(name: str) -> None:
    requirement = REQUIREMENTS[name]
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{requirement} must declare one floor (>=)"
    if name in UNPINNED:
        return
    pin = _pins()[name]
    assert requirement.specifier.contains(pin), f"{name}=={pin} is outside {requirement}"
    # The floor itself, or a later patch of it where the floor has no usable release.
    floor = floors[0]
    assert pin.release[: len(floor.release)] == floor.release, f"{name}=={pin} is above {floor}"
