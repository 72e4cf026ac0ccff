"""Work stealing: off on the schedulers rankdist starts, so that tiles run where their blocks are.

Tiles are placed by owner (``rankdist.tiles.placement``): each worker holds the blocks
of its own tiles and merges their partials where they lie. Dask's work stealing moves a
task queued on a busy worker to an idle one, which must then fetch the task's inputs:
two blocks of Z for a tile, the partials of a merge. With it on, a simulated 2.3 M-cell
run on 50 workers moved 44x the size of Z between workers, against the 12x that the
owner layout needs (docs/planning.md). Placement already shares the work out evenly
and, with ``allow_other_workers``, a lost worker's tasks still run elsewhere: Dask only
loses the chance to even out a slow worker at the end.

The embedded cluster and the batch-system clusters start their scheduler with
:data:`OWN_SCHEDULER`. A scheduler that rankdist joins by address keeps its own setting;
a run records which it had (``work_stealing`` in docs/results.md).
"""

from __future__ import annotations

import contextlib

import dask

#: Configuration of every scheduler rankdist starts itself.
OWN_SCHEDULER = {"distributed.scheduler.work-stealing": False}


def own_scheduler():
    """Context for starting a scheduler rankdist owns (the configuration is read at start)."""
    return dask.config.set(OWN_SCHEDULER)


def _has_stealing(dask_scheduler=None) -> bool:
    return "stealing" in dask_scheduler.extensions and (
        "stealing" in dask_scheduler.periodic_callbacks
    )


def steals(client) -> bool | None:
    """Whether the client's scheduler steals work (None: it would not say)."""
    with contextlib.suppress(Exception):  # e.g. a remote scheduler that refuses run_on_scheduler
        return bool(client.run_on_scheduler(_has_stealing))
    return None
