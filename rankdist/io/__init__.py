"""Inputs and the store: readers for each source format, ingest, the store layout."""
