"""Router-R1's stopping rules and step grammars (graphs/router_r1/rules.py), case by case."""

from __future__ import annotations

import re

import pytest

from graphs.router_r1.rules import (
    Route,
    StepRules,
    answers_question,
    final_answer_grammar,
    is_repeat,
    passed_on,
    step_grammar,
    step_rules,
)

MODELS = ["Qwen2.5-7B-Instruct", "LLaMA-3.1-8B-Instruct", "Gemma-2-27B-Instruct"]
FRANCE = "What is the capital of France?"
CHOICE = "Where does a wild bird usually live?\nA. cage\nB. sky\nC. countryside\nAnswer with the letter."
MATH = "Tom has 2+3 apples and Ann has 4+5. How many apples do they have together?"


@pytest.mark.parametrize(
    ("query", "reply", "answered"),
    [
        (FRANCE, "Paris", True),  # the question itself, answered
        ("what is the capital of france", "Paris.", True),  # case and punctuation do not matter
        ("Capital of France?", "Paris", True),  # stopwords and articles left out of the comparison
        ("Which river runs through Paris?", "The Seine", False),  # a sub-question
        (FRANCE, None, False),  # the call failed
        (FRANCE, " ".join(["blah"] * 30), False),  # no answer in a long reply
    ],
)
def test_answers_question(query: str, reply: str | None, answered: bool) -> None:
    assert answers_question(FRANCE, query, reply) is answered


def test_repeat_is_the_same_model_and_query_up_to_case_and_spacing() -> None:
    routes = [Route("Qwen2.5-7B-Instruct", "Capital  of France?", "Paris")]
    assert is_repeat("qwen2.5-7b-instruct", "capital of france?", routes)
    assert not is_repeat("Gemma-2-27B-Instruct", "capital of france?", routes)  # another model may be asked
    assert not is_repeat("Qwen2.5-7B-Instruct", "Capital of Spain?", routes)


def test_step_rules() -> None:
    fresh = step_rules(FRANCE, [], max_turns=2, min_routes=1)
    assert fresh == StepRules(allow_route=True, allow_answer=False, query=FRANCE)  # consult, passing it on
    sub = [Route("M", "Which river runs through Paris?", "The Seine")]
    assert step_rules(FRANCE, sub, max_turns=2, min_routes=1) == StepRules(True, True)
    answered = [Route("M", FRANCE, "Paris")]
    assert step_rules(FRANCE, answered, max_turns=4) == StepRules(False, True, "answered")
    full = [Route("M", "a?", None), Route("M", "b?", None)]
    assert step_rules(FRANCE, full, max_turns=2) == StepRules(False, True, "max turns")
    # The last call allowed answered the question: the run ended because it was answered, not by the cap.
    last = [Route("M", "a?", None), Route("M", FRANCE, "Paris")]
    assert step_rules(FRANCE, last, max_turns=2).answer_only == "answered"


def test_a_letter_or_number_given_to_the_question_itself_is_the_runs_answer() -> None:
    """The graph relays it (no router step); a span the router still writes, shortening the reply."""
    choice = step_rules(CHOICE, [Route("M", CHOICE, "Birds live outdoors.\nAnswer: C")], max_turns=4)
    assert (choice.answer_only, choice.answer) == ("answered", "C")
    math = step_rules(MATH, [Route("M", MATH, "Answer: 14")], max_turns=4)
    assert math.answer == "14"
    span = step_rules(FRANCE, [Route("M", FRANCE, "Paris is the capital of France.")], max_turns=4)
    assert (span.answer_only, span.answer) == ("answered", None)
    unclear = step_rules(CHOICE, [Route("M", CHOICE, "Answer: the countryside")], max_turns=4)
    assert (unclear.answer_only, unclear.answer) == ("answered", None)  # the router picks the letter
    sub = step_rules(CHOICE, [Route("M", "Do birds fly?", "Answer: yes, B")], max_turns=4)
    assert sub.answer is None and sub.allow_route  # a sub-question's reply does not end the run


