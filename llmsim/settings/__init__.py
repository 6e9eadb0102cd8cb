"""The ``Settings`` model and where its values come from (flags > environment > profile > file >
defaults): reference metadata, named and built-in profiles, units, the per-instance plan, and
the fake-metrics spec.

The bottom layer: imports nothing else from llmsim.
"""
