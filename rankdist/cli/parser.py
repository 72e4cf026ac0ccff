"""The ``rankdist`` argument parser: one small function per command.

Options several commands share come from the parent parsers of :mod:`rankdist.cli.options`;
each function here adds only its command's own options. Defaults and choices come from
their one definition in the library (the atlas's sizes in
:mod:`rankdist.datasets.atlas.taxonomy`, read when the parser is built), and the help
shows them.
"""

from __future__ import annotations

import argparse

from rankdist.cli import options
from rankdist.cluster.profile import SYSTEMS
from rankdist.datasets.atlas import taxonomy
from rankdist.tiles.sparse import FORMS

#: Where ``rankdist plan`` can put a run: a batch system, or this machine. The same tuple
#: as :data:`rankdist.planning.model.SCHEDULERS`, built as that is: importing the planner
#: would load Dask's distributed and zarr for every ``rankdist --help``.
PLAN_CLUSTERS = (*SYSTEMS, "local")


def build_parser() -> argparse.ArgumentParser:
    """The ``rankdist`` parser: one subparser per command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="rankdist",
        description="Exact all-pairs rank (Spearman) correlation of single cells, on Dask.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in (
        _ingest_parser,
        _neighbors_parser,
        _export_parser,
        _info_parser,
        _doctor_parser,
        _report_parser,
        _synth_parser,
        _plan_parser,
        _verify_parser,
        _demo_parser,
    ):
        add_command(sub)
    return parser


def _ingest_parser(sub) -> None:
    p = sub.add_parser(
        "ingest",
        parents=[options.output()],
        help="stream one or several datasets into a rankdist store",
        description="Stream datasets into a rankdist store. Several sources are concatenated, "
        "keeping the genes they all have; each source is then a batch unless --batch is given.",
    )
    p.add_argument(
        "source",
        nargs="+",
        help=".h5ad, 10x .h5, 10x mtx directory or AnnData .zarr (one or more)",
    )
    p.add_argument("store", help="store directory to create (e.g. pbmc.zarr)")
    p.add_argument("--cell-type", metavar="COL", help="obs column with the cell type")
    p.add_argument("--coarse-type", metavar="COL", help="obs column with the coarse class")
    p.add_argument(
        "--batch",
        metavar="COL",
        help="obs column with the batch (default with several sources: the source file name)",
    )
    p.add_argument(
        "--max-per-type",
        type=int,
        metavar="N",
        help="keep at most N cells per cell type, drawn at random (needs --cell-type)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --max-per-type (default 0)")
    p.add_argument(
        "--genes",
        default=None,
        metavar="SPEC",
        help="all (default) | hvg:N | FILE (one gene per line) | VAR_COLUMN (boolean)",
    )
    p.add_argument("--use-raw", action="store_true", help="read .raw.X instead of X")
    p.add_argument("--layer", help="read layers[LAYER] instead of X")


def _neighbors_parser(sub) -> None:
    parents = [
        options.store(),
        options.neighbour(),
        options.cluster(),
        options.output("--quiet", "--debug"),
    ]
    p = sub.add_parser(
        "neighbors",
        parents=parents,
        help="exact top-k neighbours and cutoff counts",
        description="Exact top-k neighbours and cutoff counts of every cell of a store, "
        "stored under results/<name>/ in the store.",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=options.encoding_param,
        help="encoding parameter, repeatable: --param top=4096 (geneformer), --param n=200 "
        "(topn), --param n_bins=51 (scgpt), --param embeddings=FILE (genept: .npz, .csv or "
        ".parquet; add --param allow_pickle=true for GenePT's pickle, only if you trust it)",
    )
    p.add_argument("--name", help="run name (default: the encoding)")
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another rankdist is writing a run of this name in this store, wait for it "
        "(default: exit at once, naming it)",
    )
    p.add_argument(
        "--type-hist",
        action="store_true",
        help="also count pairs by (cell type, cell type, similarity): the report's heatmap",
    )
    p.add_argument(
        "--form",
        choices=FORMS,
        default="auto",
        help="how Z is stored and multiplied: auto (default: sparse for mostly-zero all-genes "
        "spearman when predicted faster), dense (BLAS GEMM) or sparse (docs/encodings.md)",
    )
    p.add_argument(
        "--kernel",
        choices=("auto", "float32", "screen"),
        default="auto",
        help="how tiles multiply dense Z: auto (default: the screen where a sample predicts "
        "it faster), float32 (BLAS GEMM) or screen (8-bit product with a certified bound, "
        "needs rankdist[fast]); the same results either way (docs/performance.md)",
    )


def _report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        parents=[options.store(), options.output("--debug")],
        help="tables, figures and one HTML page of a store's runs",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the report to")
    p.add_argument("--runs", metavar="A,B", help="comma-separated run names (default: every run)")
    p.add_argument(
        "--hierarchy",
        metavar="CSV",
        help="fine,coarse cell-type CSV (default: the stored coarse_type labels)",
    )
    p.add_argument(
        "--baseline",
        metavar="RUN",
        help="run every other run is compared with (default: the first pearson run)",
    )


def _export_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        parents=[options.store(), options.output("--debug")],
        help="write a run as AnnData for scanpy / scib-metrics",
    )
    p.add_argument("--h5ad", required=True, metavar="OUT", help="AnnData file to write")
    p.add_argument("--run", help="run name (needed when the store holds several)")
    p.add_argument("--key-added", help="as in sc.pp.neighbors: obsp['KEY_distances'], uns['KEY']")


def _info_parser(sub) -> None:
    sub.add_parser(
        "info",
        parents=[options.store(), options.output("--debug")],
        help="describe a store and its runs",
    )


def _doctor_parser(sub) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[
            options.cluster("--cluster", "--jobs", "--profile", "--insecure", "--security"),
            options.output("--debug"),
        ],
        help="show how --cluster would run: job script, addresses, SSH tunnel",
    )
    p.add_argument(
        "--login-host",
        metavar="HOST",
        help="the machine you ssh into, for the tunnel command (default: the submit host "
        "inside a batch job, else a placeholder)",
    )


def _synth_parser(sub) -> None:
    p = sub.add_parser(
        "synth",
        parents=[options.cluster("--cluster", "--workers"), options.output()],
        help="generate a synthetic prefrontal-cortex atlas (store or .h5ad)",
        description="Generate a Mathys-like aged prefrontal-cortex atlas "
        f"({len(taxonomy.SUBTYPES)} subtypes in {len(taxonomy.CLASSES)} classes, donors as "
        "batches, negative-binomial counts) chunk by chunk on Dask, "
        "straight into a rankdist store or an .h5ad. See docs/synth.md.",
    )
    p.add_argument("out", help="store directory (e.g. atlas.zarr) or .h5ad file to create")
    p.add_argument("--cells", type=int, required=True, help="cells to generate (atlas: 2300000)")
    p.add_argument(
        "--genes",
        default="all",
        metavar="N|all",
        help="keep the N most informative of the 33,538 genes (default: all)",
    )
    p.add_argument(
        "--donors",
        type=int,
        default=taxonomy.N_DONORS,
        help=f"donors = batches (default {taxonomy.N_DONORS})",
    )
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument(
        "--format",
        choices=("store", "h5ad"),
        help="output format (default: from the suffix; .h5ad, else a store)",
    )
    p.add_argument(
        "--chunk", type=int, metavar="C", help="cells per task (default: ~16 M values per task)"
    )
    p.add_argument(
        "--compression", choices=("gzip", "lzf"), help=".h5ad only: compress X (default: none)"
    )


def _plan_parser(sub) -> None:
    where = options.option(
        "--cluster",
        default="slurm",
        choices=PLAN_CLUSTERS,
        help="batch system of the jobs (default slurm); local: this machine",
    )
    old_spellings = (
        options.option(
            "--scheduler",
            dest="cluster",
            choices=PLAN_CLUSTERS,
            action=options.DeprecatedAlias,
            new="--cluster",
            help="deprecated: use --cluster",
        ),
        options.option(
            "--nodes",
            dest="jobs",
            type=int,
            metavar="N",
            action=options.DeprecatedAlias,
            new="--jobs",
            help="deprecated: use --jobs (one node per job)",
        ),
    )
    parents = [
        options.neighbour(),
        options.parent((where,), "cluster options"),
        options.cluster("--jobs", "--profile"),
        options.parent(old_spellings, "cluster options"),
        options.output("--debug"),
    ]
    p = sub.add_parser(
        "plan",
        parents=parents,
        help="size a run: block size, tiles, wall time, storage, the command to run it",
        description="Plan a rankdist neighbors run on a batch system (one job per node, one "
        "worker per job, as deploy/*.yaml) from its sizes; times come from a calibration "
        "measured on real tiles. The plan ends with the neighbors command that runs it, "
        "with --profile (default deploy/<batch system>.yaml). See docs/planning.md.",
    )
    p.add_argument("--cells", metavar="N", help="cells, e.g. 2.3M, 500k or 2300000")
    p.add_argument("--genes", metavar="G", help="genes after selection, e.g. 2000")
    p.add_argument("--cores-per-node", type=int, metavar="C", help="threads per job (cores:)")
    p.add_argument("--mem-per-node", metavar="SIZE", help="memory per job (memory:), e.g. 128GB")
    atlas_sizes = ",".join(map(str, taxonomy.ATLAS_LABEL_SIZES))
    p.add_argument(
        "--label-values",
        default=atlas_sizes,
        metavar="A,B,C",
        help="values of each label role: cell types, coarse classes, batches (default "
        f"{atlas_sizes}: the 2.3 M-cell prefrontal cortex atlas)",
    )
    # Defaults as rankdist.planning.traffic's DEFAULT_FS_BANDWIDTH and DEFAULT_NET_BANDWIDTH.
    p.add_argument(
        "--fs-bandwidth",
        default="5GB/s",
        metavar="RATE",
        help="bytes/s the whole run can read from the shared filesystem (default 5GB/s: a "
        "job's share of a parallel filesystem)",
    )
    p.add_argument(
        "--net-bandwidth",
        default="1.25GB/s",
        metavar="RATE",
        help="bytes/s of each node's network link (default 1.25GB/s: 10 Gb/s Ethernet)",
    )
    p.add_argument("--store", default="STORE", help="store path to put in the command")
    # As rankdist.planning.calibration reads and writes them (user_calibration_path).
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="throughput constants to read, or to write with --calibrate (default: your own "
        "file, $XDG_CONFIG_HOME/rankdist/calibration.json, else "
        "~/.config/rankdist/calibration.json, if it exists; else the file shipped with "
        "rankdist)",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="measure this machine's constants on a real tile workload (about a minute) "
        "and write them to your own file (see --calibration), unless --calibration FILE "
        "is given; the file shipped with rankdist is never written",
    )


def _verify_parser(sub) -> None:
    p = sub.add_parser(
        "verify",
        parents=[options.store(), options.output("--debug")],
        help="check every chunk of a store against its checksum (exit 1 on damage)",
        description="Check that every chunk of every array of a store (or of one run) is "
        "present and matches its crc32c; print a table and exit 1 if any is missing or "
        "damaged. --repair removes what rankdist can recompute (damaged encoding caches, "
        "debris of killed runs and ingests), never X, obs, var or a finished run.",
    )
    p.add_argument("--run", metavar="NAME", help="check only this run (default: the whole store)")
    p.add_argument(
        "--repair",
        action="store_true",
        help="remove damaged encoding caches (recomputed by the next neighbors) and the "
        "leftovers of killed runs and ingests",
    )


def _demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        parents=[options.cluster("--workers"), options.output("--debug")],
        help="synthetic labelled data -> neighbours -> purity table",
    )
    p.add_argument(
        "--out", default="rankdist-demo", help="working directory (default ./rankdist-demo)"
    )
    p.add_argument("--cells", type=int, default=4000, help="cells to simulate (default 4000)")
