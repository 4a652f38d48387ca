"""Errors as Anthropic shapes them: ``{"type": "error", "error": {"type", "message"}}``.

Our error classes map onto Anthropic's error types; the status stays ours but for the server's
overload (past ``--max-streams`` or ``--max-pending``), which is Anthropic's 529
``overloaded_error`` (its SDKs retry it).
"""

from __future__ import annotations

from typing import Any

from nanobot.core.errors import (
    AgentTimeout,
    APIError,
    AuthenticationFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServerOverloaded,
)

#: Anthropic's status for an overloaded server.
OVERLOADED = 529


def error_type(error: APIError) -> str:
    """The Anthropic error type of one of our errors."""
    if isinstance(error, ServerOverloaded):
        return "overloaded_error"
    if isinstance(error, AuthenticationFailed):
        return "authentication_error"
    if isinstance(error, Forbidden):
        return "permission_error"
    if isinstance(error, NotFound):
        return "not_found_error"
    if isinstance(error, PayloadTooLarge):
        return "request_too_large"
    if isinstance(error, AgentTimeout):
        return "timeout_error"
    if error.status == 429:
        return "rate_limit_error"
    if error.status < 500:
        return "invalid_request_error"
    return "api_error"


def error_body(error: APIError) -> tuple[int, dict[str, Any]]:
    """The status and body of ``error`` on an Anthropic route."""
    status = OVERLOADED if isinstance(error, ServerOverloaded) else error.status
    message = error.message
    if error.param and error.param not in message:
        message = f"{error.param}: {message}"  # Anthropic's errors have no 'param': name it here
    return status, {"type": "error", "error": {"type": error_type(error), "message": message}}
