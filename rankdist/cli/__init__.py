"""The ``rankdist`` command line.

Commands (:data:`COMMANDS`; ``rankdist COMMAND --help`` for each one's options):

* ``ingest``: stream one or several datasets into a rankdist store;
* ``neighbors``: exact top-k neighbours and cutoff counts of every cell of a store;
* ``export``: write a run as AnnData for scanpy and scib-metrics;
* ``info``: describe a store and its runs;
* ``doctor``: show how ``--cluster`` would run (job script, addresses, SSH tunnel);
* ``report``: tables, figures and one HTML page of a store's runs;
* ``synth``: generate a synthetic prefrontal-cortex atlas (store or .h5ad);
* ``plan``: size a run (block size, wall time, storage) and print the command for it;
* ``demo``: synthetic labelled data, neighbours and a purity table.

``parser.py`` builds the parser, one small function per command, from the shared option
groups of ``options.py``; ``commands.py`` holds what each command runs.
"""

from __future__ import annotations

import sys
import traceback
import warnings

from rankdist.cli.commands import COMMANDS
from rankdist.cli.parser import build_parser

__all__ = ["COMMANDS", "build_parser", "main"]

ERRORS = (ValueError, KeyError, FileExistsError, FileNotFoundError, ConnectionError, OSError)


def main(argv: list[str] | None = None) -> int:
    """Run ``rankdist`` with ``argv`` (default: the process's arguments); the exit code.

    An error a user can fix (a missing file, a bad value, a full disk) is printed as
    ``rankdist COMMAND: error: ...`` and gives exit code 2, as argparse's own errors do.
    Any other error, such as one a Dask task raised, is printed the same way with its
    type's name and gives exit code 1. ``--debug`` also prints the traceback. A warning
    is one line, ``rankdist COMMAND: warning: ...``, when it is raised.
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restores showwarning after the command
        warnings.showwarning = _one_line_warning(args.command)
        try:
            return COMMANDS[args.command](args)
        except Exception as err:
            if getattr(args, "debug", False):
                traceback.print_exc()
            print(f"rankdist {args.command}: error: {_one_line(err)}", file=sys.stderr)
            return 2 if isinstance(err, ERRORS) else 1


def _one_line(err: Exception) -> str:
    """The message of ``err`` as the CLI prints it; other than ERRORS, with the type's name."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    if isinstance(err, ERRORS):
        return str(err)
    text = str(err) or "(no message)"
    return f"{type(err).__name__}: {text} (rerun with --debug for the traceback)"


def _one_line_warning(command: str):
    """A ``warnings.showwarning`` that prints ``rankdist COMMAND: warning: MESSAGE``."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"rankdist {command}: warning: {message}", file=file or sys.stderr, flush=True)

    return show
