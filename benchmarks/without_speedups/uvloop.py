"""Hides uvloop from a server started by ``benchmarks/run.py --plain``.

This directory goes first on the server's ``PYTHONPATH``, so ``import uvloop`` fails as it
does in a plain install and the server falls back to asyncio. The load generators do not
get it: only the server under test runs without the speed-ups.
"""

raise ImportError("uvloop is hidden by benchmarks/run.py --plain")
