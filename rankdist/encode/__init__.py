"""Encodings: expression rows -> standardised float32 rows whose dot product is a correlation."""
