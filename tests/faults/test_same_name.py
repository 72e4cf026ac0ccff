"""Two runs of the same name on one store at once, as separate processes.

The first ``rankdist neighbors`` is paused before its first tile (tests/faults/_hooks.py),
holding the run's lock; only then is the second started, so the overlap is certain. The
second exits at once naming the holder; with ``--wait`` it says that it waits, and
completes once the first is released and has finished.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading

from faults import _hooks
from faults._checks import NEIGHBORS_ARGS, same_result, stderr_lines
from faults._hooks import debris

import rankdist


def _rankdist(argv: list[str], **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rankdist.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _lines(stream) -> queue.Queue:
    """The lines of ``stream`` as they come (None at its end), read by a thread."""
    lines: queue.Queue = queue.Queue()

    def read():
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_a_second_run_of_the_same_name_exits_and_a_waiting_one_follows(
    fresh_store, clean, tmp_path
):
    store, hook = fresh_store.path, tmp_path / "hook"
    argv = ["neighbors", str(store), *NEIGHBORS_ARGS]
    first = _hooks.start(hook, _hooks.TILES, argv)
    holder = _hooks.wait_ready(hook, first)
    assert holder == first.pid
    host = os.uname().nodename

    second = _rankdist(argv)
    _, err = second.communicate(timeout=_hooks.DEADLINE_S)
    assert second.returncode == 2, err
    (line,) = stderr_lines(err)
    assert re.fullmatch(
        rf"rankdist neighbors: error: run 'spearman' in {re.escape(str(store))} is being "
        rf"written by another rankdist \(host {re.escape(host)}, pid {holder}, since [^)]+\); "
        r"wait for it to finish, pass --wait .*",
        line,
    ), line

    waiting = _rankdist([*argv, "--wait"])
    said = _lines(waiting.stderr)
    while True:  # until it says that it waits (a line it prints, not a time)
        line = said.get(timeout=_hooks.DEADLINE_S)
        assert line is not None, f"exit {waiting.wait()} before waiting"
        if line.startswith("rankdist: waiting"):
            break
    assert line.startswith(f"rankdist: waiting for run 'spearman': host {host}, pid {holder}, ")
    _hooks.release(hook)
    _, err = first.communicate(timeout=_hooks.DEADLINE_S)
    assert first.returncode == 0, err
    assert waiting.wait(timeout=_hooks.DEADLINE_S) == 0, list(iter(said.get, None))
    assert debris(store) == []  # no lock, no .spearman.partial
    assert same_result(rankdist.load(store, "spearman"), clean)
