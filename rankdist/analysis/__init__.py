"""Analyses of stored results: purity, batch mixing, encodings compared, similarity, findings."""

from rankdist.analysis.batch import batch_mixing, batch_summary
from rankdist.analysis.compare import compare_encodings
from rankdist.analysis.findings import findings, run_statistics
from rankdist.analysis.hierarchy import Hierarchy, load_hierarchy
from rankdist.analysis.purity import purity, purity_table
from rankdist.analysis.readings import findings_table, reading, readings
from rankdist.analysis.similarity import type_similarity
from rankdist.analysis.tables import tidy_frame, write_tables

__all__ = [
    "Hierarchy",
    "batch_mixing",
    "batch_summary",
    "compare_encodings",
    "findings",
    "findings_table",
    "load_hierarchy",
    "purity",
    "purity_table",
    "reading",
    "readings",
    "run_statistics",
    "tidy_frame",
    "type_similarity",
    "write_tables",
]
