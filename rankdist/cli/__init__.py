"""The ``rankdist`` command: ingest, neighbors, export, info, demo."""

from __future__ import annotations

import sys

from rankdist.cli.commands import COMMANDS
from rankdist.cli.parser import build_parser

__all__ = ["COMMANDS", "build_parser", "main"]

ERRORS = (ValueError, KeyError, FileExistsError, FileNotFoundError, ConnectionError, OSError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ERRORS as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"rankdist {args.command}: error: {text}", file=sys.stderr)
        return 2
