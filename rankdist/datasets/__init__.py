"""Synthetic data (docs/synth.md).

``toy``: small labelled counts in memory, for the tests and the demo. ``atlas``: the
prefrontal-cortex-shaped atlas generated on Dask, for scale. Both label cells with
``labels`` (a nested type/class/batch design); ``counts`` holds the toy's
negative-binomial draw, which the atlas keeps in its own kernel (see that module).
"""
