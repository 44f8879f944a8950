"""The ``keyguard.cli`` package: its import graph, each module on its own, help for everything."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyguard.cli
from keyguard.cli import build_parser

SRC = Path(keyguard.cli.__file__).resolve().parents[1]
CLI = SRC / "cli"
MODULES = sorted(f"keyguard.cli.{p.stem}" for p in CLI.glob("*.py") if p.stem != "__init__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, module: str, *, is_package: bool = False) -> Iterator[str]:
    """Every module ``source`` imports, at the top or inside a function, as absolute names.

    ``from . import _store`` imports the submodule ``_store``, not the package's own names.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [f"{base}.{alias.name}" for alias in node.names]
            submodules = [name for name in names if _exists(name)]
            yield from submodules if len(submodules) == len(names) else [base, *submodules]


def _exists(name: str) -> bool:
    relative = SRC.parent / Path(*name.split("."))
    return relative.with_suffix(".py").is_file() or (relative / "__init__.py").is_file()


def _graph_all() -> dict[str, set[str]]:
    """What each keyguard module imports, third-party modules included."""
    return {
        _module_name(path): set(
            _imports(path.read_text(), _module_name(path), is_package=path.stem == "__init__")
        )
        for path in sorted(SRC.rglob("*.py"))
    }


def _graph() -> dict[str, set[str]]:
    """What each keyguard module imports of keyguard."""
    return {
        module: {name for name in imported if _exists(name)}
        for module, imported in _graph_all().items()
    }


def _layers() -> list[str]:
    """The modules in the order the package docstring lists them, top to bottom."""
    doc = keyguard.cli.__doc__ or ""
    block = doc.split("::", 1)[1]
    return [f"keyguard.cli.{line.split()[0]}" for line in block.splitlines() if line.strip()]


def test_no_module_of_the_command_imports_the_package_itself() -> None:
    for module, imported in _graph().items():
        if module.startswith("keyguard.cli."):
            assert "keyguard.cli" not in imported, f"{module} imports keyguard.cli"


def test_the_library_does_not_depend_on_the_command() -> None:
    for module, imported in _graph().items():
        if module == "keyguard.cli" or module.startswith("keyguard.cli."):
            continue
        assert not any(n == "keyguard.cli" or n.startswith("keyguard.cli.") for n in imported), (
            module
        )


def test_only_the_demo_app_imports_a_web_framework() -> None:
    frameworks = {"starlette", "fastapi", "flask", "werkzeug", "django", "pydantic"}
    for module, imported in _graph_all().items():
        if module.startswith("keyguard.cli.") and module != "keyguard.cli._demo_app":
            used = {name.split(".")[0] for name in imported} & frameworks
            assert not used, f"{module} imports {used}"


def test_each_module_imports_only_those_listed_below_it() -> None:
    """The docstring's list is the import order, so the graph has no cycle."""
    layers = _layers()
    graph = _graph()
    modules = sorted(m for m in graph if m.startswith("keyguard.cli."))
    assert sorted(layers) == sorted(m for m in modules if not m.endswith("__main__"))
    for module in layers:
        for imported in graph[module]:
            if imported in layers:
                assert layers.index(imported) > layers.index(module), f"{module} -> {imported}"


def test_the_graph_check_sees_imports_inside_functions_and_of_the_package() -> None:
    source = "def f():\n    from . import _main\n    from .. import cli\n    from . import main\n"
    assert set(_imports(source, "keyguard.cli._x")) == {
        "keyguard.cli._main",
        "keyguard.cli",  # `from .. import cli`, and `from . import main` (a name, not a module)
    }


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _parsers(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[argparse.ArgumentParser, argparse.Action]]:
    for action in parser._actions:
        yield parser, action
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield parser, choice
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_command_and_option_has_help() -> None:
    """The documentation's command reference is generated from build_parser()."""
    seen = 0
    for parser, action in _parsers(build_parser()):
        seen += 1
        name = "/".join(action.option_strings) or action.dest or action.metavar
        assert action.help, f"{parser.prog}: {name} has no help"
    assert seen > 80


def test_every_command_is_reachable_and_has_a_handler() -> None:
    commands = {
        ("generate",),
        ("check",),
        ("hash",),
        ("db", "init"),
        *(("keys", c) for c in ("create", "list", "show", "revoke", "rotate", "import")),
        ("demo",),
    }
    parser = build_parser()
    for words in commands:
        sub = parser
        for word in words:
            action = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction))
            sub = action.choices[word]
        assert callable(sub.get_default("handler")), words
