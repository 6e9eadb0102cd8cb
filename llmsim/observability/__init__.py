"""What an instance reports: Prometheus metrics named like vLLM's and their fast metric types,
pinned (fake) metric values, live statistics for the dashboard, and logging.

May import ``engine`` and ``settings`` only.
"""
