"""API errors of the fault proxy, with Toxiproxy's messages and status codes.

Toxiproxy answers every failed request with `{"error": "<message>", "status": <code>}`; clients
(toxiproxy-python among them) branch on the status code (400, 404, 409), so we keep both exactly.
"""

from __future__ import annotations

__all__ = [
    "INVALID_STREAM",
    "INVALID_TOXIC_TYPE",
    "PROXY_ALREADY_EXISTS",
    "PROXY_NOT_FOUND",
    "TOXIC_ALREADY_EXISTS",
    "TOXIC_NOT_FOUND",
    "ApiError",
    "bad_request",
    "missing_field",
]


class ApiError(Exception):
    """A request the API refuses; `status` is the HTTP status code sent back."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_json(self) -> dict:
        return {"error": self.message, "status": self.status}


def bad_request(detail: str) -> ApiError:
    """Toxiproxy's `bad request body: <detail>` (400)."""
    return ApiError(f"bad request body: {detail}", 400)


def missing_field(detail: str) -> ApiError:
    """Toxiproxy's `missing required field: <detail>` (400)."""
    return ApiError(f"missing required field: {detail}", 400)


PROXY_NOT_FOUND = ApiError("proxy not found", 404)
PROXY_ALREADY_EXISTS = ApiError("proxy already exists", 409)
INVALID_STREAM = ApiError("stream was invalid, can be either upstream or downstream", 400)
INVALID_TOXIC_TYPE = ApiError("invalid toxic type", 400)
TOXIC_ALREADY_EXISTS = ApiError("toxic already exists", 409)
TOXIC_NOT_FOUND = ApiError("toxic not found", 404)
