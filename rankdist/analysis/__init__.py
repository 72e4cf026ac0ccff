"""Analyses of stored results: purity tables."""

from rankdist.analysis.purity import purity_table

__all__ = ["purity_table"]
