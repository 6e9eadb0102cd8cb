"""Answers chosen before generation: response rules, built-in task answers, conversation
datasets and recorded replays.

Each source looks at a neutral :class:`RequestView` and may return a :class:`Choice`; the
HTTP layer passes the answer on to the engine, so every chosen answer still flows through
the scheduler, the latency model and the metrics. May import ``runtime``,
``observability``, ``engine`` and ``settings``; never the HTTP layers above, never aiohttp.
"""

from llmsim.answers.choice import Choice, RuleError
from llmsim.answers.responder import Responder
from llmsim.answers.view import RequestView

__all__ = ["Choice", "RequestView", "Responder", "RuleError"]
