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
    assert out["env_mask"][0][: len(route_choice)] == [1] * len(route_choice)
    assert is_well_formed(choice_text, pool.names)
    # A span: the policy writes the answer itself, after the information.
    france_text = tokenizer.decode(out["completion_ids"][1])
    assert policy.seen[FRANCE] == 2 and france_text.endswith("<answer> Paris </answer>")
    assert out["env_mask"][1][-len("<answer> Paris </answer>") :] == [1] * len("<answer> Paris </answer>")
    assert out["routes"] == [1, 1] and len(fake(pool, BIG).calls) == 1
    assert out["cost"][0] > 0
