"""Where a request's answer comes from, in order of precedence.

1. the first matching response rule (``--responses``);
2. a recorded answer for the same request (``--replay``), or 404 with ``--replay-strict``;
3. the recorded answer of the same conversation in the dataset (``--dataset``);
4. the built-in task answers (``--responses builtin:tasks``);
5. in random mode, an assistant turn drawn from the dataset;
6. otherwise nothing: the engine's configured mode answers.
"""

from __future__ import annotations

import random
from typing import Protocol

from llmsim.answers.choice import Choice, RuleError
from llmsim.answers.rules import RuleMatcher
from llmsim.answers.tasks import task_answer
from llmsim.answers.view import RequestView
from llmsim.engine import Answer
from llmsim.settings.responses import ResponseRules

LOOP_STEPS = 50_000
"""Matcher steps a choice may take at most on the event loop (tens of milliseconds); a
request whose text may cost more is answered from a worker thread."""
LOOP_TEXT = 65_536
"""Characters of messages the replay, dataset and task sources read on the event loop."""

UNRECORDED = RuleError(
    404, "NotFoundError", "No recorded answer matches this request (the replay is strict)."
)


class AnswerSource(Protocol):
    """A dataset or a recording: an exact answer for a request, or a drawn one."""

    def exact(self, view: RequestView) -> Choice | None: ...

    def draw(self, view: RequestView, rng: random.Random) -> Choice | None: ...


class Responder:
    """Chooses answers for one server; the rule set can be replaced while it runs."""

    def __init__(
        self,
        rules: ResponseRules | None = None,
        *,
        seed: int | None = None,
        replay: AnswerSource | None = None,
        strict_replay: bool = False,
        dataset: AnswerSource | None = None,
    ) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self.matcher = RuleMatcher(rules or ResponseRules(), self._rng)
        self.replay = replay
        self.strict_replay = strict_replay
        self.dataset = dataset
        self.active = self._any_source()

    @property
    def rules(self) -> ResponseRules:
        return self.matcher.rules

    def replace_rules(self, rules: ResponseRules) -> None:
        """Use ``rules`` from the next request on; every rule's count starts again."""
        self.matcher = RuleMatcher(rules, self._rng)
        self.active = self._any_source()

    def _any_source(self) -> bool:
        """Whether any source is configured (else every request keeps the engine's mode).

        Kept in :attr:`active`, read by every request, so a plain server pays one look.
        """
        rules = self.matcher.rules
        return bool(rules.rules or rules.builtin or self.replay or self.dataset)

    def heavy(self, view: RequestView) -> bool:
        """Whether choosing may take more than a moment, so it runs off the event loop: a
        rule's tool call checked against the client's schema, or a long text to search."""
        matcher = self.matcher
        if matcher.calls_tools and view.tools is not None:
            return True
        if len(view.text) * matcher.search_cost > LOOP_STEPS:
            return True
        if self.replay is None and self.dataset is None and not matcher.rules.builtin:
            return False
        return sum(len(text) for _, text in view.messages) > LOOP_TEXT

    def choose(self, view: RequestView, mode: str) -> Choice | None:
        """The chosen answer for ``view``; None leaves it to the engine's ``mode``."""
        choice = self.matcher.choose(view)
        if choice is not None:
            return choice
        if self.replay is not None:
            choice = self.replay.exact(view)
            if choice is not None:
                return choice
            if self.strict_replay:
                return Choice("replay", error=UNRECORDED)
        if self.dataset is not None:
            choice = self.dataset.exact(view)
            if choice is not None:
                return choice
        if self.matcher.rules.builtin == "tasks":
            seed = view.seed if view.seed is not None else self._seed
            return Choice("builtin:tasks", answer=Answer(task_answer(view.text, seed)))
        if self.dataset is not None and mode == "random":
            return self.dataset.draw(view, self._rng)
        return None