def test_step_grammar_lists_the_models_and_allows_what_the_rules_allow() -> None:
    both = step_grammar(MODELS)
    assert 'model ::= "Qwen2.5-7B-Instruct" | "LLaMA-3.1-8B-Instruct" | "Gemma-2-27B-Instruct"' in both
    assert both.splitlines()[0].endswith("( search | answer )")
    only_route = step_grammar(MODELS, rules=StepRules(allow_route=True, allow_answer=False))
    assert only_route.splitlines()[0].endswith("( search )")
    only_answer = step_grammar(MODELS, rules=StepRules(allow_route=False, allow_answer=True))
    assert only_answer.splitlines()[0].endswith("( answer )")
    with pytest.raises(ValueError, match="must allow"):
        step_grammar(MODELS, rules=StepRules(allow_route=False, allow_answer=False))


def test_the_first_route_passes_the_question_on_word_for_word() -> None:
    """A free first query is where a 0.5B router copied a model's descriptor instead of the question."""
    question = 'Which is "red"?\nA. sky\nB. blood'
    first = step_rules(question, [], max_turns=2)
    assert first.query == question == passed_on(f"  {question}\n")  # whole, its lines kept, as sent
    grammar = step_grammar(MODELS, question, first)
    assert (
        'search ::= "<search> " model ": " "Which is \\"red\\"?\\nA. sky\\nB. blood" " </search>"' in grammar
    )
    later = step_rules(
        question, [Route("M", "What colour is blood?", "It is red, like many things.")], max_turns=2
    )
    assert later.query is None and "[^<\\n ] [^<\\n]{0,400}" in step_grammar(MODELS, question, later)
    long = "word " * 200  # a long problem is passed on whole; only a query the router writes is capped
    assert passed_on(long) == long.strip()


def test_a_thought_has_something_to_say() -> None:
    """Router-R1's format rejects an empty <think>: the grammar admits no thought of spaces alone."""
    thought = next(line for line in step_grammar(MODELS).splitlines() if line.startswith("thought ::="))
    assert thought == 'thought ::= " "? [^<\\n ] [^<\\n]{0,98}'


def test_step_grammar_escapes_quotes_and_backslashes() -> None:
    grammar = step_grammar(['Odd"Name', "Back\\slash"])
    assert r'model ::= "Odd\"Name" | "Back\\slash"' in grammar


@pytest.mark.parametrize(
    ("question", "body"),
    [
        (CHOICE, "body ::= [ABC]"),  # the letters the question lists
        (MATH, 'body ::= "-"? [0-9]'),  # a number
        (FRANCE, "body ::= [^<\\n ] [^<\\n]{0,60}"),  # a short span
    ],
)
def test_the_answer_takes_the_questions_format(question: str, body: str) -> None:
    assert any(line.startswith(body) for line in step_grammar(MODELS, question).splitlines())
    final = final_answer_grammar(question)
    assert final.startswith("root ::= " + body.removeprefix("body ::= ")) and final.endswith('" </answer>"')


@pytest.mark.parametrize("question", [FRANCE, CHOICE, MATH])
@pytest.mark.parametrize(
    "allowed", [StepRules(True, True), StepRules(True, False), StepRules(False, True, "answered")]
)
def test_step_grammar_rules_are_defined_once_and_all_referenced_rules_exist(
    question: str, allowed: StepRules
) -> None:
    grammar = step_grammar(MODELS, question, allowed) + "\n"
    defined = [line.split("::=")[0].strip() for line in grammar.splitlines() if "::=" in line]
    assert len(defined) == len(set(defined)), defined
    bodies = " ".join(line.split("::=", 1)[1] for line in grammar.splitlines() if "::=" in line)
    bare = re.sub(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{\d*,?\d*\}', " ", bodies)
    referenced = set(re.findall(r"[A-Za-z][A-Za-z0-9_-]*", bare))
    assert referenced <= set(defined), referenced - set(defined)
