"""What a person sees in the terminal: the start-up banner and the live dashboard.

Beside ``api`` (neither imports the other); may import ``runtime``, ``observability``,
``engine`` and ``settings``.
"""
