"""Hides msgspec from a server started by ``benchmarks/run.py --plain`` (see uvloop.py)."""

raise ImportError("msgspec is hidden by benchmarks/run.py --plain")
