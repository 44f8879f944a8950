"""MkDocs hooks of the documentation site (registered in mkdocs.yml).

- The command-line reference is generated from the ``keyguard`` command's own argparse
  parser (``keyguard.cli.build_parser()``) at build time: a page that holds the marker
  ``<!-- keyguard-cli-reference -->`` gets the ``--help`` of every command and subcommand
  there, so the reference cannot drift from the command.
- After the build, every HTML page is checked for stylesheets, scripts, images or fonts
  loaded from another site: the documentation must work offline and load nothing from a CDN.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

CLI_MARKER = "<!-- keyguard-cli-reference -->"
#: The width the help text is wrapped at, whatever terminal builds the site.
HELP_WIDTH = 88
_EXTERNAL_ASSET = re.compile(
    r"""<(?:link|script|img|source|iframe)\b[^>]*\b(?:href|src)=["']?(?:https?:)?//""",
    re.IGNORECASE,
)


@contextlib.contextmanager
def _plain_terminal() -> Iterator[None]:
    """A fixed width and no colours for argparse, restored afterwards."""
    wanted = {"COLUMNS": str(HELP_WIDTH), "NO_COLOR": "1", "PYTHON_COLORS": "0"}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser's subcommands in the order they were added, each once (aliases share one)."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:  # argparse has no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if all(sub is not seen for seen in found):
                    found.append(sub)
    return found


def cli_reference() -> str:
    """The Markdown reference of every command: a heading and the ``--help`` text of each."""
    try:
        from keyguard.cli import build_parser  # noqa: PLC0415 (only this page needs it)
    except ImportError as exc:
        raise PluginError(
            f"the CLI reference needs keyguard.cli.build_parser(), the function that builds "
            f"the keyguard command's ArgumentParser: {exc}"
        ) from exc
    sections: list[str] = []

    def add(parser: argparse.ArgumentParser, level: int) -> None:
        sections.append(f"{'#' * level} `{parser.prog}`\n\n```text\n{parser.format_help()}```\n")
        for sub in _subparsers(parser):
            add(sub, min(level + 1, 4))

    with _plain_terminal():
        add(build_parser(), 2)
    return "\n".join(sections)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Put the generated command-line reference where a page asks for it."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown


def on_post_build(config: Any, **kwargs: Any) -> None:
    """Fail the build when a page loads anything from another site."""
    offenders = []
    for page in sorted(Path(config["site_dir"]).rglob("*.html")):
        for match in _EXTERNAL_ASSET.finditer(page.read_text(encoding="utf-8")):
            offenders.append(f"{page.relative_to(config['site_dir'])}: {match.group(0)}")
    if offenders:
        raise PluginError(
            "the site must load nothing from other sites (no CDN, no web fonts):\n  "
            + "\n  ".join(offenders[:20])
        )
