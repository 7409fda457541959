"""Router-R1 rollouts for GRPO over a scripted pool and a scripted policy: the graph's rules decide when a
trajectory ends, and what the environment writes carries no loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from graphs.router_r1.rewards import is_well_formed
from tests.fakes import BIG, SMALL, fake, make_fake_pool
from training.rollout import RolloutConfig, RouterR1Rollout

CHOICE = "Where does a wild bird usually live?\nA. cage\nB. sky\nC. countryside\nAnswer with the letter."
FRANCE = "What is the capital of France?"


class CharTokenizer:
    """One token per character: what a policy step writes decodes back to the same text."""

    pad_token_id = 0
    eos_token_id = 1
    all_special_ids = (0, 1)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i not in self.all_special_ids)


@dataclass
class ScriptedPolicy:
    """Plays each prompt's policy steps in order (keyed by the question the prompt asks)."""

    steps: dict[str, list[str]]
    seen: dict[str, int] = field(default_factory=dict)

    def generate(self, prompts: list[list[int]], **_: Any) -> tuple[None, list[list[int]], None, None]:
        out = []
        for ids in prompts:
            text = "".join(chr(i) for i in ids)
            question = next(q for q in self.steps if q in text)
            turn = self.seen.get(question, 0)
            self.seen[question] = turn + 1
            out.append([ord(c) for c in self.steps[question][turn]])
        return None, out, None, None


@dataclass
class Trainer:
    vllm_generation: ScriptedPolicy
    use_vllm: bool = True
    processing_class: CharTokenizer = field(default_factory=CharTokenizer)


def prompt(question: str) -> str:
    return f"Consult the models. Question: {question}\n"


def test_a_letter_given_to_the_question_itself_ends_the_trajectory_written_by_the_environment() -> None:
    pool = make_fake_pool({BIG: ["Outdoors, in the country.\nAnswer: C"], SMALL: ["Paris is in France."]})
    route_choice = f"<think>Choices need the big one.</think>\n<search> {BIG}: {CHOICE} </search>"
    route_france = f"<think>A fact.</think>\n<search> {SMALL}: {FRANCE} </search>"
    policy = ScriptedPolicy(
        {CHOICE: [route_choice], FRANCE: [route_france, "<think>ok</think>\n<answer> Paris </answer>"]}
    )
    rollout = RouterR1Rollout(pool, RolloutConfig(max_turns=2))

    out = rollout([prompt(CHOICE), prompt(FRANCE)], Trainer(policy))

    tokenizer = CharTokenizer()
    choice_text = tokenizer.decode(out["completion_ids"][0])
    assert choice_text.endswith("</information>\n<answer> C </answer>")
    assert policy.seen[CHOICE] == 1  # the policy was not asked to copy the letter
    relayed = len("<answer> C </answer>")
    assert out["env_mask"][0][-relayed:] == [0] * relayed  # environment text: no loss on it
    chosen = len(f"<think>Choices need the big one.</think>\n<search> {BIG}:")
    assert out["env_mask"][0][:chosen] == [1] * chosen  # the policy's step up to its choice of model
    assert out["env_mask"][0][chosen : len(route_choice)] == [0] * (len(route_choice) - chosen)
    assert is_well_formed(choice_text, pool.names)
    # A span: the policy writes the answer itself, after the information.
    france_text = tokenizer.decode(out["completion_ids"][1])
    assert policy.seen[FRANCE] == 2 and france_text.endswith("<answer> Paris </answer>")
    assert out["env_mask"][1][-len("<answer> Paris </answer>") :] == [1] * len("<answer> Paris </answer>")
    assert out["routes"] == [1, 1] and len(fake(pool, BIG).calls) == 1
    assert out["cost"][0] > 0


def test_the_first_route_call_carries_the_question_whole_written_by_the_environment() -> None:
    """As under the serving grammar: the policy picks the model, the question follows ``Model:`` as it is,
    so the call is the one a single-model baseline made (and the replay cache holds)."""
    pool = make_fake_pool({SMALL: ["Paris", "Lyon"]})
    first = f"<think>A fact.</think>\n<search> {SMALL}: capital city of the French? </search>"
    second = f"<think>Again.</think>\n<search> {SMALL}: second city of France? </search>"
    policy = ScriptedPolicy({FRANCE: [first, second]})
    rollout = RouterR1Rollout(pool, RolloutConfig(max_turns=2))

    out = rollout([prompt(FRANCE)], Trainer(policy))

    calls = fake(pool, SMALL).calls
    assert calls[0].last_text == FRANCE  # the policy's paraphrase never reached the model
    text = CharTokenizer().decode(out["completion_ids"][0])
    assert text.startswith(f"<think>A fact.</think>\n<search> {SMALL}: {FRANCE} </search>\n<information>")
    chosen = len(f"<think>A fact.</think>\n<search> {SMALL}:")
    written = len(f" {FRANCE} </search>")
    mask = out["env_mask"][0]
    assert mask[:chosen] == [1] * chosen and mask[chosen : chosen + written] == [0] * written
    # "Paris" answered the question itself (a span: the router would still write it); no second call.
    assert out["routes"] == [1] and len(calls) == 1


def test_a_first_step_cut_at_the_models_colon_is_a_route_call_with_the_question() -> None:
    """Generation stops once the model is named (the rest is the environment's); an answer or an unknown
    name there is not a route call."""
    pool = make_fake_pool({BIG: ["Answer: C"]})
    unknown = "What is the capital of Italy?"
    policy = ScriptedPolicy(
        {
            CHOICE: [f"<think>Hard.</think>\n<search> {BIG}:"],
            FRANCE: ["<think>Easy.</think>\n<answer> Paris </answer>"],
            unknown: ["<think>Hm.</think>\n<search> Nobody-LM:"],
        }
    )
    out = RouterR1Rollout(pool, RolloutConfig(max_turns=2))(
        [prompt(CHOICE), prompt(FRANCE), prompt(unknown)], Trainer(policy)
    )

    texts = [CharTokenizer().decode(ids) for ids in out["completion_ids"]]
    assert texts[0].startswith(f"<think>Hard.</think>\n<search> {BIG}: {CHOICE} </search>\n<information>")
    assert texts[0].endswith("<answer> C </answer>") and fake(pool, BIG).calls[0].last_text == CHOICE
    assert out["routes"] == [1, 0, 0]
    assert texts[1] == "<think>Easy.</think>\n<answer> Paris </answer>"
    assert texts[2] == "<think>Hm.</think>\n<search> Nobody-LM:"  # malformed: the trajectory ends


def test_a_later_route_call_keeps_the_policys_own_query() -> None:
    pool = make_fake_pool({SMALL: ["Some long reply " * 10], BIG: ["Lyon"]})  # 30 words: no answer
    first = f"<think>A fact.</think>\n<search> {SMALL}: {FRANCE} </search>"
    second = f"<think>Ask again.</think>\n<search> {BIG}: largest city in France? </search>"
    policy = ScriptedPolicy({FRANCE: [first, second, "<think>ok</think>\n<answer> Paris </answer>"]})
    rollout = RouterR1Rollout(pool, RolloutConfig(max_turns=2))

    out = rollout([prompt(FRANCE)], Trainer(policy))

    assert fake(pool, BIG).calls[0].last_text == "largest city in France?"
    text = CharTokenizer().decode(out["completion_ids"][0])
    at = text.index(second)
    assert out["env_mask"][0][at : at + len(second)] == [1] * len(second)
