"""What the router may do next: the stopping rules and the step grammar, one implementation for serving
(the graph) and training (the rollout).

* A route call asks a model something it was already asked (same model, same query up to case and spacing):
  it is not made again, and the run goes to its final answer.
* A route call that sent the question itself and got an answer back (a short reply, or one ending in an
  ``Answer:`` line) answers the question: only the final answer is left. When the question asks for a
  choice letter or a number and the reply states one (:func:`graphs.answers.stated_answer`), the run ends
  with it as it stands, without another router step: a faithful copy is all the router could add, and
  reading the whole trajectory again to write it cost more than the routed call itself (Qwen2.5-0.5B
  routing: about 570 tokens read again per CommonsenseQA item, for one letter). A span the router still
  writes: it cuts a sentence down to the answer.
* After ``max_turns`` route calls only the final answer is left; before ``min_routes`` none is allowed.
* Under the step grammar the first route call passes the question on whole (:func:`passed_on`);
  later ones may ask anything. A small router left free copies a model's descriptor or the prompt's
  example thought as its first query (Qwen2.5-0.5B: 8 of 13 CommonsenseQA items), so the model it picks
  is never asked the question. Choosing the model is the decision that first step makes.
* The final answer takes the question's format (:func:`graphs.answers.answer_format`): a choice letter, a
  number, or a short span.

Self-hosted routers decode each step under :func:`step_grammar` built from these rules, so they cannot
break them; hosted routers are held to them by the graph (a forbidden route call ends in the final answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from graphs import answers

SAME_QUESTION = 0.8
"""Share of the question's words a query must contain to count as the question itself."""
_STOPWORDS = frozenset(
    ("is", "of", "in", "to", "and", "or", "what", "which", "who", "how", "does", "did", "do")
)


@dataclass(frozen=True)
class Route:
    """A route call made so far: the model, the query, and its reply (None when it failed or was refused)."""

    model: str
    query: str
    reply: str | None


@dataclass(frozen=True)
class StepRules:
    allow_route: bool
    allow_answer: bool
    answer_only: str | None = None
    """Why only the final answer is left: 'max turns' or 'answered'; None while routing is allowed."""
    query: str | None = None
    """The query the next route call must carry (the question itself, before any route); None: any."""
    answer: str | None = None
    """The choice letter or number a route call's reply already gave the question: the run ends with it."""


def step_rules(question: str, routes: Sequence[Route], *, max_turns: int, min_routes: int = 0) -> StepRules:
    """What the router's next step may be, given the route calls made so far."""
    answered = [r for r in routes if answers_question(question, r.query, r.reply)]
    if answered:
        # A letter or a number is copied; a span the router still writes, cutting a reply to its answer.
        copied = answers.answer_format(question) != "span"
        given = answers.stated_answer(question, answered[0].reply) if copied else None
        return StepRules(allow_route=False, allow_answer=True, answer_only="answered", answer=given)
    if len(routes) >= max_turns:
        return StepRules(allow_route=False, allow_answer=True, answer_only="max turns")
    first = passed_on(question) if not routes else None
    return StepRules(allow_route=True, allow_answer=len(routes) >= min_routes, query=first or None)


def passed_on(question: str) -> str:
    """The question as a route call's query carries it: whole, lines and all, exactly as a model asked
    directly gets it. Squeezed onto one line and cut to 400 characters (as it once was), Qwen2.5-1.5B
    answered 5 of 16 CommonsenseQA items differently, and 9 of 50 GSM8K problems lost their last lines."""
    return question.strip()


def is_repeat(model: str, query: str, routes: Sequence[Route]) -> bool:
    """Whether this exact call (model, query up to case and spacing) was made before."""
    key = (model.lower(), _squash(query))
    return any((r.model.lower(), _squash(r.query)) == key for r in routes)


def answers_question(question: str, query: str, reply: str | None) -> bool:
    """Whether a route call asked the question itself (nearly all its words) and got an answer back."""
    wanted = _words(question)
    if not wanted or answers.reply_answer(reply) is None:
        return False
    return len(wanted & _words(query)) / len(wanted) >= SAME_QUESTION


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def _words(text: str) -> set[str]:
    return set(answers.normalize_answer(text).split()) - _STOPWORDS


# -- grammars --------------------------------------------------------------------------------------------
QUERY_MAX_CHARS = 400
"""Longest sub-query a constrained router may write itself, on one line (a passed-on question has no cap)."""
THOUGHT_MAX_CHARS = 100
"""Longest thought: a sentence of reasoning, too short to copy the question into (the query carries it)."""


_GBNF_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (line breaks escaped: a passed-on question keeps its lines)."""
    return '"' + text.translate(_GBNF_ESCAPES) + '"'


def answer_body(question: str) -> str:
    """GBNF for the answer's text in the question's format (after ``<answer> ``, before `` </answer>``)."""
    fmt = answers.answer_format(question)
    letters = answers.choice_letters(question)
    if fmt == "choice" and letters:
        return "[" + "".join(letters) + "]"
    if fmt == "number":
        return '"-"? [0-9] [0-9,]{0,11} ("." [0-9]{1,4})?'
    return "[^<\\n ] [^<\\n]{0,60}"


def step_grammar(model_names: Sequence[str], question: str = "", rules: StepRules | None = None) -> str:
    """GBNF for one router step: a bounded thought, then a route to a known model and/or an answer in the
    question's format, as ``rules`` allow (default: both).

    Bounded repetitions keep a weak router from running to the token limit inside a tag.
    """
    rules = rules or StepRules(allow_route=True, allow_answer=True)
    actions = [name for name, ok in (("search", rules.allow_route), ("answer", rules.allow_answer)) if ok]
    if not actions:
        raise ValueError("a router step must allow a route call or an answer")
    models = " | ".join(gbnf_literal(n) for n in model_names)
    query = gbnf_literal(rules.query) if rules.query else f"[^<\\n ] [^<\\n]{{0,{QUERY_MAX_CHARS}}}"
    return "\n".join(
        [
            f'root ::= "<think>" thought "</think>\\n" ( {" | ".join(actions)} )',
            f'search ::= "<search> " model ": " {query} " </search>"',
            'answer ::= "<answer> " body " </answer>"',
            f"model ::= {models}",
            f"body ::= {answer_body(question)}",
            # Something to say: a thought of spaces alone breaks Router-R1's format (an empty <think>).
            f'thought ::= " "? [^<\\n ] [^<\\n]{{0,{THOUGHT_MAX_CHARS - 2}}}',
        ]
    )


def model_name_grammar(model_names: Sequence[str]) -> str:
    """GBNF for exactly one of the pool's model names (a zero-shot router's pick)."""
    return "root ::= " + " | ".join(gbnf_literal(n) for n in model_names)


def final_answer_grammar(question: str = "") -> str:
    """GBNF for a forced final answer, written after ``<answer> ``."""
    return f'root ::= {answer_body(question)} " </answer>"'
