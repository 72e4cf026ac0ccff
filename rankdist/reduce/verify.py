"""``rankdist verify``: every chunk of a store present and matching its checksum; ``--repair``.

Reads every chunk file of every array of a store (or of one run) and checks it against
the array's chunk grid and its trailing crc32c (:mod:`rankdist.io.verified`); the sparse
form's chunk files are checked against their zip CRC-32s. ``repair`` removes only what
rankdist can recompute (docs/store.md, "Integrity"):

* an encoding cache (``encodings/<name>-<key>/``) with a missing or damaged chunk: the
  next ``rankdist neighbors`` recomputes it;
* the debris of killed runs and ingests: a run's work directory
  ``results/.<run>.partial/`` whose lock no live process holds (it would have resumed
  there), the temporary siblings ``.NAME.tmp-<host>-<pid>-*`` of dead processes on this
  host (:func:`rankdist.io.atomic.remove_stale_siblings`), and ``.NAME.old-*`` (a
  replaced output, left when its writer was killed between rename and delete).

X, obs, var and finished runs are never removed; for them the report says what to do.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from rankdist.encode.sparse import SPARSE_DIR, chunk_file
from rankdist.io.atomic import remove_stale_siblings
from rankdist.io.verified import StoreError, advice, check_chunk_file, is_checksummed
from rankdist.layout import SUBTILE
from rankdist.reduce import lock as runlock
from rankdist.reduce.runstore import work_path

_TMP = re.compile(r"\.(?P<name>.+)\.tmp-.+-\d+-[0-9a-f]{8}")
_OLD = re.compile(r"\.(?P<name>.+)\.old-[0-9a-f]{8}")
_PARTIAL = re.compile(r"\.(?P<run>.+)\.partial")


@dataclass(frozen=True)
class ArrayCheck:
    """The chunks of one array and what was found.

    Attributes
    ----------
    array
        Path inside the store, e.g. ``'X'``, ``'encodings/spearman-<key>/Z'``.
    chunks
        Chunks in the array's grid (files the sparse form must have).
    missing, damaged
        Indices of the chunks whose file is absent, or does not match its checksum.
    checksummed
        False for an array written without checksums (before store format 2): its
        chunks are counted, not checked.
    removed
        Whether ``repair`` removed it (with its encoding cache).
    """

    array: str
    chunks: int
    missing: tuple = ()
    damaged: tuple = ()
    checksummed: bool = True
    removed: bool = False

    @property
    def state(self) -> str:
        """``'intact'``, ``'damaged N'``, ``'missing N'`` (or both), ``'no checksums'``."""
        if not self.checksummed:
            return "no checksums"
        parts = [f"damaged {len(self.damaged)}"] if self.damaged else []
        parts += [f"missing {len(self.missing)}"] if self.missing else []
        state = ", ".join(parts) or "intact"
        return f"{state} (removed)" if self.removed else state

    @property
    def intact(self) -> bool:
        return self.checksummed and not self.missing and not self.damaged


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found in a store and what ``repair`` removed.

    Attributes
    ----------
    store
        The store's directory.
    arrays
        One :class:`ArrayCheck` per array, in path order.
    removed
        Paths ``repair`` removed (damaged encoding caches, debris).
    """

    store: Path
    arrays: tuple[ArrayCheck, ...]
    removed: tuple[Path, ...] = field(default=())

    @property
    def intact(self) -> bool:
        """Every array that remains has all its chunks, each matching its checksum."""
        return all(a.intact for a in self.arrays if not a.removed)

    def advice(self) -> list[str]:
        """One line per damaged part that remains, saying what to do."""
        lines: dict[str, str] = {}
        for a in self.arrays:
            if a.removed or a.intact:
                continue
            parts = a.array.split("/")
            owner = "/".join(parts[:2]) if parts[0] in ("encodings", "results") else "the store"
            if not a.checksummed:
                lines.setdefault(
                    owner,
                    f"{a.array} has no checksums (written before store format 2): "
                    + advice(self.store, "X"),
                )
            else:
                lines.setdefault(owner, f"{owner}: {advice(self.store, a.array)}")
        return list(lines.values())

    def table(self) -> str:
        """The report as text: one row per array (array, chunks, state), then the advice."""
        width = max([len("array"), *(len(a.array) for a in self.arrays)])
        rows = [f"{'array':<{width}}  {'chunks':>7}  state"]
        rows += [f"{a.array:<{width}}  {a.chunks:>7}  {a.state}" for a in self.arrays]
        rows += [f"removed {p}" for p in self.removed]
        rows += self.advice()
        verdict = "intact" if self.intact else "DAMAGED"
        rows.append(f"{self.store}: {verdict}")
        return "\n".join(rows)


