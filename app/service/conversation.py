"""A chat conversation as the one question a graph answers: the rule the OpenAI-compatible server and the
LangChain chat model share (each raises its own error when there is no user turn)."""

from __future__ import annotations

from collections.abc import Sequence


def question_from_turns(
    turns: Sequence[tuple[str, str]], user_role: str, *, include_history: bool = True
) -> str | None:
    """The last ``user_role`` turn, with the non-blank turns before it as ``role: text`` context lines when
    ``include_history``; None when no turn is the user's.

    >>> question_from_turns([("system", "Be brief."), ("user", "Capital of France?")], "user")
    'Context:\\nsystem: Be brief.\\n\\nQuestion: Capital of France?'
    """
    last = max((i for i, (role, _) in enumerate(turns) if role == user_role), default=None)
    if last is None:
        return None
    question = turns[last][1]
    earlier = [f"{role}: {text}" for role, text in turns[:last] if text.strip()]
    if include_history and earlier:
        return "Context:\n" + "\n".join(earlier) + f"\n\nQuestion: {question}"
    return question
