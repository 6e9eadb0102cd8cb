"""Hides orjson from a server started by ``benchmarks/run.py --plain`` (see uvloop.py)."""

raise ImportError("orjson is hidden by benchmarks/run.py --plain")
