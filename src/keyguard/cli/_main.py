"""The entry point: parse the arguments, run the command, turn failures into one line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from .._errors import KeyguardError
from ._command import EXIT_ERROR, Command, CommandError
from ._parser import build_parser
from ._tokens import hide_secrets

__all__ = ["main"]


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run the command line; return the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    given = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(given)
    handler: Command = args.handler
    try:
        return handler(args, out, err, stdin or sys.stdin)
    except (CommandError, KeyguardError) as exc:
        # Commands never put a token in a message; this catches what they did not write.
        err.write(f"keyguard: error: {hide_secrets(str(exc), given)}\n")
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`keyguard keys list | head`): not an error worth a traceback.
        return 0
