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
* ``verify``: check every chunk of a store against its checksum; ``--repair`` removes
  what can be recomputed;
* ``demo``: synthetic labelled data, neighbours and a purity table.

``parser.py`` builds the parser, one small function per command, from the shared option
groups of ``options.py``; ``commands.py`` holds what each command runs.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import traceback
import warnings

from rankdist.cli.commands import COMMANDS
from rankdist.cli.parser import build_parser

__all__ = ["COMMANDS", "build_parser", "main"]

ERRORS = (ValueError, KeyError, FileExistsError, FileNotFoundError, ConnectionError, OSError)

#: Exit codes of a command stopped by Ctrl-C (SIGINT) or SIGTERM: 128 + the signal number.
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM


def main(argv: list[str] | None = None) -> int:
    """Run ``rankdist`` with ``argv`` (default: the process's arguments); the exit code.

    An error a user can fix (a missing file, a bad value, a full disk, a permission
    denied, a Dask scheduler unreachable or lost) is printed as
    ``rankdist COMMAND: error: ...`` and gives exit code 2, as argparse's own errors do.
    Any other error, such as one a Dask task raised, is printed the same way with its
    type's name and gives exit code 1. ``--debug`` also prints the traceback. A warning
    is one line, ``rankdist COMMAND: warning: ...``, when it is raised.

    SIGTERM (a batch system's kill, ``kill PID``) is handled as Ctrl-C: the command is
    interrupted, its temporary outputs are removed, and it exits with 143 (130 for
    Ctrl-C) after one line on stderr.
    """
    args = build_parser().parse_args(argv)
    terminated = []
    with warnings.catch_warnings(), _sigterm_as_interrupt(terminated):
        warnings.showwarning = _one_line_warning(args.command)
        try:
            return COMMANDS[args.command](args)
        except KeyboardInterrupt:
            if getattr(args, "debug", False):
                traceback.print_exc()
            how = "terminated (SIGTERM)" if terminated else "interrupted"
            print(
                f"rankdist {args.command}: {how}; its unfinished outputs were removed",
                file=sys.stderr,
            )
            return EXIT_SIGTERM if terminated else EXIT_SIGINT
        except Exception as err:
            if getattr(args, "debug", False):
                traceback.print_exc()
            print(f"rankdist {args.command}: error: {_one_line(err)}", file=sys.stderr)
            return 2 if isinstance(err, ERRORS) else 1


@contextlib.contextmanager
def _sigterm_as_interrupt(terminated: list):
    """While the body runs, SIGTERM raises KeyboardInterrupt (appending to ``terminated``).

    So the context managers that clean up after Ctrl-C (atomic outputs, run locks,
    clusters) do the same after SIGTERM. The previous handler is restored after. Outside
    the main thread (where handlers cannot be set) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    dask_log = logging.getLogger("distributed")
    dask_level = dask_log.level

    def interrupt(signum, frame):
        terminated.append(signum)
        # The cluster is closed with tasks still running: Dask's warnings about tasks it
        # cancels are not news to whoever sent SIGTERM, and would be lines beyond our one.
        dask_log.setLevel(logging.ERROR)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        dask_log.setLevel(dask_level)


def _one_line(err: Exception) -> str:
    """The message of ``err`` as the CLI prints it; other than ERRORS, with the type's name."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    if isinstance(err, PermissionError) and err.filename is not None:
        return (
            f"{err.filename}: {err.strerror or 'permission denied'}; check its owner and "
            f"permissions (ls -ld {err.filename}) or use a path you may read and write"
        )
    if isinstance(err, ERRORS):
        return str(err)
    text = str(err) or "(no message)"
    return f"{type(err).__name__}: {text} (rerun with --debug for the traceback)"


def _one_line_warning(command: str):
    """A ``warnings.showwarning`` that prints ``rankdist COMMAND: warning: MESSAGE``."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"rankdist {command}: warning: {message}", file=file or sys.stderr, flush=True)

    return show
