"""``--responses builtin:tasks``: an answer that fits the kind of request.

Code requests get a fenced snippet in the language asked for, summarisation a few of
the prompt's own sentences, questions an answer-shaped paragraph, creative requests a
short poem or story, and anything else a conversational reply. Built from templates and
the prompt's words; with ``--seed`` the same prompt always gets the same answer.
"""

from __future__ import annotations

import random
import re
from typing import Literal

from llmsim.engine.corpus import SENTENCES

Task = Literal["code", "summary", "creative", "question", "chat"]

LANGUAGES: dict[str, tuple[str, ...]] = {
    "python": ("python", "py"),
    "javascript": ("javascript", "js", "node", "nodejs"),
    "typescript": ("typescript", "ts"),
    "java": ("java",),
    "go": ("go", "golang"),
    "rust": ("rust",),
    "cpp": ("c++", "cpp"),
    "c": ("c",),
    "csharp": ("c#", "csharp"),
    "ruby": ("ruby",),
    "sql": ("sql", "query", "postgres", "mysql", "sqlite"),
    "bash": ("bash", "shell", "sh", "zsh"),
}
_CODE = re.compile(
    r"\b(code|function|script|program|snippet|implement\w*|class|method|algorithm|regex|"
    r"refactor|debug|compile|sql|query)\b|```",
    re.IGNORECASE,
)
_IN_LANGUAGE = re.compile(
    r"\b(in|using) (python|javascript|typescript|java|go|golang|rust|c\+\+|c#|ruby|bash|sql)\b",
    re.IGNORECASE,
)
_SUMMARY = re.compile(
    r"\b(summari[sz]e|summary|summarise|tl;?dr|condense|key points|in short|recap)\b",
    re.IGNORECASE,
)
_CREATIVE = re.compile(
    r"\b(poem|story|haiku|limerick|song|lyrics|sonnet|fairy tale|fable|verse|creative|"
    r"imagine|invent a|once upon)\b",
    re.IGNORECASE,
)
_QUESTION_START = re.compile(
    r"^\s*(what|why|how|when|where|who|whom|which|is|are|can|could|does|do|did|should|"
    r"would|will|explain|define|describe|tell me)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "what why how when where which about could would should there their that this with "
        "from have does please write explain describe tell give make some into your than",
    )
)


def classify(text: str) -> Task:
    """The kind of request ``text`` is (the last user message or the prompt)."""
    if _SUMMARY.search(text):
        return "summary"
    if _CODE.search(text) or _IN_LANGUAGE.search(text):
        return "code"
    if _CREATIVE.search(text):
        return "creative"
    if text.rstrip().endswith("?") or _QUESTION_START.search(text):
        return "question"
    return "chat"


def task_answer(text: str, seed: int | None) -> str:
    """The answer to ``text``; the same for the same text and seed."""
    rng = random.Random(f"{seed}:{text}") if seed is not None else random.Random()
    task = classify(text)
    if task == "code":
        return _code(text, rng)
    if task == "summary":
        return _summary(text, rng)
    if task == "creative":
        return _creative(text, rng)
    if task == "question":
        return _question(text, rng)
    return _chat(text, rng)


_SHORT_NAMES = ("c", "go", "sh", "ts", "js")
"""Names too common as words to count alone: "in Go" or "a Go function" is Go."""


def _language_named(text: str) -> str | None:
    lowered = text.lower()
    words = set(re.findall(r"[a-z+#]+", lowered))
    for language, names in LANGUAGES.items():
        if any(name in words for name in names if name not in _SHORT_NAMES):
            return language
    for language, names in LANGUAGES.items():
        for name in names:
            quoted = re.escape(name)
            if re.search(
                rf"\b(in|a|an|using|with) {quoted}\b|\b{quoted} "
                r"(function|program|code|script|snippet|class|method|file|module)\b",
                lowered,
            ):
                return language
    return None


def _topic(text: str, rng: random.Random, fallback: str = "the task") -> str:
    words = [w.lower() for w in _WORD.findall(text) if w.lower() not in _STOPWORDS]
    if not words:
        return fallback
    return " ".join(words[:3]) if len(words) <= 3 else " ".join(rng.sample(words, 2))


def _identifier(text: str) -> str:
    words = [w.lower() for w in _WORD.findall(text) if w.lower() not in _STOPWORDS]
    skip = {"code", "function", "script", "program", "snippet", "python", "implement"}
    useful = [w.replace("'", "").replace("-", "_") for w in words if w not in skip]
    return "_".join(useful[:3]) or "solve"


