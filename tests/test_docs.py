"""The documentation agrees with the code: links resolve, options and commands exist."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from keyguard import MiddlewareOptions
from keyguard.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def _option_rows() -> dict[str, str]:
    text = (ROOT / "docs" / "middleware.md").read_text()
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
    text = (ROOT / "docs" / "stores.md").read_text()
    block = text.split("## The command line", 1)[1].split("```", 2)[1]
    commands: list[str] = []
    for line in block.splitlines():
        if line.startswith("keyguard "):
            commands.append(line)
        elif line.strip() and commands:
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
