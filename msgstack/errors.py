"""The API's error answers: JSON ``{"error": <code>, "detail": <sentence>}`` with a status."""

from __future__ import annotations

import asyncpg
from starlette.responses import JSONResponse

from msgstack import db, metrics

__all__ = ["RequestError", "error", "unavailable"]


class RequestError(Exception):
    """A request the API refuses; carries the HTTP status and the JSON error body."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail

    def response(self) -> JSONResponse:
        return error(self.status, self.error, self.detail)


def error(status: int, code: str, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def unavailable(exc: BaseException, dependency: str = "postgres") -> JSONResponse:
    """503 for a dependency that is down (or a missing schema / exhausted pool)."""
    from msgstack.storage import BreakerOpen  # the adapters import this module's callers

    metrics.API_UNAVAILABLE.labels(dependency).inc()
    if isinstance(exc, asyncpg.UndefinedTableError):
        exc = db.SchemaMissing()
    headers = {"Retry-After": "1"}
    if isinstance(exc, BreakerOpen):
        headers = {"Retry-After": str(max(1, round(exc.retry_after))), "X-Circuit-Breaker": "open"}
    if isinstance(exc, db.SchemaMissing | db.PoolExhausted | BreakerOpen):
        detail = str(exc)
    else:
        detail = f"{dependency} is unavailable ({db.describe(exc)}); retry later"
    return JSONResponse(
        {"error": "unavailable", "detail": detail}, status_code=503, headers=headers
    )
