"""The chat-completions request as routegraph accepts it, and the checks that turn a request it cannot
honour into a 400 before any model is called: OpenAI's sampling fields are validated (routegraph decodes
greedily and returns one choice, so a valid temperature changes nothing, but ``"hot"`` is an error)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.api.errors import from_validation, invalid
from app.service.conversation import question_from_turns


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return " ".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    # Strict: a JSON number only, neither a string ("0.5") nor a boolean.
    n: int | None = Field(default=None, strict=True, description="Choices: routegraph returns one.")
    temperature: float | None = Field(default=None, strict=True, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, strict=True, ge=0, le=1, allow_inf_nan=False)
    budget_usd: float | None = Field(default=None, gt=0, description="routegraph extra: spend limit.")
    max_turns: int | None = Field(default=None, ge=1, le=16, description="routegraph extra.")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise ValueError("routegraph returns one choice: n must be 1 (or left out)")
        return n


def parse_request(raw: bytes) -> ChatRequest:
    """The request in ``raw``, or a 400 saying what is wrong with it."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested past the parser's depth
        raise invalid(f"malformed request body: not JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise invalid("malformed request body: a JSON object with 'model' and 'messages' is expected")
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None
    except RecursionError:
        raise invalid("malformed request body: nested too deeply") from None


def question_of(messages: list[ChatMessage]) -> str:
    """The last user turn, with the turns before it as its context."""
    question = question_from_turns([(m.role, m.text) for m in messages], "user")
    if question is None:
        raise invalid("messages must include a user message", "messages")
    return question


def passthrough_messages(messages: list[ChatMessage]) -> list[tuple[str, str]]:
    """The conversation as (role, text) pairs in LangChain's roles, for a pool model. routegraph calls no
    tools, so a tool result has no call to answer: a 400, not a failed upstream call."""
    role = {"user": "human", "assistant": "ai", "developer": "system"}
    for index, message in enumerate(messages):
        if message.role == "tool":
            raise invalid(
                "a pool model is called without tools: 'tool' messages are not accepted (a graph "
                "model such as router-r1 reads them as context)",
                f"messages.{index}.role",
            )
    return [(role.get(m.role, m.role), m.text) for m in messages]
