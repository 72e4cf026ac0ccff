"""Analyses of stored results: purity, batch mixing, encodings, type similarity, tables."""

from rankdist.analysis.batch import batch_mixing, batch_summary
from rankdist.analysis.compare import compare_encodings
from rankdist.analysis.hierarchy import Hierarchy, load_hierarchy
from rankdist.analysis.purity import purity, purity_table
from rankdist.analysis.similarity import type_similarity
from rankdist.analysis.tables import tidy_frame, write_tables

__all__ = [
    "Hierarchy",
    "batch_mixing",
    "batch_summary",
    "compare_encodings",
    "load_hierarchy",
    "purity",
    "purity_table",
    "tidy_frame",
    "type_similarity",
    "write_tables",
]
