"""A full disk at each stage: one line naming the path, exit 2, nothing that reads as valid.

The disk fills at the real write call of the stage, with the error the kernel gives there:
``OSError(ENOSPC)`` naming no file (HDF5's, for an export, with its own multi-line account
instead). It is raised where the bytes would go: zarr's file write for X, Z and the result
arrays, ``numpy.savez`` for a checkpoint, AnnData's ``write_h5ad`` for an export,
matplotlib's ``savefig`` for a report figure. The message must name what was being
written: the store, the encoding, the checkpoint, the run, the export, the report.

The commands run in this process (``main([...])``, their Dask workers as threads of it),
so the injected fault reaches the worker tasks, and it happens on a chosen write, not at
a chosen time. After each fault the same command, run again with space, must succeed and
give the clean run's results bit for bit.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import anndata as ad
import matplotlib.figure
import numpy as np
import pytest
import zarr.storage._local as zarr_local
from faults._checks import (
    INGEST_ARGS,
    NEIGHBORS_ARGS,
    error_lines,
    same_result,
    stderr_lines,
    wait_idle,
)
from faults._hooks import debris

import rankdist
from rankdist.cli import main
from rankdist.io.atomic import naming_path
from rankdist.reduce.checkpoint import scan
from rankdist.reduce.runstore import list_runs

NO_SPACE = "No space left on device"


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _no_space_line(command: str, path: Path | str) -> str:
    """The one error line expected: the full disk, naming ``path``."""
    return f"rankdist {command}: error: [Errno {errno.ENOSPC}] {NO_SPACE}: '{path}'"


def _full_zarr_writes(mp: pytest.MonkeyPatch, fails) -> list[Path]:
    """Make every zarr file write for which ``fails(path, data)`` is true find the disk full.

    Returns the paths refused so far (the list fills as the command runs).
    """
    real, refused = zarr_local._put, []

    def put(path, value, exclusive=False):
        if fails(Path(path), value.to_bytes()):
            refused.append(Path(path))
            raise OSError(errno.ENOSPC, NO_SPACE)
        return real(path, value, exclusive=exclusive)

    mp.setattr(zarr_local, "_put", put)
    return refused


def _full_checkpoints(mp: pytest.MonkeyPatch) -> list[Path]:
    """Make a checkpoint's ``numpy.savez`` write part of its archive, then find the disk full."""
    real, refused = np.savez, []

    def savez(file, *args, **kwds):
        name = Path(getattr(file, "name", file))
        if name.parent.name != "checkpoint":
            return real(file, *args, **kwds)
        refused.append(name)
        file.write(b"PK\x03\x04" + bytes(512))
        raise OSError(errno.ENOSPC, NO_SPACE)

    mp.setattr(np, "savez", savez)
    return refused


def test_only_a_write_error_without_a_file_name_is_renamed(tmp_path):
    target = tmp_path / "out"
    for err in (
        OSError(errno.ENOSPC, NO_SPACE, "/it/names/its/file"),
        OSError(errno.EIO, "Input/output error"),  # a read raises it too
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        KeyboardInterrupt(),
    ):
        with pytest.raises(type(err)) as info, naming_path(target):
            raise err
        assert info.value is err
    full = OSError(errno.EDQUOT, "Disk quota exceeded, and more\nlines")
    with pytest.raises(OSError) as info, naming_path(target):
        raise full
    assert str(info.value) == f"[Errno {errno.EDQUOT}] Disk quota exceeded: '{target}'"
    assert info.value.__cause__ is full


# ---------------------------------------------------------------- ingest


