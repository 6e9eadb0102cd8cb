"""Talking to a real OpenAI-compatible server: forwarding requests, reading its answers
as they stream, and recording them (``llmsim record``).

May import ``answers`` and the packages below it; the HTTP handlers of ``api`` sit above.
"""
