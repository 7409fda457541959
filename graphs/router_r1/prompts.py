"""Router-R1's prompts and action parser: one implementation for the graph, evaluation and training (the
step grammar and stopping rules are :mod:`graphs.router_r1.rules`).

The router reasons in ``<think>…</think>``, routes with ``<search> Model-Name: sub-query </search>``,
receives ``<information>…</information>`` and ends with ``<answer>…</answer>`` (the paper's protocol).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from graphs.answers import AnswerFormat, answer_format
from graphs.ports import ModelCard

ROUTER_SYSTEM = "You are a helpful assistant that answers questions by consulting other language models."

ROUTER_INSTRUCTIONS = """Answer the question by consulting the models below, weighing each one's ability \
against its price. Before each action, reason briefly inside <think> ... </think>, for example: \
<think> Maths and multiple choice need the strongest model; a simple fact may go to a cheaper one. </think> \
To consult a model, write <search> Model-Name: query </search> with the exact name of one of [{names}]; \
its reply comes back inside <information> ... </information>. To have a model solve the whole question, \
pass the question on word for word as the query. Never ask a model the same query twice. Once the \
information answers the question, give the final answer inside <answer> ... </answer>: {answer_style}.

{descriptions}

Question: {question}
"""
QUESTION_LABEL = "Question: "

MODEL_DESCRIPTION = "- {name} (${price_in:.2f}/${price_out:.2f} per 1M tokens in/out, ~{latency_s:.1f}s): \
{descriptor}{performance}"

POOL_MODEL_SYSTEM = (
    "You answer one sub-question for a coordinating model that is solving a larger question. For a fact, "
    "reply with the answer alone, in as few words as possible (a name, a date, a place), not a sentence. "
    "For a calculation or a choice, reason in a few short steps, then end with a line 'Answer: <answer>'."
)
ANSWER_STYLES: dict[AnswerFormat, str] = {
    "span": "the shortest answer, a few words",
    "number": "the final number only",
    "choice": "the letter of the correct choice only",
}
"""How the final answer is written for each answer format the question asks for. No example answer: a
small router copies it (the paper's "<answer> Beijing </answer>" came back as the answer to unrelated
questions)."""

INFORMATION_BLOCK = "\n<information>{content}</information>\n"
BUDGET_REFUSAL = (
    "Not called: {model} would cost up to ${estimate:.6f} but only ${left:.6f} of the ${budget:.6f} "
    "budget is left. Answer with what you know."
)
ENDPOINT_FAILURE = "Error: {model} did not answer ({reason}). Try another model or answer."
FORCED_ANSWER_PREFIX = "\n<answer> "
RELAYED_ANSWER = "<answer> {answer} </answer>"
"""A reply's answer to the question itself, ending the trajectory after its information block."""

SEARCH_STOP = "</search>"
ANSWER_STOP = "</answer>"
_TAGS = ("think", "search", "answer", "information")
TAG_PATTERN = re.compile(r"<(/?)(think|search|answer|information)>")
"""Any opening or closing protocol tag: group 1 is "/" for a closing tag, group 2 the tag's name."""


def render_models(models: Sequence[ModelCard]) -> str:
    return "\n".join(
        MODEL_DESCRIPTION.format(
            name=m.name,
            price_in=m.price_in,
            price_out=m.price_out,
            latency_s=m.latency_s,
            descriptor=" ".join(m.descriptor.split()),
            performance=f" Example performance: {m.example_performance}" if m.example_performance else "",
        )
        for m in models
    )


def router_user_prompt(question: str, models: Sequence[ModelCard]) -> str:
    style = ANSWER_STYLES[answer_format(question)]
    return ROUTER_INSTRUCTIONS.format(
        names=", ".join(m.name for m in models),
        descriptions=render_models(models),
        answer_style=style,
        question=question.strip(),
    )


def router_messages(question: str, models: Sequence[ModelCard]) -> list[tuple[str, str]]:
    return [("system", ROUTER_SYSTEM), ("human", router_user_prompt(question, models))]


def question_of(prompt: object) -> str:
    """The question a router prompt asks (chat messages or their text): what follows its last 'Question:'.

    >>> question_of([{"role": "user", "content": "... Question: Who wrote Hamlet?\\n"}])
    'Who wrote Hamlet?'
    """
    if isinstance(prompt, list):
        prompt = next((m.get("content", "") for m in reversed(prompt) if m.get("role") == "user"), "")
    return str(prompt).rpartition(QUESTION_LABEL)[2].strip()


class Action(BaseModel):
    """What one router step asked for."""

    kind: Literal["route", "answer", "malformed"]
    model: str | None = None
    query: str | None = None
    answer: str | None = None
    reason: str | None = None


def parse_action(text: str, known_models: Sequence[str]) -> Action:
    """Parse the action at the end of one router step; never raises.

    >>> parse_action("<think>x</think><search> Gemma: capital of France? </search>", ["Gemma"]).model
    'Gemma'
    """
    search_at, answer_at = text.find("<search>"), text.find("<answer>")
    if search_at < 0 and answer_at < 0:
        return Action(kind="malformed", reason="no action: expected <search> or <answer>")
    if answer_at >= 0 and (search_at < 0 or answer_at < search_at):
        body = _closed_body(text, "answer", answer_at)
        if body is None:
            return Action(kind="malformed", reason="unclosed <answer> tag")
        if not body.strip():
            return Action(kind="malformed", reason="empty <answer>")
        return Action(kind="answer", answer=body.strip())
    body = _closed_body(text, "search", search_at)
    if body is None:
        return Action(kind="malformed", reason="unclosed <search> tag")
    if _has_tag(body):
        return Action(kind="malformed", reason="nested tag inside <search>")
    name, sep, query = body.partition(":")
    if not sep:
        return Action(kind="malformed", reason="route call lacks 'Model-Name: query'")
    name, query = name.strip(), query.strip()
    if not query:
        return Action(kind="malformed", model=name, reason=f"empty query for {name or 'no model'}")
    canonical = {m.lower(): m for m in known_models}.get(name.lower())
    if canonical is None:
        return Action(kind="malformed", model=name, query=query, reason=f"unknown model {name!r}")
    return Action(kind="route", model=canonical, query=query)


def _closed_body(text: str, tag: str, start: int) -> str | None:
    end = text.find(f"</{tag}>", start)
    return None if end < 0 else text[start + len(tag) + 2 : end]


def _has_tag(text: str) -> bool:
    return any(f"<{t}>" in text or f"</{t}>" in text for t in _TAGS)


def extract_answer(trajectory: str) -> str | None:
    """The last complete <answer> of a trajectory, stripped; None when there is none."""
    found = re.findall(r"<answer>(.*?)</answer>", trajectory, flags=re.DOTALL)
    return found[-1].strip() if found else None


def information(content: str) -> str:
    # The pool model's text must not be able to close or open protocol tags in the router's context.
    for tag in _TAGS:
        content = content.replace(f"<{tag}>", f"({tag})").replace(f"</{tag}>", f"(/{tag})")
    return INFORMATION_BLOCK.format(content=content.strip())
