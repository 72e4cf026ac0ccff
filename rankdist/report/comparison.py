"""The comparison of every run with the baseline run (``pearson``, or ``--baseline RUN``).

Each pair reads its two runs (the run, then the baseline), compares them block by block
(:func:`rankdist.analysis.compare_encodings`) and drops them, so the report holds at
most the two runs compared.
"""

from __future__ import annotations

from rankdist.analysis import compare_encodings
from rankdist.analysis.findings import overlap_statistics
from rankdist.report import figures as figs
from rankdist.report import html as markup


def compare_section(rep) -> markup.Section:
    """Every run against the baseline run: neighbour overlap per cell, batch-driven neighbours.

    ``rep`` is the :class:`rankdist.report.sections.ReportContext` (its ``baseline`` set).

    Each pair reads its two runs (the run, then the baseline) and drops them; the per-cell
    overlaps are bootstrapped into ``rep.overlaps`` for the findings.
    """
    sec = markup.Section("Rank vs raw expression", "compare")
    base = rep.baseline
    others = [name for name in rep.runs if name != base]
    if base is None or not others:
        encodings = {n: r.metadata.get("encoding") for n, r in rep.runs.items()}
        sec.add(markup.note(markup.no_pair(rep.store.path, encodings)))
        return sec
    missing = [r for r in ("cell_type",) if r not in rep.store.labels]
    if missing:
        sec.add(markup.note(markup.no_labels(missing, "the rank-vs-raw comparison")))
        return sec
    sec.add(markup.explanation(markup.COMPARE))
    for a in others:
        if rep.runs[a].k != rep.runs[base].k:
            sec.add(markup.note(markup.k_differs(a, base, rep.runs[a].k, rep.runs[base].k)))
            continue
        cmp = compare_encodings(rep.load(a), rep.load(base))  # the two runs, read for this only
        rep.overlaps.append(
            overlap_statistics(
                cmp["jaccard"].to_numpy(),
                rep.store.labels["batch"].codes if "batch" in rep.store.labels else None,
                run=a,
                encoding=str(rep.runs[a].metadata.get("encoding", "")),
                versus=base,
                resamples=rep.resamples,
                seed=rep.seed,
            )
        )
        paths = rep.tables({f"compare_{a}_{base}": cmp})
        saved = rep.figure(figs.jaccard_histogram(cmp), f"compare_{a}_{base}")
        sec.add(f"<h3>{markup.esc(a)} vs {markup.esc(base)}</h3>")
        caption = f"Runs compared: {a} and {base}."
        sec.add(markup.figure(saved, f"neighbour overlap {a} vs {base}", caption))
        if "batch" in rep.store.labels:
            per_type = cmp[["cells", "jaccard_mean", "batch_driven_a", "batch_driven_b"]]
            frame = per_type.to_dataframe().rename(
                columns={
                    "batch_driven_a": f"batch-driven ({a})",
                    "batch_driven_b": f"batch-driven ({base})",
                }
            )
            frame["more batch-driven"] = cmp["more_batch_driven"].to_numpy()
        else:  # no batch labels: the overlap alone
            frame = cmp[["cells", "jaccard_mean"]].to_dataframe()
        sec.add(markup.table(frame))
        sec.add(markup.file_links(paths, rep.out))
    sec.add(markup.explanation(markup.COMPARE_TABLE))
    return sec
