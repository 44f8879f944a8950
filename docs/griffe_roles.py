"""A griffe extension for the API reference: Sphinx roles in docstrings become code.

keyguard's docstrings are Google style and name other objects with Sphinx roles
(``:class:`~keyguard.Principal```, ``:meth:`KeyStore.get```), which Markdown would show
as they are written. Each role becomes inline code of the name it points at (``~`` keeps
the last part only, as in Sphinx). They are not turned into links: a link to an object
the reference does not show would be a warning, and so a failed build.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|data|exc|obj|const):`([^`]+)`")


def _name(target: str) -> str:
    target = target.strip()
    if target.startswith("~"):
        return target[1:].rsplit(".", 1)[-1]
    return target.lstrip(".")


def plain_roles(text: str) -> str:
    """``text`` with every Sphinx role replaced by inline code of its target's name."""
    return _ROLE.sub(lambda match: f"`{_name(match.group(1))}`", text)


class SphinxRolesAsCode(griffe.Extension):
    """Rewrites the docstring of every object the reference loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """The top-level package itself, which ``on_object`` does not see."""
        self.on_object(obj=pkg)