_SNIPPETS: dict[str, str] = {
    "python": 'def {name}(items):\n    """{doc}"""\n    result = []\n    for item in items:\n'
    "        result.append(item)\n    return result\n",
    "javascript": "function {camel}(items) {{\n  // {doc}\n  return items.map((item) => item);\n}}\n",
    "typescript": "export function {camel}<T>(items: T[]): T[] {{\n  // {doc}\n"
    "  return items.map((item) => item);\n}}\n",
    "java": "public static <T> List<T> {camel}(List<T> items) {{\n    // {doc}\n"
    "    return new ArrayList<>(items);\n}}\n",
    "go": "func {pascal}(items []string) []string {{\n\t// {doc}\n\tresult := make([]string, 0, "
    "len(items))\n\tresult = append(result, items...)\n\treturn result\n}}\n",
    "rust": "pub fn {name}(items: &[String]) -> Vec<String> {{\n    // {doc}\n"
    "    items.to_vec()\n}}\n",
    "cpp": "std::vector<std::string> {camel}(const std::vector<std::string>& items) {{\n"
    "    // {doc}\n    return items;\n}}\n",
    "c": "int {name}(const int *items, size_t count) {{\n    /* {doc} */\n    int total = 0;\n"
    "    for (size_t i = 0; i < count; i++) total += items[i];\n    return total;\n}}\n",
    "csharp": "public static IEnumerable<T> {pascal}<T>(IEnumerable<T> items)\n{{\n    // {doc}\n"
    "    return items.ToList();\n}}\n",
    "ruby": "def {name}(items)\n  # {doc}\n  items.map {{ |item| item }}\nend\n",
    "sql": "-- {doc}\nSELECT id, name, created_at\nFROM items\nWHERE name IS NOT NULL\n"
    "ORDER BY created_at DESC\nLIMIT 10;\n",
    "bash": '#!/usr/bin/env bash\n# {doc}\nset -euo pipefail\nfor item in "$@"; do\n'
    '  echo "$item"\ndone\n',
}


def _code(text: str, rng: random.Random) -> str:
    language = _language_named(text) or "python"
    name = _identifier(text)
    parts = name.split("_")
    camel = parts[0] + "".join(part.title() for part in parts[1:])
    doc = f"Handle {_topic(text, rng)} step by step."
    snippet = _SNIPPETS[language].format(
        name=name, camel=camel, pascal=camel[:1].upper() + camel[1:], doc=doc
    )
    intro = rng.choice(
        (
            f"Here is a {language} implementation:",
            f"Sure, this {language} snippet does it:",
            f"One way to write it in {language}:",
        )
    )
    outro = rng.choice(
        (
            "It keeps the logic in one small function, so it is easy to test.",
            "Adjust the names and types to fit your code base.",
            "The loop is linear in the number of items.",
        )
    )
    return f"{intro}\n\n```{language}\n{snippet}```\n\n{outro}"


def _summary(text: str, rng: random.Random) -> str:
    """Two or three of the prompt's own sentences, in their order."""
    body = text.split(":", 1)[1] if ":" in text.split("\n", 1)[0] else text
    sentences = [s.strip() for s in _SENTENCE.split(body.strip()) if len(s.split()) >= 3]
    sentences = [s for s in sentences if not _SUMMARY.search(s)] or sentences
    if not sentences:
        return "In short: there is not much to summarise here."
    keep = min(len(sentences), rng.choice((2, 3)))
    longest = sorted(range(1, len(sentences)), key=lambda i: (-len(sentences[i]), i))
    picked = [sentences[i] for i in sorted({0, *longest[: keep - 1]})]
    lead = rng.choice(("In short:", "Summary:", "The main points:"))
    return f"{lead} " + " ".join(picked)


def _creative(text: str, rng: random.Random) -> str:
    topic = _topic(text, rng, "the sea")
    if re.search(r"\b(story|tale|fable|once upon)\b", text, re.IGNORECASE):
        lines = rng.sample(SENTENCES, 3)
        return (
            f"Once upon a time, there was a place known for {topic}. "
            + " ".join(lines)
            + " And from that day on, nobody forgot it."
        )
    images = ("silver light", "quiet rain", "a distant bell", "the turning tide", "morning air")
    first, second = rng.sample(images, 2)
    return (
        f"Of {topic} I sing, in {first},\n"
        f"where {second} drifts and softly stays;\n"
        f"the hours lean close, the world feels right,\n"
        f"and {topic} lingers through the days."
    )


def _question(text: str, rng: random.Random) -> str:
    topic = _topic(text, rng, "this")
    opener = rng.choice(
        (
            f"Good question. In short, {topic} comes down to a few key ideas.",
            f"The short answer: {topic} depends on the context, but the core idea is simple.",
            f"{topic[:1].upper() + topic[1:]} is best understood step by step.",
        )
    )
    details = " ".join(rng.sample(SENTENCES, 2))
    closer = rng.choice(
        (
            "In practice, start simple and measure before you optimise.",
            "I hope this helps; happy to go into more detail.",
            "That is the gist of it.",
        )
    )
    return f"{opener} {details} {closer}"


def _chat(text: str, rng: random.Random) -> str:
    if re.match(r"^\s*(hi|hello|hey|good (morning|afternoon|evening))\b", text, re.IGNORECASE):
        return rng.choice(
            (
                "Hello! How can I help you today?",
                "Hi there! What would you like to talk about?",
                "Hey! Nice to hear from you. What can I do for you?",
            )
        )
    if re.search(r"\b(thanks|thank you|cheers)\b", text, re.IGNORECASE):
        return rng.choice(("You're welcome!", "Happy to help!", "Any time. Anything else?"))
    topic = _topic(text, rng, "that")
    return rng.choice(
        (
            f"I see what you mean about {topic}. Tell me a bit more and I will help.",
            f"That sounds interesting. What would you like to do about {topic}?",
            f"Thanks for sharing. Let's look at {topic} together.",
        )
    )
