"""The README's "From Python" block, as a user would first run it: a plain script file.

The block is read from README.md at test time and written, unchanged and without an
``if __name__ == "__main__":`` guard, as ``example.py`` next to a ``pbmc.h5ad`` made from
scanpy's bundled pbmc68k_reduced (its ``.raw``, non-negative expression, with its obs:
the block's ``cell_type="bulk_labels"``). ``python example.py`` must succeed: the
embedded default runs in the calling process, so nothing re-runs the script.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import scanpy as sc

import rankdist

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_python_block() -> str:
    """The first ``python`` code block under the README's "From Python" heading."""
    text = README.read_text()
    section = text.split("\n## From Python\n", 1)
    assert len(section) == 2, f"{README} has no '## From Python' section"
    match = re.search(r"```python\n(.*?)```", section[1], flags=re.DOTALL)
    assert match, f"{README}: no ```python block under '## From Python'"
    return match.group(1)


def test_readme_from_python_block_runs_as_a_plain_script(tmp_path):
    code = readme_python_block()
    assert "__main__" not in code
    assert 'rankdist.ingest("pbmc.h5ad", "pbmc.zarr", cell_type="bulk_labels")' in code
    pbmc = sc.datasets.pbmc68k_reduced()
    ad.AnnData(X=pbmc.raw.X, obs=pbmc.obs, var=pbmc.raw.var).write_h5ad(tmp_path / "pbmc.h5ad")
    (tmp_path / "example.py").write_text(code)

    proc = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    # one cluster, in this process: its start-up line, once
    assert proc.stderr.count("Dask: 1 worker(s)") == 1, proc.stderr
    # what the block leaves behind: the store and its "spearman" run, k = 30, cutoff 0.5
    res = rankdist.load(tmp_path / "pbmc.zarr", run="spearman")
    assert res.indices.shape == res.similarities.shape == (700, 30)
    assert res.metadata["cutoffs"] == [0.5]
