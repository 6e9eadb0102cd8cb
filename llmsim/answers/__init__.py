"""Answers chosen before generation (response rules, task answers, datasets, replays), which
still flow through the scheduler, latency model and metrics.

May import ``runtime``, ``observability``, ``engine`` and ``settings``; never aiohttp.
"""

from llmsim.answers.choice import Choice, RuleError
from llmsim.answers.responder import Responder
from llmsim.answers.view import RequestView

__all__ = ["Choice", "RequestView", "Responder", "RuleError"]
