"""docs/oauth.md documents every option of the OAuth classes."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from keyguard.oauth import AuthorizationServer, JWTVerifier, RemoteJWKS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "oauth.md"


def _table(heading: str) -> set[str]:
    text = PAGE.read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))


@pytest.mark.parametrize(
    ("cls", "heading"),
    [
        pytest.param(AuthorizationServer, "### `AuthorizationServer` options", id="server"),
        pytest.param(JWTVerifier, "### `JWTVerifier` options", id="verifier"),
        pytest.param(RemoteJWKS, "### `RemoteJWKS` options", id="remote"),
    ],
)
def test_every_option_is_in_its_table(cls: type, heading: str) -> None:
    parameters = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert _table(heading) == parameters
