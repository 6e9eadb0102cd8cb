"""vLLM's front-end admission limits: a request refused before any engine takes it.

``--max-num-queued-reqs`` caps the sequences in flight (waiting or running) on all of a
server's engines together, a new request counting its ``n`` times its prompts;
``--max-num-queued-tokens`` caps the prompt tokens of the sequences still in prefill (no
token out yet), counted whole, as vLLM's front end counts them. Over either, the request is
refused with vLLM's words (503 on HTTP, so that a balancer retries elsewhere) and
``vllm:admission_rejections_total`` counts it by the limit's name.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmsim.engine.observer import EngineObserver
    from llmsim.engine.scheduler import Scheduler
    from llmsim.settings.model import Settings

QUEUED_REQS = "max_num_queued_reqs"
QUEUED_TOKENS = "max_num_queued_tokens"
MESSAGES = {
    QUEUED_REQS: "The engine is currently busy and cannot accept new requests. "
    "Please try again later or on a different instance.",
    QUEUED_TOKENS: "The engine has reached its prefill token backlog limit. "
    "Please try again later or on a different instance.",
}


class AdmissionError(Exception):
    """A request over a queue limit; ``reason`` names the limit."""

    def __init__(self, reason: str) -> None:
        super().__init__(MESSAGES[reason])
        self.reason = reason
        self.message = MESSAGES[reason]


def limited(settings: Settings) -> bool:
    return settings.max_num_queued_reqs is not None or settings.max_num_queued_tokens is not None


def admit(
    schedulers: Iterable[Scheduler], settings: Settings, sequences: int, observer: EngineObserver
) -> None:
    """Raise :class:`AdmissionError` (and tell ``observer``) if a request of ``sequences``
    sequences is over a limit."""
    reason = refusal(schedulers, settings, sequences)
    if reason is not None:
        observer.admission_rejected(reason)
        raise AdmissionError(reason)


def refusal(schedulers: Iterable[Scheduler], settings: Settings, sequences: int) -> str | None:
    """The limit a request of ``sequences`` sequences is over, or None: it may enter."""
    schedulers = tuple(schedulers)
    limit = settings.max_num_queued_reqs
    if limit is not None:
        in_flight = sum(s.num_running + s.num_waiting for s in schedulers)
        if in_flight + sequences > limit:
            return QUEUED_REQS
    limit = settings.max_num_queued_tokens
    if limit is not None and backlog_reaches(schedulers, limit):
        return QUEUED_TOKENS
    return None


def backlog_reaches(schedulers: Iterable[Scheduler], limit: int) -> bool:
    """Whether the prompt tokens of the sequences in flight that have not released a token
    yet add up to ``limit``. The queues are read first and the count stops at the limit, so
    a long queue costs no more than the limit's worth of prompts plus the running set."""
    if limit <= 0:
        return True
    backlog = 0
    for scheduler in schedulers:
        for sequence in chain(scheduler.waiting, scheduler.running):
            if sequence.first_token_at is None:
                backlog += sequence.prompt_tokens
                if backlog >= limit:
                    return True
    return False
