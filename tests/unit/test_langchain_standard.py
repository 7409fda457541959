"""LangChain's own unit suite for chat model integrations (``langchain-tests``) run on RouterChatModel.

What a router does not offer (tool calling, structured output, JSON mode, image/audio/PDF input) is
declared through the suite's capability properties, so the suite itself skips those checks.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_tests.unit_tests import ChatModelUnitTests

from app.langchain import RouterChatModel


class TestRouterChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return RouterChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # No service is built until the first call: constructing the model touches no server or database.
        return {"graph": "router-r1", "start_servers": False}

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False
