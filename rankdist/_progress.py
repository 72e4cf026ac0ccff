"""Progress bars for long work (ingest chunks, encode blocks, tiles)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class _Bar:
    def __init__(self, progress, task):
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def describe(self, description: str) -> None:
        """Change the bar's label (say, what else the counted work is waiting for)."""
        if self._progress is not None:
            self._progress.update(self._task, description=description)


@contextlib.contextmanager
def bar(description: str, total: int, *, enabled: bool = True) -> Iterator[_Bar]:
    """A rich progress bar counting ``total`` units; a no-op when ``enabled`` is False."""
    if not enabled or not sys.stderr.isatty():  # bars only where a person watches
        yield _Bar(None, None)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task(description, total=total)
        yield _Bar(progress, task)
