"""LangChain's integration suite for chat models (``langchain-tests``) on the embedded pool.

Every call is a real Router-R1 run (R2-Reasoner for the ``model=`` override tests): SmolLM2-135M routes,
llama.cpp serves, SQLite stores. The suite makes about two dozen runs, kept short: at most one route call,
short replies. What a router does not offer is declared through the suite's capability properties, which
make the suite skip it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests

from app.config import PROJECT_ROOT, Settings
from app.langchain import RouterChatModel
from app.pool import load_pool
from app.service import RouteGraphService

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="class")
def short_run_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouteGraphService]:
    """One service for the whole suite (the suite builds a fresh model per test, all on this service)."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('lc-standard') / 'traces.db'}",
        max_turns=1,
        min_routes=0,  # the router may answer at once: these tests are about the interface, not routing
        response_max_tokens=16,
        router_max_tokens=64,
        r2_max_subtasks=2,
        request_timeout_s=170,  # a loaded two-core machine decodes slowly
    )
    service = RouteGraphService.create(settings, pool=load_pool(PROJECT_ROOT / "pools" / "local.yaml"))
    request.cls.service = service
    try:
        yield service
    finally:
        service.close()


@pytest.mark.usefixtures("short_run_service")
class TestRouterChatModelIntegration(ChatModelIntegrationTests):
    service: RouteGraphService | None = None

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return RouterChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"service": self.service, "graph": "router-r1", "max_turns": 1}

    # A per-call ``model=`` picks the other graph: the override tests run R2-Reasoner.
    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "r2-reasoner"

    # Capabilities a router over text models does not have.
    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_video_inputs(self) -> bool:
        return False

    @property
    def enable_vcr_tests(self) -> bool:
        return False  # the embedded pool is local: nothing to record
