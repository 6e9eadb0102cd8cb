"""What can change while an instance runs: run-time adjustable settings, the readiness and
drain phase, failure injection.

May import ``observability``, ``engine`` and ``settings``; never the HTTP layers above.
"""
