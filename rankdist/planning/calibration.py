"""The per-core constants of the capacity model, and the JSON files that hold them.

``rankdist plan --calibrate`` (:func:`rankdist.planning.calibrate.calibrate`) measures them
on a real tile workload and writes them to the user's file,
``$XDG_CONFIG_HOME/rankdist/calibration.json`` (:func:`user_calibration_path`).
``rankdist plan`` reads that file if it exists, else the one shipped with the package
(``rankdist/data/calibration.json``), unless given ``--calibration FILE``. How each
constant enters the wall time is in :func:`rankdist.planning.model.wall_time_model` and
docs/planning.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from importlib.resources import files
from pathlib import Path


def packaged_calibration_path() -> Path:
    """The calibration file shipped inside the package; rankdist never writes it."""
    return Path(str(files("rankdist").joinpath("data", "calibration.json")))


def user_calibration_path() -> Path:
    """The user's calibration file: written by ``rankdist plan --calibrate``, read first.

    ``$XDG_CONFIG_HOME/rankdist/calibration.json``, or
    ``~/.config/rankdist/calibration.json`` where ``XDG_CONFIG_HOME`` is unset, empty or
    relative (which the XDG Base Directory specification says to ignore).
    """
    config = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config) if os.path.isabs(config) else Path.home() / ".config"
    return base / "rankdist" / "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """Per-core constants of the capacity model (all measured with every core busy).

    Attributes
    ----------
    gemm_gflops_per_core
        float32 GEMM rate of one thread in the kernel's 512 x 512 sub-tile calls.
    fused_ns_per_pair
        Nanoseconds per cell pair of a tile beyond its GEMM: the fused top-k/count pass,
        priming, block reads.
    encode_ns_per_value
        Nanoseconds per cell x gene of the spearman encoding (read X, rank, write Z).
    tile_fixed_s
        Seconds per tile whatever its size (block reads, allocating partials, priming).
    worker_s_per_task
        Worker CPU seconds per task beyond the task itself (Dask's bookkeeping,
        (de)serialising arguments and results).
    driver_s_per_task
        CPU seconds per task of the process running the scheduler and rankdist's driver
        loop (submit, react to completions).
    merge_fixed_s, merge_s_per_mb, write_fixed_s, write_s_per_mb
        Seconds of one merge (with its checkpoint) or one block write: fixed, and per MB
        of partial.
    startup_s
        Fixed cost of a ``rankdist neighbors`` call: cluster start-up, work directory,
        loading the result.
    measured
        Where, when and on what the constants were measured, and the raw timings.
    """

    gemm_gflops_per_core: float
    fused_ns_per_pair: float
    encode_ns_per_value: float
    tile_fixed_s: float
    worker_s_per_task: float
    driver_s_per_task: float
    merge_fixed_s: float
    merge_s_per_mb: float
    write_fixed_s: float
    write_s_per_mb: float
    startup_s: float
    measured: dict = field(default_factory=dict)

    def seconds_per_pair(self, genes: int) -> float:
        """Thread seconds per cell pair of a tile: GEMM (2 G flops) plus the fused pass."""
        return 2.0 * genes / (self.gemm_gflops_per_core * 1e9) + self.fused_ns_per_pair * 1e-9

    def save(self, path: str | os.PathLike) -> Path:
        """Write the constants as JSON to ``path``, replacing it atomically.

        Parameters
        ----------
        path
            The calibration file; its directory is created if missing.

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        # imported here: `rankdist plan` reads calibrations without loading the store's zarr
        from rankdist.io.store import atomic_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(self), indent=2) + "\n"
        with atomic_file(path, mode="w") as fh:
            fh.write(text)
        return path


def load_calibration(path: str | os.PathLike | None = None) -> Calibration:
    """Read a calibration file.

    Parameters
    ----------
    path
        The file; default: the user's (:func:`user_calibration_path`) if it exists, else
        the one shipped with rankdist (:func:`packaged_calibration_path`).

    Returns
    -------
    Calibration
    """
    if path is None:
        user = user_calibration_path()
        path = user if user.is_file() else packaged_calibration_path()
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        msg = f"calibration file {path} not found; write one with `rankdist plan --calibrate`"
        raise FileNotFoundError(msg) from None
    except json.JSONDecodeError as err:
        msg = f"calibration file {path} is not valid JSON ({err}); rewrite it with --calibrate"
        raise ValueError(msg) from None
    names = {f.name for f in fields(Calibration)}
    missing = sorted(names - set(data) - {"measured"})
    if missing:
        msg = (
            f"calibration file {path} lacks {missing}; it is from another rankdist version, "
            "rewrite it with `rankdist plan --calibrate`"
        )
        raise ValueError(msg)
    return Calibration(**{k: v for k, v in data.items() if k in names})