def test_ingest_with_a_full_disk(cells_h5ad, clean, tmp_path, cli_on, capsys):
    argv = ["ingest", str(cells_h5ad), str(tmp_path / "s.zarr"), *INGEST_ARGS]
    with pytest.MonkeyPatch.context() as mp:
        refused = _full_zarr_writes(mp, lambda path, _: "/X/c/" in path.as_posix())
        assert main(argv) == 2
    assert ".s.zarr.tmp-" in str(refused[0])  # X written into the temporary store
    line = _no_space_line("ingest", tmp_path / "s.zarr")
    assert stderr_lines(capsys.readouterr().err) == [line]
    assert _names(tmp_path) == []  # no store, no hidden temporary store

    assert main(argv) == 0
    argv = ["neighbors", str(tmp_path / "s.zarr"), *NEIGHBORS_ARGS]
    assert main(argv) == 0
    assert same_result(rankdist.load(tmp_path / "s.zarr", "spearman"), clean)


# ---------------------------------------------------------------- neighbors


def _encode(mp, work):
    """The encoding cache: a chunk of Z (``encodings/<temporary>/Z/c/...``)."""

    def z_chunk(path: Path, _) -> bool:
        return "encodings" in path.parts and "/Z/c/" in path.as_posix()

    return _full_zarr_writes(mp, z_chunk)


def _tiles(mp, work):
    """A merged partial's checkpoint (the tiles stage's only write)."""
    return _full_checkpoints(mp)


def _write(mp, work):
    """A block of the result's similarities (a chunk: the array itself exists)."""
    return _full_zarr_writes(mp, lambda path, _: path.is_relative_to(work / "similarities" / "c"))


def _publish(mp, work):
    """The run's metadata, written last before the rename that publishes it."""
    return _full_zarr_writes(
        mp, lambda path, data: path == work / "zarr.json" and b"encoding-version" in data
    )


#: Stage -> (where the disk fills, the path the message names as a regex of store, work).
NEIGHBORS_STAGES = {
    "encode": (_encode, lambda store, work: rf"{store}/encodings/spearman-[0-9a-f]{{12}}"),
    "tiles": (_tiles, lambda store, work: rf"{work}/checkpoint/b\d+-[0-9a-f]{{12}}\.npz"),
    "write": (_write, lambda store, work: f"{store}/results/spearman"),
    "publish": (_publish, lambda store, work: f"{store}/results/spearman"),
}


@pytest.mark.parametrize("stage", list(NEIGHBORS_STAGES))
def test_neighbors_with_a_full_disk(stage, fresh_store, clean, cli_on, capsys):
    store = fresh_store.path
    work = store / "results" / ".spearman.partial"
    argv = ["neighbors", str(store), *NEIGHBORS_ARGS]
    encodings = _names(store / "encodings")  # the group's own metadata
    fill, named = NEIGHBORS_STAGES[stage]
    with pytest.MonkeyPatch.context() as mp:
        refused = fill(mp, work)
        assert main(argv) == 2
        wait_idle(cli_on)  # tasks running when the run failed end (and fail) here
    assert refused
    (line,) = error_lines(capsys.readouterr().err, "neighbors")
    path = named(re.escape(str(store)), re.escape(str(work)))
    assert re.fullmatch(re.escape(_no_space_line("neighbors", "PATH")).replace("PATH", path), line)

    # nothing a later command reads as valid: no run, no encoding cache if it failed there
    assert list_runs(store) == []
    with pytest.raises(KeyError, match="no run 'spearman'"):
        rankdist.load(store, "spearman")
    if stage == "encode":  # encoded by the run's block tasks (its work directory exists)
        assert _names(store / "encodings") == encodings  # no cache that a run would reuse
    # only the work directory, for the next run to resume from: no temporaries in it
    assert debris(store) == ["results/.spearman.partial"]
    for files in scan(work / "checkpoint").files.values():  # each one is read back
        assert all(tiles for _, tiles in files)  # whole, covering tiles

    assert main(argv) == 0
    assert same_result(rankdist.load(store, "spearman"), clean)
    assert debris(store) == []


# ---------------------------------------------------------------- export


