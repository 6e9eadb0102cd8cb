"""Operating a running server over HTTP: health, version, metrics, load and admin routes.

Liveness and readiness, ``/version`` and ``/metrics`` (:mod:`.system`), vLLM's ``/load``
count (:mod:`.load`), the ``/admin/*`` runtime settings (:mod:`.runtime`) and response
rules (:mod:`.answers`), and vLLM's development-mode endpoints: ``/server_info``, sleep
mode and the rest of ``VLLM_SERVER_DEV_MODE=1``.
"""
