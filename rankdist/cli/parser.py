"""The ``rankdist`` argument parser."""

from __future__ import annotations

import argparse


def _cutoffs(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(c) for c in text.split(",") if c.strip())
    except ValueError:
        msg = f"--cutoffs takes comma-separated numbers like 0.3,0.5,0.7, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _param(text: str) -> tuple[str, int | float | str]:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rankdist",
        description="Exact all-pairs rank (Spearman) correlation of single cells, on Dask.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "ingest", help="stream one or several datasets into a rankdist store",
        description="Stream datasets into a rankdist store. Several sources are concatenated, "
        "keeping the genes they all have; each source is then a batch unless --batch is given.",
    )  # fmt: skip
    p.add_argument(
        "source", nargs="+",
        help=".h5ad, 10x .h5, 10x mtx directory or AnnData .zarr (one or more)",
    )  # fmt: skip
    p.add_argument("store", help="store directory to create (e.g. pbmc.zarr)")
    p.add_argument("--cell-type", metavar="COL", help="obs column with the cell type")
    p.add_argument("--coarse-type", metavar="COL", help="obs column with the coarse class")
    p.add_argument(
        "--batch", metavar="COL",
        help="obs column with the batch (default with several sources: the source file name)",
    )  # fmt: skip
    p.add_argument(
        "--max-per-type", type=int, metavar="N",
        help="keep at most N cells per cell type, drawn at random (needs --cell-type)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of --max-per-type (default 0)")
    p.add_argument(
        "--genes", default=None, metavar="SPEC",
        help="all (default) | hvg:N | FILE (one gene per line) | VAR_COLUMN (boolean)",
    )  # fmt: skip
    p.add_argument("--use-raw", action="store_true", help="read .raw.X instead of X")
    p.add_argument("--layer", help="read layers[LAYER] instead of X")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("neighbors", help="exact top-k neighbours and cutoff counts")
    p.add_argument("store")
    p.add_argument(
        "--encoding", default="spearman",
        help="spearman (default), pearson (log1p CP10k baseline), geneformer, topn",
    )  # fmt: skip
    p.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", type=_param,
        help="encoding parameter, repeatable: --param top=4096 (geneformer), --param n=200 (topn)",
    )  # fmt: skip
    p.add_argument("--k", type=int, default=30, help="neighbours per cell (default 30)")
    p.add_argument(
        "--cutoffs", type=_cutoffs, default=(0.5,), help="e.g. 0.3,0.5,0.7 (default 0.5)"
    )
    p.add_argument(
        "--cluster", default="local",
        help="local (default), tcp://HOST:PORT, or a batch system: slurm, pbs, sge, lsf",
    )  # fmt: skip
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default 1)")
    p.add_argument("--jobs", type=int, help="batch jobs to keep running (default 1)")
    p.add_argument(
        "--profile", metavar="PATH", help="dask-jobqueue profile, e.g. deploy/slurm.yaml"
    )
    p.add_argument(
        "--block-size", type=int, help="cells per block, multiple of 512 (default: auto)"
    )
    p.add_argument("--name", help="run name (default: the encoding)")
    p.add_argument(
        "--type-hist", action="store_true",
        help="also count pairs by (cell type, cell type, similarity): the report's heatmap",
    )  # fmt: skip
    p.add_argument(
        "--form", choices=("auto", "dense", "sparse"), default="auto",
        help="how Z is stored and multiplied: auto (default: sparse for mostly-zero all-genes "
        "spearman when predicted faster), dense (BLAS GEMM) or sparse (docs/encodings.md)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar or dashboard link")

    p = sub.add_parser("export", help="write a run as AnnData for scanpy / scib-metrics")
    p.add_argument("store")
    p.add_argument("--h5ad", required=True, metavar="OUT", help="AnnData file to write")
    p.add_argument("--run", help="run name (needed when the store holds several)")
    p.add_argument("--key-added", help="as in sc.pp.neighbors: obsp['KEY_distances'], uns['KEY']")

    p = sub.add_parser("info", help="describe a store and its runs")
    p.add_argument("store")

    p = sub.add_parser(
        "doctor", help="show how --cluster would run: job script, addresses, SSH tunnel"
    )
    p.add_argument(
        "--cluster", default="local",
        help="slurm, pbs, sge, lsf, local (default) or tcp://HOST:PORT",
    )  # fmt: skip
    p.add_argument("--profile", metavar="PATH", help="dask-jobqueue profile (see deploy/)")
    p.add_argument("--jobs", type=int, help="batch jobs a run would keep (default 1)")
    p.add_argument(
        "--login-host", metavar="HOST",
        help="the machine you ssh into, for the tunnel command (default: the submit host "
        "inside a batch job, else a placeholder)",
    )  # fmt: skip

    p = sub.add_parser("report", help="tables, figures and one HTML page of a store's runs")
    p.add_argument("store")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the report to")
    p.add_argument("--runs", metavar="A,B", help="comma-separated run names (default: every run)")
    p.add_argument(
        "--hierarchy", metavar="CSV",
        help="fine,coarse cell-type CSV (default: the stored coarse_type labels)",
    )  # fmt: skip

    p = sub.add_parser(
        "synth", help="generate a synthetic prefrontal-cortex atlas (store or .h5ad)",
        description="Generate a Mathys-like aged prefrontal-cortex atlas (54 subtypes in 8 "
        "classes, donors as batches, negative-binomial counts) chunk by chunk on Dask, "
        "straight into a rankdist store or an .h5ad. See docs/synth.md.",
    )  # fmt: skip
    p.add_argument("out", help="store directory (e.g. atlas.zarr) or .h5ad file to create")
    p.add_argument("--cells", type=int, required=True, help="cells to generate (atlas: 2300000)")
    p.add_argument(
        "--genes", default="all", metavar="N|all",
        help="keep the N most informative of the 33,538 genes (default: all)",
    )  # fmt: skip
    p.add_argument("--donors", type=int, default=427, help="donors = batches (default 427)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument(
        "--format", choices=("store", "h5ad"),
        help="output format (default: from the suffix; .h5ad, else a store)",
    )  # fmt: skip
    p.add_argument(
        "--chunk", type=int, metavar="C", help="cells per task (default: ~16 M values per task)"
    )
    p.add_argument(
        "--cluster", default="local", help="local (default), tcp://HOST:PORT, slurm, pbs, ..."
    )
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default 1)")
    p.add_argument(
        "--compression", choices=("gzip", "lzf"), help=".h5ad only: compress X (default: none)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bar or dashboard link")

    p = sub.add_parser(
        "plan", help="size a run: block size, tiles, wall time, storage, the command to run it",
        description="Plan a rankdist neighbors run on a batch system (one job per node, one "
        "worker per job, as deploy/*.yaml) from its sizes; times come from a calibration "
        "measured on real tiles. See docs/planning.md.",
    )  # fmt: skip
    p.add_argument("--cells", metavar="N", help="cells, e.g. 2.3M, 500k or 2300000")
    p.add_argument("--genes", metavar="G", help="genes after selection, e.g. 2000")
    p.add_argument("--nodes", type=int, default=1, help="batch jobs, one per node (default 1)")
    p.add_argument("--cores-per-node", type=int, metavar="C", help="threads per job (cores:)")
    p.add_argument("--mem-per-node", metavar="SIZE", help="memory per job (memory:), e.g. 128GB")
    p.add_argument(
        "--scheduler", default="slurm", choices=("slurm", "pbs", "sge", "lsf", "local"),
        help="batch system of the jobs (default slurm); local: this machine",
    )  # fmt: skip
    p.add_argument("--k", type=int, default=30, help="neighbours per cell (default 30)")
    p.add_argument("--cutoffs", type=_cutoffs, default=(0.5,), help="e.g. 0.3,0.5 (default 0.5)")
    p.add_argument(
        "--label-values", default="54,8,427", metavar="A,B,C",
        help="values of each label role: cell types, coarse classes, batches (default "
        "54,8,427: the 2.3 M-cell prefrontal cortex atlas)",
    )  # fmt: skip
    p.add_argument("--encoding", default="spearman", help="encoding (default spearman)")
    p.add_argument("--block-size", type=int, help="cells per block (default: as neighbors)")
    p.add_argument("--store", default="STORE", help="store path to put in the command")
    p.add_argument("--profile", help="profile for the command (default deploy/SCHEDULER.yaml)")
    p.add_argument(
        "--calibration", metavar="FILE",
        help="throughput constants to use, or to write with --calibrate (default: the file "
        "shipped with rankdist)",
    )  # fmt: skip
    p.add_argument(
        "--calibrate", action="store_true",
        help="measure this machine's constants on a real tile workload (about a minute) "
        "and write them to --calibration",
    )  # fmt: skip

    p = sub.add_parser("demo", help="synthetic labelled data -> neighbours -> purity table")
    p.add_argument(
        "--out", default="rankdist-demo", help="working directory (default ./rankdist-demo)"
    )
    p.add_argument("--cells", type=int, default=4000, help="cells to simulate (default 4000)")
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default 1)")
    return parser
