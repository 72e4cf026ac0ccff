"""The report: a store's runs as CSV tables, PNG/SVG figures and one self-contained HTML page."""

from rankdist.report.build import build_report

__all__ = ["build_report"]
