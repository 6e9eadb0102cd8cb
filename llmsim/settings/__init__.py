"""The ``Settings`` model, its sources (flags > env > profile > file > defaults), profiles,
units, the per-instance plan and the fake-metrics spec.

The bottom layer: imports nothing else from llmsim.
"""
