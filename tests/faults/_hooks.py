"""Deterministic fault points: pause a rankdist function at its n-th call, then kill or release.

A test runs a ``rankdist`` command as a subprocess through :data:`DRIVER` (a ``python -c``
program): before the command starts, the driver wraps one function of rankdist so that
its ``n``-th call pauses, before or after the real call (:class:`Pause`), and every later
call pauses before it runs. The ``n``-th call writes ``ready`` (the process's pid) into a
folder; a paused call waits until ``go`` appears there. The test waits for ``ready``
(:func:`wait_ready`: polling a file, only to fail fast), then signals or releases the
command.

The command's cluster is the embedded default (worker threads in the command's process,
which therefore run the wrapper), with one thread: tasks run one at a time, so when the
pause is reached nothing else is in flight, and what the command has done by then (the
calls before the ``n``-th, and whatever they led to) does not depend on timing.

:func:`paused_merge` is such a pause for a merge task on worker processes (the command
run in the test's own process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rankdist.reduce.checkpoint import scan

#: Seconds a test waits for a pause point, and a paused call for ``go``: a limit to fail fast.
DEADLINE_S = 180


@dataclass(frozen=True)
class Pause:
    """Pause ``target`` (``'module:function'``) at its ``n``-th call, and every call after.

    ``when`` is where the ``n``-th call pauses: ``'before'`` (it has not run) or
    ``'after'`` (its effects, such as a written file, are on disk; its result is not yet
    returned). Later calls pause before they run.
    """

    target: str
    n: int = 1
    when: str = "before"


#: Where each stage of a run can be paused (the command's own process runs the workers).
INGEST = Pause("rankdist.io.ingest:_write_matrix")  # the temporary store exists, no X yet
ENCODE = Pause("rankdist.encode.cache:encode_chunk", when="after")  # a Z chunk is written
TILES = Pause("rankdist.tiles.scheduler:tile_partials")  # no tile has finished


def merged(n: int) -> Pause:
    """After the ``n``-th merge task has checkpointed its partial."""
    return Pause("rankdist.tiles.scheduler:merge_task", n, "after")


def written(n: int) -> Pause:
    """After the ``n``-th row block is written into the run and marked written."""
    return Pause("rankdist.tiles.scheduler:write_task", n, "after")


DRIVER = textwrap.dedent(
    """
    import functools, importlib, json, os, sys, threading, time
    from pathlib import Path

    spec = json.loads(sys.argv[1])
    folder, pause = Path(spec["folder"]), spec["pause"]
    module_name, name = pause["target"].split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    calls, lock = [0], threading.Lock()

    def wait_for_go(call):
        if call == pause["n"]:
            tmp = folder / f".ready-{os.getpid()}"
            tmp.write_text(str(os.getpid()))
            tmp.rename(folder / "ready")
        deadline = time.monotonic() + spec["deadline"]
        while not (folder / "go").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"test hook: no {folder / 'go'} after {spec['deadline']} s")
            time.sleep(0.02)

    @functools.wraps(original)
    def paused(*args, **kwargs):
        with lock:
            calls[0] += 1
            call = calls[0]
        if call > pause["n"] or (call == pause["n"] and pause["when"] == "before"):
            wait_for_go(call)
        out = original(*args, **kwargs)
        if call == pause["n"] and pause["when"] == "after":
            wait_for_go(call)
        return out

    setattr(module, name, paused)
    import rankdist.cluster.local
    rankdist.cluster.local.available_cores = lambda: 1  # one task at a time
    from rankdist.cli import main

    sys.exit(main(spec["argv"]))
    """
)


def start(folder: Path, pause: Pause, argv: list[str], **popen) -> subprocess.Popen:
    """Start ``rankdist ARGV`` in a new session, paused at ``pause`` (``folder``: ready/go)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"folder": str(folder), "pause": asdict(pause), "argv": argv, "deadline": DEADLINE_S}
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(spec)],
        start_new_session=True,  # so that killpg reaches the command and nothing else
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        **popen,
    )


def wait_ready(folder: Path, proc: subprocess.Popen | None = None) -> int:
    """Wait until the pause point is reached; the pid of the process paused there.

    Fails at once if ``proc`` ends first (its stderr in the message), and after
    :data:`DEADLINE_S` seconds.
    """
    ready = folder / "ready"
    deadline = time.monotonic() + DEADLINE_S
    while not ready.exists():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            msg = f"the command ended (exit {proc.returncode}) before its pause point: {err}"
            raise AssertionError(msg)
        if time.monotonic() > deadline:
            msg = f"pause point not reached in {DEADLINE_S} s ({ready} never appeared)"
            raise AssertionError(msg)
        time.sleep(0.02)
    return int(ready.read_text())


def release(folder: Path) -> None:
    """Let every paused call go on."""
    (folder / "go").touch()


def paused_merge(folder: str, n: int, ckpt_dir: str, *sources):
    """The real merge task, except that from its ``n``-th call on it pauses once it returns.

    For ``monkeypatch.setattr(scheduler, "merge_task", partial(paused_merge, folder, n))``
    in a test whose workers are other processes: calls are numbered across processes
    (files ``call-<i>`` created exclusively in ``folder``), the ``n``-th writes ``ready``
    (its worker's pid) after its merged partial is checkpointed, and every paused call
    waits for ``go``. The worker imports this module by name (``tests/`` is on the path
    that worker processes inherit) and its own, unpatched, ``merge_task``.
    """
    from rankdist.tiles import scheduler

    merged = scheduler.merge_task(ckpt_dir, *sources)
    folder = Path(folder)
    call = 1
    while True:
        try:
            os.close(os.open(folder / f"call-{call}", os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            call += 1
    if call == n:
        tmp = folder / f".ready-{os.getpid()}"
        tmp.write_text(str(os.getpid()))
        tmp.rename(folder / "ready")
    deadline = time.monotonic() + DEADLINE_S
    while call >= n and not (folder / "go").exists():
        if time.monotonic() > deadline:
            msg = f"test hook: no {folder / 'go'} after {DEADLINE_S} s"
            raise RuntimeError(msg)
        time.sleep(0.02)
    return merged


def debris(folder: Path) -> list[str]:
    """What an unfinished writer left under ``folder``, as paths relative to it, sorted.

    Hidden temporaries (``.NAME.tmp-*``, ``.NAME.old-*``), locks and their temporaries,
    run work directories (``.NAME.partial``), and zarr's own torn writes
    (``KEY.<uuid>.partial``).
    """
    marks = (".tmp-", ".lock", ".partial", ".old-", ".stale")
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if (p.name.startswith(".") and any(m in p.name for m in marks))
        or (not p.name.startswith(".") and p.name.endswith(".partial"))
    )


def durable_tiles(ckpt: Path, n_blocks: int) -> int:
    """Tiles of a run whose every side is on disk (a written block or a checkpoint).

    What a resumed run must not compute again (its ``tiles_resumed``).
    """
    state = scan(ckpt)
    covered = {b: state.covered(b) for b in range(n_blocks)}
    done = 0
    for i in range(n_blocks):
        for j in range(i, n_blocks):
            sides = [(i, "row")] + ([(i, "col")] if i == j else [(j, "col")])
            if all(b in state.written or (i, j, side) in covered[b] for b, side in sides):
                done += 1
    return done
