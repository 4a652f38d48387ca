"""One log line and one ``nanobot_requests`` count per request, however it ended.

Fields: method, path, status, duration and time to first token (milliseconds), tokens, outcome,
error code, session, request id (the one the response carries) and client address. Never a key,
a prompt or a reply. The line goes to the ``nanobot.access`` logger with the fields in
``record.access``; :class:`JSONFormatter` writes them as one JSON object per line
(``--log-format json``), the plain text message carries them too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from nanobot.api.metrics import REQUESTS

logger = logging.getLogger("nanobot.access")


ROUTES = frozenset(
    {
        "/",
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/models",
        "/health",
        "/openapi.json",
        "/metrics",
    }
)
#: Routes with one variable segment: prefix, label.
_PREFIXED = (
    ("/v1/models/", "/v1/models/{model_id}"),
    ("/v1/responses/", "/v1/responses/{response_id}"),
    ("/ui/", "/ui/{file}"),
)

#: The status of a request whose client left before any answer was decided (nginx's code).
CLIENT_LEFT = 499


def route_of(path: str) -> str:
    """The route a path belongs to, as a bounded metrics label ("unknown" for anything else)."""
    if path in ROUTES:
        return path
    for prefix, label in _PREFIXED:
        if path.startswith(prefix) and len(path) > len(prefix):
            return label
    return "unknown"


def outcome_of_status(status: int) -> str:
    """How a request that ran no turn ended: answered, refused (4xx, 503), or failed (5xx)."""
    if status < 400:
        return "completed"
    if status == CLIENT_LEFT:
        return "disconnected"
    return "refused" if status < 500 or status == 503 else "failed"


def error_code(body: bytes) -> str | None:
    """The ``code`` (else the ``type``) of an OpenAI error body; ``None`` for any other body."""
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    code = error.get("code") or error.get("type")
    return code if isinstance(code, str) else None


@dataclass(slots=True)
class Access:
    """A request being served; :meth:`done` logs and counts it once (later calls do nothing)."""

    method: str
    path: str
    route: str  #: the route's template (a bounded metrics label); "unknown" for a 404
    request_id: str | None = None  #: the response's ``x-request-id``, once known
    client: str | None = None
    session: str | None = None
    arrived: float = 0.0
    outcome: str | None = None  #: how its turn ended, when it ran one (a non-streaming turn)
    tokens: int | None = None  #: the completion's tokens, when known (a non-streaming turn)
    #: Frees what admitting a stream took; :meth:`released` runs it (see ``StreamReply.release``).
    release: Callable[[], None] | None = None
    finished: bool = False

    def __post_init__(self) -> None:
        self.arrived = self.arrived or time.perf_counter()

    def done(
        self,
        status: int,
        *,
        ttft: float | None = None,
        tokens: int | None = None,
        outcome: str | None = None,
        error: str | None = None,
    ) -> None:
        """Count and log the request: ``outcome`` is its turn's, else told by ``status``;
        ``error`` is the error code the client was sent (a JSON error or a stream's error event)."""
        if self.finished:
            return
        self.finished = True
        REQUESTS.labels(self.route, str(status)).inc()
        if not logger.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "status": status,
            "duration_ms": round((time.perf_counter() - self.arrived) * 1000, 3),
            "ttft_ms": round(ttft * 1000, 3) if ttft is not None else None,
            "tokens": tokens if tokens is not None else self.tokens,
            "outcome": outcome or self.outcome or outcome_of_status(status),
            "error": error,
            "session": self.session,
            "request_id": self.request_id or "-",
            "client": self.client,
        }
        shown = " ".join(
            f"{k}={_shown(v)}" for k, v in fields.items() if v is not None and k not in ("method", "path")
        )
        logger.info("%s %s %s", self.method, self.path, shown, extra={"access": fields})

    def released(self) -> None:
        """A stream's writer let go of this request: free its admission, and count the request
        if its turn never ran (the client left before the response head could be written)."""
        if self.release is not None:
            self.release()
        self.done(200, tokens=0, outcome="disconnected")


def _shown(value: object) -> str:
    """A field in the text line: floats in fixed notation (``0.085``, never ``8.5e-05``)."""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's fields (an
    access line's ``access``, another line's ``fields``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("access", "fields"):
            extra = getattr(record, name, None)
            if isinstance(extra, dict):
                entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def log_to_stderr(level: str, log_format: str) -> None:
    """Give nanobot's loggers a handler of their own, when nothing configured logging for them:
    under a host server such as ``uvicorn asgi.app:app``, which configures only its own loggers,
    the request log would otherwise be dropped. A root handler (``--log-config``) is left alone."""
    nanobot = logging.getLogger("nanobot")
    if nanobot.hasHandlers():
        return
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    nanobot.addHandler(handler)
    nanobot.setLevel(level.upper())
