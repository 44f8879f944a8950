"""The documentation agrees with the code: links resolve, options, commands, environment
variables and tests it names exist, and the complete programs it shows run."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from keyguard import KeyManager, MiddlewareOptions
from keyguard.cli import build_parser
from keyguard.stores import MemoryKeyStore
from tests import readme_examples

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted(DOCS.rglob("*.md"))]
#: Pages with complete programs: the fenced blocks with a ``title="file.py"``.
PROGRAM_PAGES = [
    page for page in PAGES if any(b.title for b in readme_examples.python_blocks(page.read_text()))
]


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_relative_links_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def _option_rows() -> dict[str, str]:
    text = (DOCS / "reference" / "options.md").read_text()
    table = text.split("## Options (`MiddlewareOptions`)", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1]
    return rows


def test_every_middleware_option_is_documented_with_its_default() -> None:
    rows = _option_rows()
    fields = {f.name: f for f in dataclasses.fields(MiddlewareOptions) if f.init}
    assert set(rows) == set(fields)
    defaults = MiddlewareOptions()
    for name, documented in rows.items():
        if not documented.startswith("`"):
            continue  # prose, such as "the manager's"
        actual = repr(getattr(defaults, name)).replace("'", '"')
        if isinstance(getattr(defaults, name), frozenset):
            actual = "()" if not getattr(defaults, name) else actual
        assert documented.strip("`") == actual, name


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    for word in words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            break
        parser = actions[0].choices[word]
    return parser


def _documented_commands() -> list[str]:
    """The command lines of the first block under "The command line" of each page with one."""
    commands: list[str] = []
    for page in ("stores.md", "oauth.md"):
        text = (DOCS / page).read_text()
        block = text.split("## The command line", 1)[1].split("```", 2)[1]
        start = len(commands)
        for line in block.splitlines():
            if line.startswith("keyguard "):
                commands.append(line)
            elif line.strip() and len(commands) > start:
                commands[-1] += " " + line.strip()
    return commands


@pytest.mark.parametrize("command", _documented_commands())
def test_documented_command_lines_match_the_parser(command: str) -> None:
    words = shlex.split(command.replace("|", " "))[1:]
    path = [w for w in words if re.fullmatch(r"[a-z]+", w)][:2]
    parser = _subparser(build_parser(), path)
    assert parser.prog.split()[1:] == path, f"no command {' '.join(path)}"
    known = {s for action in parser._actions for s in action.option_strings}
    for option in re.findall(r"--[a-z-]+", command):
        assert option in known, f"{command}: {option} is not an option"


def test_every_environment_variable_is_documented() -> None:
    """Every ``KEYGUARD_*`` variable the package, the examples, the tests, the benchmarks or
    the build read has a row in the reference."""
    page = (DOCS / "reference" / "environment.md").read_text()
    documented = set(re.findall(r"^\| `(KEYGUARD_[A-Z_]+)`", page, re.MULTILINE))
    sources = [ROOT / "Makefile", ROOT / ".ci" / "run"]
    for folder in ("src", "examples", "tests", "benchmarks"):
        sources += sorted((ROOT / folder).rglob("*.py"))
    used = set()
    for source in sources:
        used |= set(re.findall(r"\bKEYGUARD_[A-Z][A-Z_]*[A-Z]\b", source.read_text()))
    assert used - documented == set(), "used but not in docs/reference/environment.md"
    assert documented - used == set(), "documented but read nowhere"


def test_every_test_the_docs_name_exists() -> None:
    """The security model names the tests that show each defence: they must exist."""
    named = {
        (path, name)
        for page in PAGES
        for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", page.read_text())
    }
    assert named, "the security model names no test"
    for path, name in sorted(named):
        source = (ROOT / path).read_text()
        assert re.search(rf"^\s*(?:async )?(?:def|class) {name}\b", source, re.MULTILINE), (
            f"{path}::{name} does not exist"
        )


@pytest.mark.parametrize("page", PROGRAM_PAGES, ids=_id)
def test_the_complete_programs_of_a_page_run(page: Path, tmp_path: Path) -> None:
    """A block with a ``title="app.py"`` is a whole file: it runs as its reader would run it
    (servers replaced by test clients and called, test modules run by pytest)."""
    pytest.importorskip("sqlalchemy")
    outcomes = readme_examples.run_page(page, tmp_path, titled_only=True)
    assert outcomes


def test_a_program_s_managers_are_closed_before_its_stores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A program names its store before its manager; the runner closes the manager first,
    which stops the last-used writer before the store goes: a store closed under a running
    writer leaves the connection the writer holds to the garbage collector, unclosed."""
    store = MemoryKeyStore()
    manager = KeyManager(store)
    closed: list[str] = []
    close_store, close_manager = store.close, manager.close

    def store_closes() -> None:
        closed.append("store")
        close_store()

    def manager_closes() -> None:
        closed.append("manager")
        close_manager()

    monkeypatch.setattr(store, "close", store_closes)
    monkeypatch.setattr(manager, "close", manager_closes)
    readme_examples._close_resources({"store": store, "manager": manager})
    assert closed[:2] == ["manager", "store"]
