"""One writer per run: ``results/.<run>.lock`` holds the host and pid of the run writing it.

The lock file is made complete under a private name and hard-linked into place, which
fails if it exists (as ``O_EXCL`` would), so a reader never sees a half-written lock. A
lock whose pid is dead on this host is stale (its run was killed) and is taken over.
The private names carry host and pid (``.<run>.lock.<host>.<pid>.tmp``, and
``.<run>.lock.<host>.<pid>.stale`` while a stale lock is set aside): a process killed
between two steps leaves them, and the next :func:`hold` of the same run removes those
of dead processes on this host, with the run's own set-aside debris
(:func:`rankdist.io.atomic.remove_stale_siblings`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rankdist.io.atomic import dead_owners, remove_path, remove_stale_siblings

#: Seconds between two looks at a held lock, with ``wait``.
POLL_S = 1.0


class RunLockedError(FileExistsError):
    """Another process is writing the run of the same name in the same store."""


def lock_path(store_path: str | os.PathLike, name: str) -> Path:
    """The lock file of run ``name`` (hidden, so never listed as a run)."""
    return Path(store_path) / "results" / f".{name}.lock"


@contextlib.contextmanager
def hold(store_path: str | os.PathLike, name: str, *, wait: bool = False) -> Iterator[Path]:
    """Hold the lock of run ``name`` for the ``with`` block; remove it at the end.

    Parameters
    ----------
    store_path
        The store's directory.
    name
        The run's name.
    wait
        If the lock is held by a live process, wait for it (printing once that it waits)
        instead of raising.

    Raises
    ------
    RunLockedError
        Without ``wait``, if another live process holds the lock.
    PermissionError
        The store's ``results/`` cannot be written; the message names the store.
    """
    path = lock_path(store_path, name)
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_debris(store_path, name)
        created = _create(path, mine)
    except PermissionError as err:
        msg = (
            f"cannot write run {name!r} into the store {store_path}: {err.strerror} on "
            f"{err.filename}; a run writes its results (and its encoding) into the store: run "
            "as a user who may write there, or copy the store (cp -r) and run on the copy"
        )
        raise PermissionError(msg) from err
    said = False
    while not created and not _create(path, mine):
        holder = _read(path)
        if holder is None:
            continue  # released between our attempt and our look
        if _is_stale(holder):
            if _take_over(path, holder):
                print(
                    f"rankdist: taking over the stale lock of run {name!r} ({_describe(holder)}, "
                    "no longer running)",
                    file=sys.stderr,
                )
            continue
        if not wait:
            raise RunLockedError(_held_message(store_path, name, holder))
        if not said:
            print(f"rankdist: waiting for run {name!r}: {_describe(holder)}", file=sys.stderr)
            said = True
        time.sleep(POLL_S)
    try:
        yield path
    finally:
        if _read(path) == mine:
            path.unlink(missing_ok=True)


def check_free(store_path: str | os.PathLike, name: str) -> None:
    """Raise :class:`RunLockedError` now if a live process holds run ``name``'s lock.

    A cheap look before a cluster starts; :func:`hold` takes the lock itself.
    """
    holder = _read(lock_path(store_path, name))
    if holder is not None and not _is_stale(holder):
        raise RunLockedError(_held_message(store_path, name, holder))


def remove_debris(store_path: str | os.PathLike, name: str) -> list[Path]:
    """Remove what killed processes on this host left of run ``name``'s lock and publishing.

    The lock's private files (``.<run>.lock.<host>.<pid>.tmp`` / ``.stale``) and the run's
    ``.<run>.old-*`` / ``.<run>.tmp-*`` siblings of dead processes; never the lock itself
    (a stale lock is taken over, with a message, by :func:`hold`) nor the run's work
    directory, from which it resumes.

    Returns
    -------
    list of pathlib.Path
        The paths removed.
    """
    path = lock_path(store_path, name)
    pattern = re.compile(rf"{re.escape(path.name)}\.(?P<host>.+)\.(?P<pid>\d+)\.(tmp|stale)")
    removed = dead_owners(path.parent, pattern)
    for debris in removed:
        remove_path(debris)
    return removed + remove_stale_siblings(path.parent / name)


def _held_message(store_path, name: str, holder: dict) -> str:
    return (
        f"run {name!r} in {store_path} is being written by another rankdist "
        f"({_describe(holder)}); wait for it to finish, pass --wait (wait=True) to wait, "
        f"or choose another --name. If that process is gone, remove {lock_path(store_path, name)}"
    )


def _describe(holder: dict) -> str:
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _create(path: Path, content: dict) -> bool:
    """Create the lock with ``content`` atomically; False if it exists."""
    tmp = path.with_name(f"{path.name}.{content['host']}.{content['pid']}.tmp")
    tmp.write_text(json.dumps(content))
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _read(path: Path) -> dict | None:
    """The lock's content; None if there is no lock. An unreadable lock reads as ``{}``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _is_stale(holder: dict) -> bool:
    """Whether the lock's process is dead on this host (elsewhere, it cannot be told)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _take_over(path: Path, stale: dict) -> bool:
    """Remove the stale lock ``stale``, unless another process replaced it meanwhile."""
    aside = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if _read(aside) != stale:  # a fresh lock, not the stale one: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink()
        return False
    aside.unlink()
    return True
