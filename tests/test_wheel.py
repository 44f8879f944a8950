"""The wheel a release uploads, installed as a user installs it: in a fresh virtual
environment outside the repository, where nothing of the checkout can be imported.

The environment gets the wheel with the extras the README uses, and the dependencies at
the versions this checkout's environment has (pinned by a constraints file). Their wheels
are kept in a wheelhouse inside that environment, filled from the package index the first
time, so that later runs install offline in a few seconds.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import keyguard

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "keyguard-auth"
#: What the README's programs need beside the package: a server and (for the test
#: client that stands in for it) httpx; and what `keyguard demo` needs (its extra).
EXTRAS = "fastapi,flask,sql,demo"
ALSO = ("uvicorn", "httpx")
#: Wheels of the dependencies, kept with this checkout's environment between runs.
WHEELHOUSE = Path(sys.prefix) / "keyguard-wheelhouse"


@dataclass
class Installed:
    """A virtual environment with the wheel installed, and a directory outside the repo."""

    wheel: Path
    venv: Path
    home: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command of the environment in ``home``, with a user's clean environment."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KEYGUARD_", "PYTHON", "VIRTUAL_ENV", "PIP_"))
        }
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONNOUSERSITE"] = "1"
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.home,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _pip(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _constraints(path: Path) -> Path:
    """Pin every distribution of this environment (the checkout's own excepted)."""
    pins = sorted(
        {
            f"{dist.metadata['Name']}=={dist.version}"
            for dist in importlib.metadata.distributions()
            if dist.metadata["Name"]
            and dist.metadata["Name"].lower() not in (DISTRIBUTION, "pip", "setuptools")
        }
    )
    path.write_text("\n".join(pins) + "\n")
    return path


def _install(python: Path, wheel: Path, constraints: Path) -> None:
    requirements = [f"{wheel}[{EXTRAS}]", *ALSO]
    offline = [
        "--python",
        python,
        "install",
        "--quiet",
        "--no-compile",  # bytecode is written by the imports that need it, much quicker
        "--no-index",
        "--find-links",
        WHEELHOUSE,
        "-c",
        constraints,
        *requirements,
    ]
    if _pip(*offline).returncode == 0:
        return
    WHEELHOUSE.mkdir(exist_ok=True)
    fill = _pip("download", "--quiet", "-d", WHEELHOUSE, "-c", constraints, *requirements)
    assert fill.returncode == 0, f"filling {WHEELHOUSE} failed:\n{fill.stderr}"
    for copied in WHEELHOUSE.glob("keyguard_auth-*"):
        copied.unlink()  # the wheel under test is always the one just built
    done = _pip(*offline)
    assert done.returncode == 0, f"installing the wheel failed:\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    built = _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", dist, ROOT)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("keyguard_auth-*-py3-none-any.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    _install(venv / "bin" / "python", wheel, _constraints(base / "constraints.txt"))
    home = base / "home"
    home.mkdir()
    assert ROOT not in home.parents
    return Installed(wheel, venv, home)


def test_the_wheel_is_pure_python_and_carries_its_license(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(info).decode()
        licenses = [n for n in names if ".dist-info/licenses/" in n]
        assert [Path(n).name for n in licenses] == ["LICENSE"]
        assert "MIT License" in wheel.read(licenses[0]).decode()
    assert installed.wheel.name.endswith("-py3-none-any.whl")
    assert f"Name: {DISTRIBUTION}\n" in metadata
    assert "License-Expression: MIT\n" in metadata
    assert "Project-URL" not in metadata
    unconditional = [
        line
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert unconditional == [], "the base install must depend on nothing"
    assert "Provides-Extra: testing" in metadata
    assert "Provides-Extra: dev" not in metadata


def test_the_sdist_carries_the_license_and_the_same_metadata(tmp_path: Path) -> None:
    from hatchling.builders.sdist import SdistBuilder

    (sdist,) = (Path(p) for p in SdistBuilder(str(ROOT)).build(directory=str(tmp_path)))
    with tarfile.open(sdist) as archive:
        top = sdist.name.removesuffix(".tar.gz")
        names = archive.getnames()
        member = archive.extractfile(f"{top}/PKG-INFO")
        assert member is not None
        metadata = member.read().decode()
    assert f"{top}/LICENSE" in names
    assert f"Name: {DISTRIBUTION}\n" in metadata
    assert "License-File: LICENSE\n" in metadata
    assert "Project-URL" not in metadata


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    done = installed.run(
        installed.python,
        "-c",
        "import importlib.metadata, keyguard; "
        "print(keyguard.__file__); print(importlib.metadata.version('keyguard-auth'))",
    )
    assert done.returncode == 0, done.stderr
    location, version = done.stdout.split()
    assert Path(location).is_relative_to(installed.venv)
    assert version == keyguard.__version__


def test_the_installed_command_answers_help(installed: Installed) -> None:
    done = installed.run("keyguard", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: keyguard")
    for command in ("generate", "check", "keys", "clients", "oauth", "db", "demo"):
        assert command in done.stdout


def test_the_readme_examples_run_on_the_installed_wheel(installed: Installed) -> None:
    for name in ("README.md", "tests/readme_examples.py"):
        shutil.copy(ROOT / name, installed.home)
    done = installed.run(installed.python, "readme_examples.py", "README.md", "blocks", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    first, *ran = done.stdout.splitlines()
    assert str(installed.venv) in first, first  # the package came from the wheel
    served = [line for line in ran if "served and called" in line]
    assert len(served) == 2, done.stdout  # the FastAPI and the Flask example


def test_installed_wheel_version_and_demo_check(installed: Installed) -> None:
    """``keyguard --version`` and ``keyguard demo --check``, from the wheel alone: the demo
    app must ship inside the package, not in the repository's examples/."""
    version = installed.run("keyguard", "--version")
    assert version.returncode == 0, version.stderr
    assert keyguard.__version__ in version.stdout
    demo = installed.run("keyguard", "demo", "--check", "--port", "0", timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "access token (JWT)" in demo.stdout  # the token endpoint answered from the wheel
