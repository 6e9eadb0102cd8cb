"""Several instances: launching them, the process supervisor that keeps them running, fleet files.

May import ``server``, ``console`` and everything below them; never ``cli``.
"""
