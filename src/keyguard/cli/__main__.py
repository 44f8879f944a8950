"""``python -m keyguard.cli``: the ``keyguard`` command."""

from keyguard.cli._main import main

if __name__ == "__main__":
    raise SystemExit(main())
