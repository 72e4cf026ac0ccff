"""Atomic outputs: a file or directory appears complete under its name, or not at all.

What is written goes under a hidden temporary sibling of the target,
``.NAME.tmp-<host>-<pid>-<uuid8>``, and is renamed into place on success; a failure
removes it. A directory being replaced is first renamed aside to
``.NAME.old-<host>-<pid>-<uuid8>`` and deleted after. A process killed outright (SIGKILL,
a lost node) cannot remove its own: the next :func:`atomic_directory` or
:func:`atomic_file` for the same target removes the siblings whose process is dead on
this host (never another host's, never a live process's); an ``old`` one whose target is
missing (the kill fell between the two renames) is renamed back instead, being then the
only copy.

A write that finds the disk full (or the quota spent) raises an OSError that names no
file; raised out of these helpers, it names the target (:func:`naming_path`), so the
one-line message says where.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

#: The errors a write raises without naming its file: no space, no quota left, file too
#: large. (Not EIO, which a read raises too: naming the target would mislead.)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that becomes ``final`` only on success.

    Readers never see a half-written ``final``: it appears by one ``rename`` after the
    body returns. If the body raises, the temporary directory is removed and ``final`` is
    untouched. With ``replace=True`` an existing ``final`` is swapped out (rename away,
    rename in, then delete the old one); otherwise an existing ``final`` is an error.
    """
    final = Path(final)
    remove_stale_siblings(final)  # first: it may put back a ``final`` a kill left aside
    if final.exists() and not replace:
        msg = f"{final} already exists; choose another path or remove it first"
        raise FileExistsError(msg)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(final)
    tmp.mkdir()
    try:
        with naming_path(final):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_directory(tmp, final)


@contextlib.contextmanager
def atomic_file(
    final: str | os.PathLike, *, mode: str | None = None, fsync: bool = False
) -> Iterator:
    """Write a file under a temporary sibling name that becomes ``final`` only on success.

    The file counterpart of :func:`atomic_directory`. The temporary file is hidden
    (``.<name>.tmp-<host>-<pid>-<uuid8>``) and unique to the call, so two writers of one
    target never write into each other's file; the last one to finish wins. If the body (or the
    rename) raises, the temporary file is removed and ``final`` is untouched; on success
    it replaces ``final`` by one :func:`os.replace`, so readers see the complete old or
    the complete new file.

    Parameters
    ----------
    final
        The file to write, in an existing directory. An existing file is replaced
        (callers that must refuse to overwrite check before).
    mode
        ``None``: yield the temporary path, for a writer that opens the file itself
        (h5py, another process). ``'w'`` (UTF-8 text) or ``'wb'``: yield the open
        file object, closed before the rename.
    fsync
        Flush the file's data to disk before the rename, so that after a crash
        ``final`` holds the new content or the old, never a torn file.

    Yields
    ------
    pathlib.Path or file object
        What the body writes to, as ``mode`` says.
    """
    if mode not in (None, "w", "wb"):
        msg = f"atomic_file mode {mode!r}: choose None (yield the path), 'w' (text) or 'wb'"
        raise ValueError(msg)
    final = Path(final)
    remove_stale_siblings(final)
    tmp = _temporary_sibling(final)
    try:
        if mode is None:
            yield tmp
            if not tmp.is_file():
                msg = (
                    f"nothing was written for {final}: the body of atomic_file must create "
                    f"the file at the path it yields ({tmp.name})"
                )
                raise FileNotFoundError(msg)
            if fsync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        else:
            # "x": the name is fresh; never write into a file another writer opened
            text = {"encoding": "utf-8"} if mode == "w" else {}
            with open(tmp, mode.replace("w", "x"), **text) as fh:
                yield fh
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        named = _named_write_error(err, final)
        if named is None:
            raise
        raise named from err


@contextlib.contextmanager
def naming_path(path: str | os.PathLike) -> Iterator[None]:
    """Within the block, a write error that names no file is raised naming ``path``.

    The kernel's ENOSPC (EDQUOT, EFBIG) from a ``write`` carries no file name, and
    HDF5 wraps it in a multi-line account of the failed call. Such an error leaves the
    block as ``OSError: [Errno 28] No space left on device: 'PATH'``, caused by the
    original; any other error leaves it unchanged.
    """
    try:
        yield
    except OSError as err:
        named = _named_write_error(err, path)
        if named is None:
            raise
        raise named from err


