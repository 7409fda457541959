"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``, with the headers that say
when to come back (``Retry-After``) where that is known."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError


class ApiError(Exception):
    """An error the API answers with: HTTP status, OpenAI's error type and code, optional headers."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        *,
        param: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.param, self.retry_after_s = param, retry_after_s

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 for a request the client must change."""
    return ApiError(400, message, "invalid_request_error", code, param=param)


def from_validation(exc: ValidationError) -> ApiError:
    """A 400 naming the first field that is wrong and why (pydantic's own words, without its URLs)."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return invalid("malformed request body")
    first = errors[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    where = f"{param}: " if param else ""
    return invalid(f"malformed request body: {where}{first['msg']}{more}", param)