def verify(store, *, run: str | None = None, repair: bool = False) -> VerifyReport:
    """Check every chunk of every array of a store (or of one run); optionally repair.

    Parameters
    ----------
    store
        The store's directory (or a :class:`~rankdist.io.store.Store`).
    run
        Check only the finished run of this name (``results/<run>/``).
    repair
        Remove what can be recomputed: encoding caches with a missing or damaged chunk,
        and the debris of killed runs and ingests (see the module docstring). X, obs,
        var and finished runs are never removed.

    Returns
    -------
    VerifyReport
        Per array its chunks and state; ``report.intact`` is False while any damage
        remains.
    """
    root = Path(getattr(store, "path", store))
    _check_store(root)
    top = root if run is None else root / "results" / run
    if run is not None and not (top / "zarr.json").is_file():
        runs = sorted(p.name for p in (root / "results").glob("[!.]*") if p.is_dir())
        msg = f"no run {run!r} in {root}; its runs: {runs}"
        raise ValueError(msg)
    checks = [_check_array(root, path) for path in _array_dirs(top)]
    checks += [_check_sparse(root, path) for path in _sparse_dirs(top)]
    checks.sort(key=lambda c: c.array)
    removed: list[Path] = []
    if repair:
        checks = _remove_damaged_encodings(root, checks, removed)
        removed += _remove_debris(root, run)
    return VerifyReport(store=root, arrays=tuple(checks), removed=tuple(removed))


def _check_store(root: Path) -> None:
    try:
        meta = json.loads((root / "zarr.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict) or "rankdist" not in (meta.get("attributes") or {}):
        msg = f"{root} is not a rankdist store (no zarr.json with 'rankdist' attrs)"
        raise StoreError(msg)


def _array_dirs(top: Path) -> list[Path]:
    """Every Zarr array directory under ``top``, skipping hidden names (work, temporary)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "zarr.json" in filenames and Path(dirpath) != top:
            meta = _read_json(Path(dirpath) / "zarr.json")
            if meta.get("node_type") == "array":
                found.append(Path(dirpath))
                dirnames[:] = []
    return found


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _check_array(root: Path, path: Path) -> ArrayCheck:
    meta = _read_json(path / "zarr.json")
    name = path.relative_to(root).as_posix()
    shape = meta["shape"]
    chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
    grid = [range(-(-s // c)) for s, c in zip(shape, chunk_shape, strict=True)]
    n_chunks = 1
    for g in grid:
        n_chunks *= len(g)
    if not is_checksummed(meta):
        return ArrayCheck(name, n_chunks, checksummed=False)
    missing, damaged = [], []
    for index in itertools.product(*grid):
        state = check_chunk_file(path.joinpath("c", *map(str, index)))
        if state == "missing":
            missing.append(index)
        elif state == "damaged":
            damaged.append(index)
    return ArrayCheck(name, n_chunks, tuple(missing), tuple(damaged))


def _sparse_dirs(top: Path) -> list[Path]:
    """Encoding caches in sparse form under ``top`` (their ``valid`` gives the cells)."""
    encodings = top / "encodings"
    if not encodings.is_dir():
        return []
    return sorted(p for p in encodings.glob("[!.]*") if (p / SPARSE_DIR).is_dir())


def _check_sparse(root: Path, enc: Path) -> ArrayCheck:
    n_cells = _read_json(enc / "valid" / "zarr.json").get("shape", [0])[0]
    missing, damaged = [], []
    for chunk in range(-(-n_cells // SUBTILE)):
        path = chunk_file(enc, chunk)
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()  # reads every member, checking its CRC-32
        except FileNotFoundError:
            missing.append((chunk,))
            continue
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            bad = path.name
        if bad is not None:
            damaged.append((chunk,))
    name = (enc / SPARSE_DIR).relative_to(root).as_posix()
    return ArrayCheck(name, -(-n_cells // SUBTILE), tuple(missing), tuple(damaged))


def _remove_damaged_encodings(root: Path, checks: list, removed: list) -> list[ArrayCheck]:
    """Remove each encoding cache holding a damaged array; mark its arrays removed."""
    damaged = {
        "/".join(c.array.split("/")[:2])
        for c in checks
        if c.array.startswith("encodings/") and not c.intact
    }
    for cache in sorted(damaged):
        shutil.rmtree(root / cache, ignore_errors=True)
        removed.append(root / cache)
    return [
        ArrayCheck(c.array, c.chunks, c.missing, c.damaged, c.checksummed, removed=True)
        if "/".join(c.array.split("/")[:2]) in damaged
        else c
        for c in checks
    ]


def _remove_debris(root: Path, run: str | None) -> list[Path]:
    """Remove killed runs' work directories and dead processes' temporary siblings."""
    removed = []
    results = root / "results"
    folders = [results] if run is not None else [root.parent, root, root / "encodings", results]
    for folder in folders:
        try:
            names = sorted(p.name for p in folder.iterdir())
        except OSError:
            continue
        for name in names:
            tmp, old = _TMP.fullmatch(name), _OLD.fullmatch(name)
            target = (tmp or old)["name"] if (tmp or old) else None
            if target is None or (run is not None and target != run):
                continue
            if folder == root.parent and target != root.name:
                continue  # beside the store: only this store's own debris
            if tmp:
                removed += remove_stale_siblings(folder / target)
            else:
                shutil.rmtree(folder / name, ignore_errors=True)
                removed.append(folder / name)
    for path in sorted(results.glob(".*.partial")) if results.is_dir() else []:
        name = _PARTIAL.fullmatch(path.name)["run"]
        if run is not None and name != run:
            continue
        try:
            with runlock.hold(root, name):  # a live writer keeps it; a stale lock is taken
                shutil.rmtree(work_path(root, name), ignore_errors=True)
        except runlock.RunLockedError:
            continue
        removed.append(path)
    return sorted(set(removed))
