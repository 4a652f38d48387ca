"""Errors as values: every failure the API can report, with OpenAI's error JSON.

Each subclass fixes the HTTP ``status``, the OpenAI error ``type`` and a default ``code``;
``to_body()`` gives ``{"error": {"message", "type", "param", "code"}}``. Agent exceptions are
translated once, at the boundary, by type (see :func:`from_agent_exception`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class APIError(Exception):
    """Base of every error the API reports to a client."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None
    #: True when the agent may already have done work: clients must not replay the request.
    agent_started: ClassVar[bool] = False
    #: Seconds a client should wait before trying again (``Retry-After``), when it may.
    retry_after: ClassVar[int | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.extra_headers: dict[str, str] = dict(headers or {})

    def to_body(self) -> dict[str, Any]:
        """OpenAI's error JSON for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        """Headers a response carrying this error must have."""
        headers = dict(self.extra_headers)
        if self.retry_after is not None:
            headers.setdefault("Retry-After", str(self.retry_after))
        if self.agent_started and self.status >= 500:
            headers["x-should-retry"] = "false"
        return headers


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(APIError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class Forbidden(APIError):
    status = 403
    type = "invalid_request_error"
    default_code = "origin_not_allowed"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class MethodNotAllowed(APIError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RequestTimeout(APIError):
    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class UnsupportedMediaType(APIError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class MisdirectedRequest(APIError):
    """A ``Host`` this server does not answer for (DNS rebinding guard)."""

    status = 421
    type = "invalid_request_error"
    default_code = "host_not_allowed"


class Overloaded(APIError):
    status = 429
    type = "rate_limit_error"
    default_code = "session_busy"
    retry_after = 1


class RateLimited(APIError):
    """An upstream said 429; ``Retry-After`` travels in ``headers``."""

    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class ShuttingDown(APIError):
    """The server is draining: no new turns; open ones that outlive the drain end with this."""

    status = 503
    type = "server_error"
    default_code = "server_shutting_down"
    retry_after = 1


class ServerOverloaded(APIError):
    """Past ``max_streams`` or ``max_pending``: refused before any byte of a stream."""

    status = 503
    type = "server_error"
    default_code = "overloaded"
    retry_after = 1


class TurnStopped(ShuttingDown):
    """A turn still running when the drain time ran out."""

    agent_started = True


class AgentFailed(APIError):
    status = 500
    type = "server_error"
    default_code = "agent_error"
    agent_started = True


class UpstreamFailed(AgentFailed):
    status = 502
    default_code = "upstream_error"


class AgentTimeout(AgentFailed):
    status = 504
    default_code = "timeout"


def from_agent_exception(exc: BaseException) -> APIError:
    """Translate what an agent raised into the error the client sees."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, TimeoutError):
        return AgentTimeout("The agent did not answer in time.")
    return AgentFailed(f"The agent failed ({type(exc).__name__}).")
