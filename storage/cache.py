"""The replay cache behind the pool: ``model_responses`` rows keyed by request hash."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import write_connection
from storage.models import ModelResponse

_INSERT = insert(ModelResponse)


class SqlResponseCache:
    """Implements the pool's ``ResponseCache`` protocol on the trace store."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def get(self, key: str) -> dict[str, Any] | None:
        with self.factory() as session:
            row = session.scalar(select(ModelResponse).where(ModelResponse.key == key))
            if row is None:
                return None
            return {
                "text": row.response_text,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
                "finish_reason": row.finish_reason,
            }

    def put(
        self, key: str, model: str, prompt_hash: str, params: dict[str, Any], response: dict[str, Any]
    ) -> None:
        row = {
            "key": key,
            "model": model,
            "prompt_hash": prompt_hash,
            "params": params,
            "response_text": response["text"],
            "input_tokens": response["input_tokens"],
            "output_tokens": response["output_tokens"],
            "finish_reason": response.get("finish_reason"),
        }
        try:
            with write_connection(self.factory) as connection:
                connection.execute(_INSERT, row)  # Core: one INSERT, no unit of work on every pool call
        except IntegrityError:
            pass  # the same request was recorded concurrently: either copy serves

    def count(self) -> int:
        with self.factory() as session:
            return int(session.scalar(select(func.count(ModelResponse.id))) or 0)
