"""R2-Reasoner's prompts, output schemas and parsers: decomposition, allocation, subtask and final answers.

The router writes its decomposition and allocation as JSON. Self-hosted routers are constrained to the JSON
schemas below (llama.cpp: ``{"json_schema": …}`` in the request body; vLLM: ``structured_outputs``), so
even an untrained 135M router emits parseable JSON; the parsers still check every bound and never raise
anything but :class:`DecompositionError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from graphs.answers import ANSWER_RULES, AnswerFormat, choice_letters, reply_answer
from graphs.ports import ModelCard

Level = Literal["easy", "medium", "hard"]
LEVELS: tuple[Level, ...] = ("easy", "medium", "hard")

SUBTASK_TEXT_MAX_CHARS = 300
"""Longest subtask text the schema lets a router write (bounds a rambling router's output)."""

# -- decomposition --------------------------------------------------------------------------------------
DECOMPOSE_SYSTEM = "You break hard questions into small, ordered subtasks that other models can solve."

DECOMPOSE_INSTRUCTIONS = """The question below will be answered last, by a model that is given the \
answers of the steps you list first. List at most {max_subtasks} steps that make it easier to answer: each \
one short, self-contained question that a small model can answer, with the ids of the earlier steps whose \
answers it needs in depends_on. A simple question needs no steps.
Reply with JSON only: {{"subtasks": [{{"id": "1", "text": "<a step>", "depends_on": []}}, \
{{"id": "2", "text": "<a step that needs step 1>", "depends_on": ["1"]}}]}}, or {{"subtasks": []}}.

Question: {question}"""
"""No concrete example step: Qwen2.5-0.5B copied the example it was shown ("Who directed the film Jaws?")
as the steps of unrelated questions."""


class Subtask(BaseModel):
    """One step of a decomposition: the training target of the decomposer."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    depends_on: list[str] = []


def with_question(steps: Sequence[Subtask], question: str) -> list[Subtask]:
    """The plan: the router's steps, then the question itself, whole, as the last subtask, given every
    step's answer. Whatever the router writes, the model that answers last sees the question as asked
    (its choices, its numbers): left to write every subtask, Qwen2.5-0.5B dropped a multiple-choice
    question's choices, so no model could name a letter."""
    ids, final = {s.id for s in steps}, len(steps) + 1
    while str(final) in ids:  # a hosted router's own ids ("2", "3" for two steps)
        final += 1
    return [*steps, Subtask(id=str(final), text=question.strip(), depends_on=[s.id for s in steps])]


class DecompositionError(ValueError):
    """The router's decomposition cannot be used (not JSON, cyclic, unbounded, ...)."""


def decompose_messages(question: str, max_subtasks: int) -> list[tuple[str, str]]:
    return [
        ("system", DECOMPOSE_SYSTEM),
        ("human", DECOMPOSE_INSTRUCTIONS.format(max_subtasks=max_subtasks, question=question.strip())),
    ]


def decomposition_schema(max_subtasks: int) -> dict[str, Any]:
    """JSON schema of a decomposition that only admits valid ones: ids "1".."k" in order, each depending
    only on earlier ids (so no cycle, no unknown id), 0..max steps, bounded non-empty texts."""

    def step(i: int) -> dict[str, Any]:
        earlier = [str(j) for j in range(1, i)]
        depends: dict[str, Any] = {"type": "array", "maxItems": 0}
        if earlier:
            depends = {"type": "array", "items": {"enum": earlier}, "maxItems": len(earlier)}
        return {
            "type": "object",
            "properties": {
                "id": {"const": str(i)},
                "text": {"type": "string", "minLength": 1, "maxLength": SUBTASK_TEXT_MAX_CHARS},
                "depends_on": depends,
            },
            "required": ["id", "text", "depends_on"],
            "additionalProperties": False,
        }

    def plan_of(k: int) -> dict[str, Any]:
        steps = [step(i) for i in range(1, k + 1)]
        return {"type": "array", "prefixItems": steps, "minItems": k, "maxItems": k}

    return {
        "type": "object",
        "properties": {"subtasks": {"anyOf": [plan_of(k) for k in range(max_subtasks + 1)]}},
        "required": ["subtasks"],
        "additionalProperties": False,
    }


def parse_decomposition(text: str, max_subtasks: int) -> list[Subtask]:
    """The steps in a router's reply (JSON, optionally fenced), validated; DecompositionError otherwise."""
    return validate_subtasks(extract_json(text), max_subtasks)


def validate_subtasks(raw: object, max_subtasks: int) -> list[Subtask]:
    """Check a decomposition's steps: 0..max, unique non-empty ids, non-empty texts, known deps, no cycle."""
    if isinstance(raw, Mapping):
        raw = raw.get("subtasks")
    if not isinstance(raw, list):
        raise DecompositionError("expected a list of subtasks")
    if len(raw) > max_subtasks:
        raise DecompositionError(f"too many subtasks: {len(raw)} > {max_subtasks}")
    subtasks: list[Subtask] = []
    for position, item in enumerate(raw, start=1):
        if isinstance(item, Subtask):
            item = item.model_dump()
        if not isinstance(item, Mapping):
            raise DecompositionError(f"subtask {position} is not an object")
        sid = str(item.get("id", "")).strip()
        if not sid or isinstance(item.get("id"), bool | dict | list):
            raise DecompositionError(f"subtask {position} has no id")
        body = item.get("text")
        if not isinstance(body, str) or not body.strip():
            raise DecompositionError(f"subtask {sid} has empty text")
        deps = item.get("depends_on", [])
        if deps is None:
            deps = []
        if not isinstance(deps, list):
            raise DecompositionError(f"subtask {sid}: depends_on is not a list")
        subtasks.append(
            Subtask(id=sid, text=" ".join(body.split()), depends_on=list(dict.fromkeys(str(d) for d in deps)))
        )
    ids = [s.id for s in subtasks]
    if len(set(ids)) != len(ids):
        raise DecompositionError(f"duplicate subtask ids in {ids}")
    for s in subtasks:
        unknown = [d for d in s.depends_on if d not in ids]
        if unknown:
            raise DecompositionError(f"subtask {s.id} depends on unknown id(s) {unknown}")
    topological_order(subtasks)
    return subtasks


def topological_order(subtasks: Sequence[Subtask]) -> list[str]:
    """Ids in an order where every dependency comes first (stable); DecompositionError on a cycle."""
    done: list[str] = []
    left = list(subtasks)
    while left:
        ready = [s for s in left if all(d in done for d in s.depends_on)]
        if not ready:
            raise DecompositionError(f"dependency cycle among subtasks {[s.id for s in left]}")
        done.extend(s.id for s in ready)
        left = [s for s in left if s.id not in done]
    return done


def extract_json(text: str) -> object:
    """The first JSON object or array in ``text`` (code fences and chatter around it are ignored)."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        raise DecompositionError("not JSON: no object or array in the reply")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[min(starts) :])
    except json.JSONDecodeError as exc:
        raise DecompositionError(f"not JSON: {exc.msg} at char {exc.pos}") from None
    return value


# -- allocation -----------------------------------------------------------------------------------------
ALLOCATE_SYSTEM = "You assign each subtask to the cheapest model able to solve it."

ALLOCATE_INSTRUCTIONS = """Rate how hard each subtask is: "easy" (a small cheap model can do it), \
"medium" or "hard" (needs the strongest model). You may name a model instead of a level.
The models, cheapest first:
{descriptions}

Subtasks:
{subtasks}

Reply with JSON only, mapping each subtask id to a level or a model name, e.g. {example}"""


def render_models(models: Sequence[ModelCard]) -> str:
    return "\n".join(
        f"- {m.name} (${m.price_in:.2f}/${m.price_out:.2f} per 1M tokens in/out): "
        + " ".join(m.descriptor.split())
        for m in models
    )


def allocate_messages(subtasks: Sequence[Subtask], models: Sequence[ModelCard]) -> list[tuple[str, str]]:
    listing = "\n".join(f"{s.id}. {s.text}" for s in subtasks)
    example = json.dumps({s.id: LEVELS[min(i, len(LEVELS) - 1)] for i, s in enumerate(subtasks[:2])})
    return [
        ("system", ALLOCATE_SYSTEM),
        (
            "human",
            ALLOCATE_INSTRUCTIONS.format(
                descriptions=render_models(models), subtasks=listing, example=example
            ),
        ),
    ]


def allocation_schema(ids: Sequence[str], model_names: Sequence[str]) -> dict[str, Any]:
    choice = {"type": "string", "enum": [*LEVELS, *model_names]}
    return {
        "type": "object",
        "properties": {sid: choice for sid in ids},
        "required": list(ids),
        "additionalProperties": False,
    }


def parse_allocation(text: str) -> dict[str, str]:
    """{subtask id: raw choice} from the router's reply; DecompositionError when it is not a JSON object."""
    value = extract_json(text)
    if isinstance(value, Mapping) and isinstance(value.get("allocation"), Mapping):
        value = value["allocation"]
    if not isinstance(value, Mapping):
        raise DecompositionError("allocation is not a JSON object")
    return {str(k).strip(): str(v).strip() for k, v in value.items()}


# -- subtasks -------------------------------------------------------------------------------------------
EXECUTE_SYSTEM = (
    "You solve one step of a larger problem for a coordinating model. For a fact, reply with the answer "
    "alone, in as few words as possible (a name, a date, a place), not a sentence. For a calculation or a "
    "choice, reason in a few short steps, then end with a line 'Answer: <answer>'."
)
"""What Router-R1's pool models are told too: told to give the number alone, Qwen2.5-1.5B solved none of 20
GSM8K tuning problems; told to reason in a few steps and end with an answer line, 6."""
BUDGET_REFUSAL = "not called: {model} would cost up to ${estimate:.6f} but only ${left:.6f} of the \
${budget:.6f} budget is left"
NO_ANSWER = "(no answer: {reason})"

_REFUSALS = ("i cannot", "i can't", "i can not", "i'm sorry", "i am sorry", "as an ai")


def subtask_prompt(subtask: Subtask, known: Sequence[tuple[Subtask, str]]) -> str:
    """The question a pool model gets for one subtask, with the answers of the subtasks it depends on (the
    answer a reply states, when it ends with an ``Answer:`` line, rather than its working)."""
    if not known:
        return subtask.text
    facts = "\n".join(f"- {dep.text} Answer: {reply_answer(answer) or answer}" for dep, answer in known)
    return f"Known from earlier steps:\n{facts}\nNow answer: {subtask.text}"


def failed_check(answer: str) -> str | None:
    """Why an answer should be escalated ('empty', 'refusal'), or None when it looks usable."""
    text = answer.strip().lower().replace("’", "'")
    if not text:
        return "empty"
    if any(r in text[:200] for r in _REFUSALS):
        return "refusal"
    return None


# -- final answer ---------------------------------------------------------------------------------------
AGGREGATE_SYSTEM = "You combine the answers of solved subtasks into the final answer of a question."

AGGREGATE_INSTRUCTIONS = """Question: {question}

Solved subtasks:
{steps}

{rule}"""


def aggregate_messages(
    question: str, steps: Sequence[tuple[Subtask, str]], fmt: AnswerFormat
) -> list[tuple[str, str]]:
    listing = "\n".join(f"{s.id}. {s.text} Answer: {reply_answer(answer) or answer}" for s, answer in steps)
    rule = ANSWER_RULES[fmt].format(letters=", ".join(choice_letters(question)))
    return [
        ("system", AGGREGATE_SYSTEM),
        ("human", AGGREGATE_INSTRUCTIONS.format(question=question.strip(), steps=listing, rule=rule)),
    ]