def _disk_full_after_part(mp: pytest.MonkeyPatch) -> list[Path]:
    """An AnnData.write_h5ad that writes part of the file, then finds the disk full.

    The error is HDF5's (as h5py raises it on a full disk): errno 28, no file name, and a
    message of two lines.
    """
    refused = []

    def write_h5ad(self, filename, *args, **kwargs):
        refused.append(Path(filename))
        Path(filename).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 4096)
        hdf5 = (
            f"Can't synchronously write data (file write failed: time = Mon Nov 30 12:18:32"
            f" 2026\n, filename = '{filename}', file descriptor = 3, errno = 28, error "
            f"message = '{NO_SPACE}', buf = 0x7f2356903810, total write size = 1357568)"
        )
        raise OSError(errno.ENOSPC, hdf5)

    mp.setattr(ad.AnnData, "write_h5ad", write_h5ad)
    return refused


def test_export_with_a_full_disk_leaves_no_file_and_keeps_an_old_one(clean_store, tmp_path, capsys):
    target = tmp_path / "out" / "graph.h5ad"
    target.parent.mkdir()
    argv = ["export", str(clean_store.path), "--h5ad", str(target)]
    with pytest.MonkeyPatch.context() as mp:
        refused = _disk_full_after_part(mp)
        assert main(argv) == 2
        assert refused
        assert stderr_lines(capsys.readouterr().err) == [_no_space_line("export", target)]
        assert _names(target.parent) == []  # no target, no .graph.h5ad.tmp-*
        target.write_bytes(b"the previous export")
        assert main(argv) == 2
    assert _names(target.parent) == ["graph.h5ad"]
    assert target.read_bytes() == b"the previous export"

    assert main(argv) == 0
    assert _names(target.parent) == ["graph.h5ad"]
    assert main([*argv[:-1], str(tmp_path / "clean.h5ad")]) == 0
    got, want = ad.read_h5ad(target), ad.read_h5ad(tmp_path / "clean.h5ad")
    for key in ("distances", "connectivities"):
        assert (got.obsp[key] != want.obsp[key]).nnz == 0


# ---------------------------------------------------------------- report


def _full_figures(mp: pytest.MonkeyPatch) -> list[Path]:
    """A figure's ``savefig`` writes the start of the image, then finds the disk full."""
    refused = []

    def savefig(self, fname, *args, **kwargs):
        refused.append(Path(fname))
        Path(fname).write_bytes(b"\x89PNG\r\n\x1a\n")
        raise OSError(errno.ENOSPC, NO_SPACE)

    mp.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return refused


def _files(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_report_with_a_full_disk_leaves_no_folder(clean_store, tmp_path, capsys):
    out = tmp_path / "reports" / "rep"
    out.parent.mkdir()
    argv = ["report", str(clean_store.path), "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        refused = _full_figures(mp)
        assert main(argv) == 2
    assert refused
    assert stderr_lines(capsys.readouterr().err) == [_no_space_line("report", out)]
    assert _names(out.parent) == []  # no report folder, no .rep.tmp-*

    assert main(argv) == 0
    assert main(["report", str(clean_store.path), "--out", str(tmp_path / "clean")]) == 0
    tables = {p: b for p, b in _files(out).items() if p.parts[0] == "tables"}
    assert tables and tables == {
        p: b for p, b in _files(tmp_path / "clean").items() if p.parts[0] == "tables"
    }
    assert sorted(_files(out)) == sorted(_files(tmp_path / "clean"))


def test_report_with_a_full_disk_keeps_the_previous_report(clean_store, tmp_path):
    out = tmp_path / "rep"
    assert main(["report", str(clean_store.path), "--out", str(out)]) == 0
    before = _files(out)
    assert Path("report.html") in before and any(p.parts[0] == "figures" for p in before)
    with pytest.MonkeyPatch.context() as mp:
        _full_figures(mp)
        assert main(["report", str(clean_store.path), "--out", str(out)]) == 2
    assert _names(tmp_path) == ["rep"]
    assert _files(out) == before
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"--out {out} " in page and ".tmp-" not in page  # the final path, not the temporary
