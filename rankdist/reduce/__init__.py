"""Reductions: per-block partials, their merge, and the neighbours result type."""
