"""Keep the public API honest: exported names exist, are documented, and follow conventions."""

from __future__ import annotations

import inspect

import rankdist


def test_all_names_exist_and_are_documented():
    for name in rankdist.__all__:
        obj = getattr(rankdist, name)
        if callable(obj) and not isinstance(obj, dict):
            assert inspect.getdoc(obj), f"rankdist.{name} has no docstring"


def test_public_functions_document_their_parameters():
    for fn in (rankdist.ingest, rankdist.neighbors, rankdist.load, rankdist.purity_table):
        doc = inspect.getdoc(fn)
        assert "Parameters" in doc and "Returns" in doc, fn.__name__
        for param in inspect.signature(fn).parameters:
            assert param in doc, f"{fn.__name__}: parameter {param!r} not in its docstring"


def test_contract_signatures():
    ingest = inspect.signature(rankdist.ingest).parameters
    assert list(ingest)[:2] == ["source", "store_path"]
    for p in ("cell_type", "coarse_type", "batch", "genes"):
        assert ingest[p].default is None and ingest[p].kind is inspect.Parameter.KEYWORD_ONLY
    nb = inspect.signature(rankdist.neighbors).parameters
    assert list(nb)[:5] == ["store", "encoding", "k", "cutoffs", "client"]
    assert nb["encoding"].default == "spearman" and nb["client"].default is None
    assert set(rankdist.ENCODINGS) >= {"spearman", "pearson"}
