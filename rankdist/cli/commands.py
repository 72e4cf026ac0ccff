"""What each ``rankdist`` command runs, given its parsed arguments."""

from __future__ import annotations

from pathlib import Path


def _ingest(args) -> int:
    from rankdist import ingest

    sources = args.source if len(args.source) > 1 else args.source[0]
    store = ingest(
        sources,
        args.store,
        cell_type=args.cell_type,
        coarse_type=args.coarse_type,
        batch=args.batch,
        genes=args.genes,
        use_raw=args.use_raw,
        layer=args.layer,
        max_per_type=args.max_per_type,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(store)
    prov = store.provenance
    if len(prov["sources"]) > 1:
        print(f"{prov['genes_common']} genes are in every source")
        for src in prov["sources"]:
            print(
                f"  {src['label']}: {src['n_cells']} cells, {src['genes_dropped']} of "
                f"{src['source_shape'][1]} genes dropped ({src['source']})"
            )
    sub = prov.get("subsample")
    if sub:
        print(
            f"kept {sub['n_cells_kept']} of {sub['n_cells_before']} cells "
            f"(at most {sub['max_per_type']} per cell type, seed {sub['seed']})"
        )
    return 0


def _neighbors(args) -> int:
    from rankdist import neighbors

    res = neighbors(
        args.store,
        encoding=args.encoding,
        k=args.k,
        cutoffs=args.cutoffs,
        cluster=args.cluster,
        workers=args.workers,
        jobs=args.jobs,
        profile=args.profile,
        insecure=args.insecure,
        security=args.security,
        block_size=args.block_size,
        name=args.name,
        progress=not args.quiet,
        params=dict(args.param) or None,
        type_hist=args.type_hist,
        form=args.form,
        kernel=args.kernel,
        wait=args.wait,
    )
    meta = res.metadata
    print(
        f"{res!r}\nstored as {Path(args.store) / 'results' / meta['name']} "
        f"({meta['n_tiles']} tiles of {meta['block_rows']} cells, {meta['form']} form, "
        f"{meta['kernel']} kernel, {meta['wall_time_s']} s)"
    )
    return 0


def _export(args) -> int:
    from rankdist import load

    res = load(args.store, args.run)
    adata = res.write_h5ad(args.h5ad, key_added=args.key_added)
    print(f"wrote {args.h5ad}: {adata.n_obs} cells, k={res.k}, run {res.metadata['name']!r}")
    return 0


def _info(args) -> int:
    from rankdist import Store, list_runs, load

    store = Store(args.store)
    print(store)
    prov = store.provenance
    print(f"source: {prov.get('source')} ({prov.get('source_kind')}), sha256 {prov.get('sha256')}")
    for run in list_runs(store):
        print(f"run {run}: {load(store, run)!r}")
    return 0


def _doctor(args) -> int:
    from rankdist.cluster.client import doctor_report

    print(
        doctor_report(
            args.cluster,
            jobs=args.jobs,
            profile=args.profile,
            insecure=args.insecure,
            security=args.security,
            login_host=args.login_host,
        )
    )
    return 0


def _report(args) -> int:
    from rankdist.report import build_report

    page = build_report(
        args.store, args.out, runs=args.runs, hierarchy=args.hierarchy, baseline=args.baseline
    )
    print(f"wrote {page}; tables in {page.parent / 'tables'}, figures in {page.parent / 'figures'}")
    return 0


def _synth(args) -> int:
    from rankdist.datasets.atlas import synth_atlas

    out = synth_atlas(
        args.out,
        args.cells,
        genes=args.genes,
        n_donors=args.donors,
        seed=args.seed,
        format=args.format,
        chunk=args.chunk,
        cluster=args.cluster,
        workers=args.workers,
        overwrite=args.overwrite,
        compression=args.compression,
        progress=not args.quiet,
    )
    print(out if isinstance(out, Path) else f"{out!r}")
    return 0


def _plan(args) -> int:
    from rankdist.planning.describe import describe_plan, parse_count, plan_capacity

    if args.calibrate:
        from rankdist.planning.calibrate import calibrate

        calibrate(args.calibration)
        return 0
    if args.cells is None or args.genes is None:
        msg = "give --cells and --genes (e.g. --cells 2.3M --genes 2000), or --calibrate"
        raise ValueError(msg)
    values = [parse_count(v, "--label-values") for v in args.label_values.split(",") if v]
    plan = plan_capacity(
        args.cells,
        args.genes,
        nodes=1 if args.jobs is None else args.jobs,
        cores_per_node=args.cores_per_node,
        mem_per_node=args.mem_per_node,
        scheduler=args.cluster,
        k=args.k,
        cutoffs=args.cutoffs,
        label_values=values,
        encoding=args.encoding,
        block_size=args.block_size,
        calibration=args.calibration,
        fs_bandwidth=args.fs_bandwidth,
        net_bandwidth=args.net_bandwidth,
    )
    print(describe_plan(plan, store=args.store, cutoffs=args.cutoffs, profile=args.profile))
    return 0


def _verify(args) -> int:
    from rankdist import verify

    report = verify(args.store, run=args.run, repair=args.repair)
    print(report.table())
    return 0 if report.intact else 1


def _demo(args) -> int:
    from rankdist.demo import run_demo

    run_demo(Path(args.out), n_cells=args.cells, workers=args.workers)
    return 0


COMMANDS = {
    "ingest": _ingest,
    "neighbors": _neighbors,
    "export": _export,
    "info": _info,
    "doctor": _doctor,
    "report": _report,
    "synth": _synth,
    "plan": _plan,
    "verify": _verify,
    "demo": _demo,
}
