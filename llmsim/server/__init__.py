"""One instance: the aiohttp runner with its start-up, signals and graceful drain, the forced
exit when a drain cannot run, the listening socket and the choice of event loop.

May import ``console``, ``api`` and everything below them; never ``pool`` or ``cli``.
"""
