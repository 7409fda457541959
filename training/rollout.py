"""Multi-turn Router-R1 rollouts for TRL's ``GRPOTrainer(rollout_func=...)``.

The policy generates until a route call (``</search>``) or an answer; the call is answered by the pool
(replay cache first, a live call on a miss, both recorded); the reply is appended as an information block
whose tokens are marked 0 in ``env_mask`` so they carry no loss, as in Router-R1. A reply that answered the
question itself ends the trajectory with that answer, written by the environment as the graph's relay does.
The first route call carries the question whole, as the serving grammar forces it (:func:`rules.passed_on`):
the policy chooses the model, and the environment writes the query after ``Model:``, so training sees the
calls serving makes (and the replay cache holds the single-model answers to them). Parsing and cost come
from the graph's own parser and the pool's accounting: one implementation for serving and training.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from app.pool import EndpointError, Pool
from graphs.router_r1 import prompts, rules

STOP_STRINGS = [prompts.SEARCH_STOP, prompts.ANSWER_STOP]
Answered = tuple[str, str | None, float]
"""A route call's information block, the reply (None when the call failed) and its cost."""


@dataclass
class Trajectory:
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    text: str = ""
    cost: float = 0.0
    question: str = ""
    asked: list[rules.Route] = field(default_factory=list)
    done: bool = False

    @property
    def routes(self) -> int:
        return len(self.asked)

    def extend(self, ids: list[int], text: str, from_policy: bool) -> None:
        self.completion_ids += ids
        self.env_mask += [1 if from_policy else 0] * len(ids)
        self.text += text


@dataclass
class RolloutConfig:
    max_turns: int = 4
    step_max_tokens: int = 96
    max_completion_tokens: int = 512
    response_max_tokens: int = 64
    temperature: float = 1.0


