"""The answer sources (response rules, tasks, datasets, replays) asked before a request runs.

Every door asks the same :class:`~llmsim.answers.Responder` with a
:class:`~llmsim.answers.RequestView` of its request; what the sources choose becomes the
engine's answer, its token limit and its timing, or a :class:`ServiceError` with the
status and type the rule named.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from llmsim.answers import Choice, RequestView, Responder
from llmsim.engine import Answer, Target, TimingOverride
from llmsim.service.errors import ErrorKind, ServiceError

logger = logging.getLogger("llmsim.answers")


@dataclass(frozen=True, slots=True)
class Chosen:
    answer: Answer | None
    max_tokens: int | None
    timing: TimingOverride | None


async def choose(responder: Responder, view: RequestView, mode: str, limit: int | None) -> Chosen:
    """What the engine should say for the request ``view`` shows; raises the error a rule
    chose. ``limit`` is the request's own token limit, kept unless a source sets one.

    A choice that may take long (a long text for the rule regexes, a tool call checked
    against the client's schema) is made in a worker thread, the event loop free meanwhile.
    """
    if responder.heavy(view):
        choice = await asyncio.to_thread(responder.choose, view, mode)
    else:
        choice = responder.choose(view, mode)
    if choice is None:
        return Chosen(None, limit, None)
    return apply(choice, limit)


def apply(choice: Choice, limit: int | None) -> Chosen:
    if choice.error is not None:
        error = choice.error
        logger.debug("%s answers with error %s", choice.source, error.status)
        raise ServiceError(ErrorKind.FAULT, error.message, None, error.status, error.type)
    max_tokens = limit if choice.max_tokens is None else choice.max_tokens
    return Chosen(choice.answer, max_tokens, choice.timing)


def prompt_view(
    target: Target,
    text: str,
    max_tokens: int | None,
    seed: int | None,
    sampling: dict[str, object] | None = None,
) -> RequestView:
    """A completions-style view of a plain prompt (tokens-in requests: gRPC's ``Generate``).

    The sources see it as ``POST /v1/completions`` with that prompt would look.
    """
    return RequestView(
        "completions",
        model=target.name,
        adapter=target.adapter,
        text=text,
        messages=(("user", text),),
        max_tokens=max_tokens,
        seed=seed,
        sampling=sampling or {},
    )
