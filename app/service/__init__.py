"""The composition root: the only package that joins the graphs, the pool and the trace store.

Entry points (CLI, Streamlit pages, the OpenAI-compatible server, the LangChain model) and experiments
(evaluation, bench) import what they need from here: ``from app.service import RouteGraphService``.
"""

from app.pool.circuit import ModelDownError
from app.pool.entries import router_from_checkpoint
from app.service.registry import GRAPHS, ContextLengthError, QuestionError
from app.service.resume import ResumeError
from app.service.runs import RunResult
from app.service.service import RouteGraphService
from storage.errors import StoreError
from storage.urls import store_files

__all__ = [
    "GRAPHS",
    "ContextLengthError",
    "ModelDownError",
    "QuestionError",
    "ResumeError",
    "RouteGraphService",
    "RunResult",
    "StoreError",
    "router_from_checkpoint",
    "store_files",
]
