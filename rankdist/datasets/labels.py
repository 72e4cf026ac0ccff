"""The labels of a nested design, as both synthetic generators write them."""

from __future__ import annotations


def letters(i: int) -> str:
    """0 -> 'A', 25 -> 'Z', 26 -> 'AA': short class names that fit in a table."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out