def _named_write_error(err: BaseException, path: str | os.PathLike) -> OSError | None:
    """``err`` as an OSError naming ``path``; None if it is no write error without a name."""
    if not isinstance(err, OSError) or err.errno not in WRITE_ERRNOS or err.filename:
        return None
    return OSError(err.errno, os.strerror(err.errno), str(path))


def _temporary_sibling(final: Path, kind: str = "tmp") -> Path:
    """A fresh hidden name beside ``final``: ``kind`` 'tmp' (being written) or 'old'.

    The name carries this host and process, so that debris of a killed writer can be told
    from the work of a live one: ``.NAME.<kind>-<host>-<pid>-<uuid8>``.
    """
    tag = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return final.parent / f".{final.name}.{kind}-{tag}"


def remove_stale_siblings(final: str | os.PathLike) -> list[Path]:
    """Remove the temporary and set-aside siblings of ``final`` that a dead process left.

    Only names of the form ``.NAME.tmp-<host>-<pid>-<uuid8>`` and
    ``.NAME.old-<host>-<pid>-<uuid8>`` for this very ``final`` are considered, and only
    when ``<host>`` is this host and no process ``<pid>`` runs. Another host's (its
    process cannot be checked from here) and a live process's are kept, as is any other
    name. If ``final`` is missing, a dead process's ``old`` sibling is the complete previous
    ``final`` (the kill fell between :func:`publish_directory`'s two renames): it is renamed
    back to ``final`` rather than removed.

    Returns
    -------
    list of pathlib.Path
        The paths removed (not one renamed back).
    """
    final = Path(final)
    pattern = re.compile(
        rf"\.{re.escape(final.name)}\.(?P<kind>tmp|old)-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{{8}}"
    )
    dead = dead_owners(final.parent, pattern)
    olds = sorted(p for p in dead if pattern.fullmatch(p.name)["kind"] == "old")
    if olds and not os.path.lexists(final):
        dead.remove(olds[0])  # kept, even if it cannot be renamed back
        with contextlib.suppress(OSError):
            os.rename(olds[0], final)
    for path in dead:
        remove_path(path)
    return dead


def dead_owners(folder: str | os.PathLike, pattern: re.Pattern) -> list[Path]:
    """Entries of ``folder`` named by ``pattern`` for a process dead on this host.

    Parameters
    ----------
    folder
        Where to look; a missing or unreadable folder has none.
    pattern
        Matched against whole names; its groups ``host`` and ``pid`` name the owner.

    Returns
    -------
    list of pathlib.Path
        The matching entries whose ``host`` is this host and whose ``pid`` runs no process,
        sorted by name.
    """
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:  # a missing or unreadable folder: the caller reports it
        return []
    host = socket.gethostname()
    found = []
    for path in entries:
        m = pattern.fullmatch(path.name)
        if m is not None and m["host"] == host and not _pid_alive(int(m["pid"])):
            found.append(path)
    return found


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree, ignoring what is already gone or cannot go."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (another user's counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # PermissionError: alive, another user's
    return True


def publish_directory(ready: str | os.PathLike, final: str | os.PathLike) -> None:
    """Make the finished directory ``ready`` appear as ``final`` (replacing one there).

    The old ``final`` is renamed away (to ``.NAME.old-<host>-<pid>-<uuid8>``), ``ready``
    renamed in, then the old one deleted: at every instant ``final`` is either the
    complete old or the complete new directory (or, between the two renames, absent; after
    a kill there, :func:`remove_stale_siblings` renames the old one back).
    """
    ready, final = Path(ready), Path(final)
    old = None
    if final.exists():
        # named for this process, so that a kill before the rmtree leaves debris that the
        # next start removes (remove_stale_siblings)
        old = _temporary_sibling(final, "old")
        os.rename(final, old)
    os.rename(ready, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
