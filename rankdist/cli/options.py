"""Options several ``rankdist`` commands share, each written once, in parent parsers.

A command takes a group through ``parents=[...]``: :func:`store` (the store argument),
:func:`cluster` (``--cluster``, ``--workers``, ``--jobs``, ``--profile``, ``--insecure``,
``--security``),
:func:`neighbour` (``--encoding``, ``--k``, ``--cutoffs``, ``--block-size``) and
:func:`output` (``--quiet``, ``--overwrite``, ``--debug``). Choices come from the names the library
validates against (the encodings registry, :data:`rankdist.cluster.profile.SYSTEMS`), as
``--form``'s, in ``parser.py``, come from :data:`rankdist.tiles.sparse.FORMS`.
"""

from __future__ import annotations

import argparse
import sys

from rankdist.cluster.profile import SYSTEMS
from rankdist.encode.registry import ENCODINGS

#: An option: its flags and the keyword arguments of ``add_argument``.
Option = tuple[tuple[str, ...], dict]


def option(*flags: str, **kwargs) -> Option:
    """An option to add to a parent parser: ``add_argument``'s arguments, kept for later."""
    return flags, kwargs


def cutoffs(text: str) -> tuple[float, ...]:
    """``--cutoffs 0.3,0.5`` as a tuple of floats, at least one (as ``neighbors`` requires)."""
    try:
        values = tuple(float(c) for c in text.split(",") if c.strip())
    except ValueError:
        msg = f"--cutoffs takes comma-separated numbers like 0.3,0.5,0.7, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not values:
        msg = (
            f"--cutoffs needs at least one correlation cutoff, like 0.5 or 0.3,0.5,0.7, got "
            f"{text!r} (leave the option out for the default 0.5)"
        )
        raise argparse.ArgumentTypeError(msg)
    return values


def encoding_param(text: str) -> tuple[str, int | float | str]:
    """``NAME=VALUE`` with the value read as an int, else a float, else a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        msg = f"--param takes NAME=VALUE (e.g. top=4096), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    for cast in (int, float):
        try:
            return name, cast(value)
        except ValueError:
            continue
    return name, value


STORE = option("store", help="rankdist store directory (written by rankdist ingest)")

CLUSTER_OPTIONS = (
    option(
        "--cluster",
        default="local",
        metavar="WHERE",
        help="local (default: a LocalCluster on this machine), a running scheduler "
        f"tls://HOST:PORT (or plain tcp://), or a batch system: {', '.join(SYSTEMS)}",
    ),
    option(
        "--workers",
        type=int,
        metavar="N",
        help="local Dask workers: 1 (default) runs as threads in this process, using every core; "
        "N > 1 starts N worker processes",
    ),
    option(
        "--jobs",
        type=int,
        metavar="N",
        help="batch jobs to keep running, one node each as in deploy/*.yaml (default 1)",
    ),
    option(
        "--profile",
        metavar="PATH",
        help="dask-jobqueue YAML profile of the batch jobs, e.g. deploy/slurm.yaml",
    ),
    option(
        "--insecure",
        action="store_true",
        help="plain TCP without credentials for the cluster rankdist starts (local or a "
        "batch system), which anyone who reaches its ports can use to run code as you "
        "(default: TLS with credentials made for the run)",
    ),
    option(
        "--security",
        metavar="FILE",
        help="with --cluster tls://HOST:PORT: YAML file of Dask's TLS settings "
        "(distributed: comm: tls: ca-file, client: cert, key); default: Dask's configuration",
    ),
)

NEIGHBOUR_OPTIONS = (
    option(
        "--encoding",
        default="spearman",
        choices=tuple(ENCODINGS),
        metavar="NAME",
        help="how each cell's genes are encoded before correlating (default spearman; "
        "docs/encodings.md): " + "; ".join(f"{e.name}: {e.summary}" for e in ENCODINGS.values()),
    ),
    option("--k", type=int, default=30, help="neighbours per cell (default 30)"),
    option(
        "--cutoffs",
        type=cutoffs,
        default=(0.5,),
        metavar="C1,C2",
        help="correlation cutoffs to count relations at, e.g. 0.3,0.5,0.7 (default 0.5)",
    ),
    option(
        "--block-size",
        type=int,
        metavar="B",
        help="cells per block, a multiple of 512 (default: chosen from worker memory)",
    ),
)

OUTPUT_OPTIONS = (
    option(
        "--quiet",
        action="store_true",
        help="print no progress bar, nor the dashboard link of a cluster it starts, nor Dask's "
        "start-up warnings (a taken dashboard port)",
    ),
    option("--overwrite", action="store_true", help="replace the output if it exists"),
    option(
        "--debug",
        action="store_true",
        help="on an error, also print its traceback (default: one line naming the error)",
    ),
)


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option: it stores into the new option's dest and says so.

    ``add_argument("--nodes", dest="jobs", action=DeprecatedAlias, new="--jobs", ...)``
    keeps scripts that use the old spelling working; the new option's default applies
    when neither is given.
    """

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def store() -> argparse.ArgumentParser:
    """Parent parser: the store a command reads."""
    return parent((STORE,))


def cluster(*only: str) -> argparse.ArgumentParser:
    """Parent parser: where the work runs (the options named in ``only``, else all)."""
    return parent(CLUSTER_OPTIONS, "cluster options", only)


def neighbour() -> argparse.ArgumentParser:
    """Parent parser: what a neighbours run computes."""
    return parent(NEIGHBOUR_OPTIONS, "neighbour options")


def output(*only: str) -> argparse.ArgumentParser:
    """Parent parser: what a command prints and replaces (``only`` those named, else all)."""
    return parent(OUTPUT_OPTIONS, "output options", only)


def parent(
    options: tuple[Option, ...], title: str | None = None, only: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    """A parent parser with ``options`` (those named in ``only``, else all) under ``title``.

    Parents whose groups have the same title share one section of the command's help.
    """
    # A new parser per command: a parent's actions are shared with its children, so one
    # command's set_defaults would otherwise change another's.
    unknown = set(only) - {flags[0] for flags, _ in options}
    if unknown:
        msg = f"no shared option {sorted(unknown)} in the {title or 'store'} group"
        raise ValueError(msg)
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(title) if title else parent
    for flags, kwargs in options:
        if not only or flags[0] in only:
            group.add_argument(*flags, **kwargs)
    return parent
