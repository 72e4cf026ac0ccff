"""Capacity planning: the wall-time and memory model of a run, its calibrated constants,
their measurement on real tiles, and the atlas-scale scheduler simulation."""
