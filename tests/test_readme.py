"""README.md, the page of the package on PyPI and of the repository: its programs run as
pasted, and it has no link that only works in the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import readme_examples
from tests.readme_examples import Block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = readme_examples.python_blocks(README.read_text())


def test_the_install_line_is_near_the_top() -> None:
    top = README.read_text().splitlines()[:12]
    assert "pip install 'keyguard-auth[fastapi,sql]'" in top


def test_it_names_the_distribution_and_the_package_that_clashes_with_it() -> None:
    text = README.read_text()
    assert "`keyguard-auth`" in text
    assert "`keyguard-python`" in text


def test_every_link_works_on_the_package_page_too() -> None:
    """PyPI shows the README without the repository around it: a relative link is dead there."""
    targets = re.findall(r"\]\(([^)]+)\)", README.read_text())
    targets += re.findall(r"^\[[^\]]+\]:\s*(\S+)", README.read_text(), re.MULTILINE)
    relative = [t for t in targets if "://" not in t]
    assert relative == []


def test_the_examples_start_their_server_only_when_run_as_a_program() -> None:
    served = [b.code for b in BLOCKS if 'if __name__ == "__main__":' in b.code]
    fastapi = [c for c in served if "from fastapi import" in c and "uvicorn.run(app" in c]
    flask = [c for c in served if "from flask import" in c and "app.run(" in c]
    assert len(fastapi) == 1
    assert len(flask) == 1
    for code in served:
        main = code.split('if __name__ == "__main__":', 1)[1]
        assert all(line.startswith("    ") for line in main.strip("\n").splitlines() if line)
        assert "create_schema()" in code, "with SQLite the table must exist before a request"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"line{b.line}")
def test_every_python_block_runs(block: Block, tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    outcome = readme_examples.run_block(block, tmp_path)
    if 'if __name__ == "__main__":' in block.code:
        assert len(outcome.served) == 1, "the program must start its server when run"
        assert outcome.statuses["over the limit"] == 429


def test_the_blocks_are_formatted(tmp_path: Path) -> None:
    for block in BLOCKS:
        (tmp_path / f"line{block.line}.py").write_text(block.code)
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run(
        [str(ruff), "format", "--diff", "--line-length", "100", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