class RouterR1Rollout:
    """Callable ``(prompts, trainer) -> dict`` with prompt/completion ids, env_mask and per-rollout cost."""

    def __init__(self, pool: Pool, config: RolloutConfig | None = None) -> None:
        self.pool = pool
        self.config = config or RolloutConfig()
        self.calls = 0  # pool calls made (live or replayed), for tests and logs
        self.last_costs: list[float] = []  # the latest batch's spend per rollout, for the metrics log

    def __call__(self, batch_prompts: list[Any], trainer: Any) -> dict[str, Any]:
        tokenizer = trainer.processing_class
        trajectories = [
            Trajectory(prompt_ids=self._prompt_ids(tokenizer, p), question=prompts.question_of(p))
            for p in batch_prompts
        ]
        for turn in range(self.config.max_turns + 1):
            active = [t for t in trajectories if not t.done]
            if not active:
                break
            # The first step ends once the model is named: the serving grammar writes the query from there.
            chosen = [f"{name}:" for name in self.pool.names] if turn == 0 else []
            steps = self._generate(trainer, [t.prompt_ids + t.completion_ids for t in active], chosen)
            routes: list[tuple[Trajectory, str, str]] = []
            for trajectory, ids in zip(active, steps, strict=True):
                text = tokenizer.decode(ids, skip_special_tokens=True)
                forced = self._rules(trajectory).query
                model = self._first_route(text) if forced is not None else None
                if forced is not None and model is not None:
                    ids, text, written = self._pass_question_on(tokenizer, ids, text, forced)
                    written_ids = tokenizer.encode(written, add_special_tokens=False)
                    trajectory.extend(ids, text, from_policy=True)
                    trajectory.extend(written_ids, written, from_policy=False)
                    action = prompts.Action(kind="route", model=model, query=forced)
                else:
                    trajectory.extend(ids, text, from_policy=True)
                    action = prompts.parse_action(text, self.pool.names)
                room = len(trajectory.completion_ids) < self.config.max_completion_tokens
                if action.kind == "route" and room and self._allowed(trajectory, action.model, action.query):
                    assert action.model and action.query
                    routes.append((trajectory, action.model, action.query))
                else:
                    # An answer, malformed output, or a route call the graph would not make (a repeat, past
                    # max turns, after the question was answered): the trajectory ends here.
                    trajectory.done = True
            for (trajectory, model, query), (information, reply, cost) in zip(
                routes, self._answer_routes(routes), strict=True
            ):
                info_ids = tokenizer.encode(information, add_special_tokens=False)
                trajectory.extend(info_ids, information, from_policy=False)
                trajectory.cost += cost
                trajectory.asked.append(rules.Route(model=model, query=query, reply=reply))
                given = self._rules(trajectory).answer
                if given:  # the graph's relay: the reply answered the question itself, in its format
                    relayed = prompts.RELAYED_ANSWER.format(answer=given)
                    relayed_ids = tokenizer.encode(relayed, add_special_tokens=False)
                    trajectory.extend(relayed_ids, relayed, from_policy=False)
                    trajectory.done = True
        self.last_costs = [t.cost for t in trajectories]
        return {
            "prompt_ids": [t.prompt_ids for t in trajectories],
            "completion_ids": [t.completion_ids for t in trajectories],
            "logprobs": None,
            "env_mask": [t.env_mask for t in trajectories],
            "cost": [t.cost for t in trajectories],
            "routes": [t.routes for t in trajectories],
        }

    def _first_route(self, text: str) -> str | None:
        """The pool model a first step routes to, once its name and colon are written (closed or not: the
        serving grammar writes the rest); None for an answer, malformed text or an unknown name."""
        search_at, answer_at = text.find("<search>"), text.find("<answer>")
        if search_at < 0 or 0 <= answer_at < search_at:
            return None
        name, colon, _ = text[search_at + len("<search>") :].partition(":")
        known = {n.lower(): n for n in self.pool.names}.get(name.strip().lower())
        return known if colon else None

    @staticmethod
    def _pass_question_on(
        tokenizer: Any, ids: list[int], text: str, question: str
    ) -> tuple[list[int], str, str]:
        """Split a first route step at ``Model:``: the policy's tokens up to there (its choice of model),
        their text, and what the environment writes instead of the policy's own query (the question whole,
        as the serving grammar forces it). A token reaching past the colon goes to the environment too."""
        search_at = text.find("<search>")
        head = text[: text.find(":", search_at) + 1]
        kept, kept_text = 0, ""
        for end in range(1, len(ids) + 1):
            prefix = tokenizer.decode(ids[:end], skip_special_tokens=True)
            if not head.startswith(prefix):
                break
            kept, kept_text = end, prefix
        written = f"{head[len(kept_text) :]} {question} {prompts.SEARCH_STOP}"
        return ids[:kept], kept_text, written

    def _allowed(self, trajectory: Trajectory, model: str | None, query: str | None) -> bool:
        """The graph's own rule: a route call is made only when it is no repeat and routing is allowed."""
        if not model or not query or rules.is_repeat(model, query, trajectory.asked):
            return False
        return self._rules(trajectory).allow_route

    def _rules(self, trajectory: Trajectory) -> rules.StepRules:
        return rules.step_rules(trajectory.question, trajectory.asked, max_turns=self.config.max_turns)

    @staticmethod
    def _prompt_ids(tokenizer: Any, prompt: Any) -> list[int]:
        if isinstance(prompt, list):  # conversational: the router's chat template, as the server renders it
            prompt = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return list(tokenizer.encode(prompt, add_special_tokens=False))

    def _answer_routes(
        self, routes: list[tuple[Trajectory, str, str]]
    ) -> list[tuple[str, str | None, float]]:
        """Ask the pool for every route call of this turn at once: (information block, reply or None when
        the call failed, cost); failures become information too."""

        async def one(model: str, query: str) -> Answered:
            self.calls += 1
            try:
                call = await self.pool.ask(
                    model, query, system=prompts.POOL_MODEL_SYSTEM, max_tokens=self.config.response_max_tokens
                )
            except EndpointError as exc:
                failure = prompts.ENDPOINT_FAILURE.format(model=model, reason=exc.reason)
                return prompts.information(failure), None, 0.0
            return prompts.information(call.text), call.text, call.cost

        async def all_routes() -> list[Answered]:
            return list(await asyncio.gather(*(one(m, q) for _, m, q in routes)))

        return asyncio.run(all_routes()) if routes else []

    def _generate(self, trainer: Any, sequences: list[list[int]], extra_stops: list[str]) -> list[list[int]]:
        """One policy step per sequence, ending at a stop string (``extra_stops`` too, where the backend
        takes them per call: vLLM's are fixed in the trainer's config), EOS or the step limit."""
        if getattr(trainer, "use_vllm", False):
            _, completion_ids, _, _ = trainer.vllm_generation.generate(
                prompts=sequences, images=None, num_generations=1
            )
            return [list(ids) for ids in completion_ids]
        import torch

        tokenizer = trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        pad = tokenizer.pad_token_id
        width = max(len(s) for s in sequences)
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences])
        attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
        was_training = model.training
        model.eval()
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention.to(model.device),
                max_new_tokens=self.config.step_max_tokens,
                do_sample=True,
                temperature=self.config.temperature,
                top_p=1.0,
                top_k=0,
                stop_strings=STOP_STRINGS + extra_stops,
                tokenizer=tokenizer,
                pad_token_id=pad,
            )
        if was_training:
            model.train()
        steps = []
        eos = set(tokenizer.all_special_ids) if pad is None else {pad, tokenizer.eos_token_id}
        for row in output[:, width:].tolist():
            kept: list[int] = []
            for token in row:
                kept.append(token)
                if token in eos:
                    break  # the end-of-turn token is the policy's own; what follows is padding
            steps.append(kept)
        return steps
