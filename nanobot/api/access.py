"""One log line and one ``nanobot_requests`` count per finished request.

Fields: method, path, status, duration, time to first token, tokens, session, request id and
client address. Never a key, a prompt or a reply. The line goes to the ``nanobot.access``
logger with the fields in ``record.access``; :class:`JSONFormatter` writes them as one JSON
object per line (``--log-format json``), the plain text message carries them too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from nanobot.api.metrics import REQUESTS

logger = logging.getLogger("nanobot.access")


ROUTES = frozenset({"/v1/chat/completions", "/v1/models", "/health", "/openapi.json", "/metrics"})


def route_of(path: str) -> str:
    """The route a path belongs to, as a bounded metrics label ("unknown" for anything else)."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
        return "/v1/models/{model_id}"
    return "unknown"


@dataclass(slots=True)
class Access:
    """A request being served; :meth:`done` logs and counts it once."""

    method: str
    path: str
    route: str  #: the route's template (a bounded metrics label); "unknown" for a 404
    request_id: str
    client: str | None = None
    session: str | None = None
    arrived: float = 0.0

    def __post_init__(self) -> None:
        self.arrived = self.arrived or time.perf_counter()

    def done(
        self, status: int, *, ttft: float | None = None, tokens: int | None = None, outcome: str | None = None
    ) -> None:
        REQUESTS.labels(self.route, str(status)).inc()
        if not logger.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "status": status,
            "duration": round(time.perf_counter() - self.arrived, 6),
            "ttft": round(ttft, 6) if ttft is not None else None,
            "tokens": tokens,
            "outcome": outcome,
            "session": self.session,
            "request_id": self.request_id,
            "client": self.client,
        }
        shown = " ".join(
            f"{k}={v}" for k, v in fields.items() if v is not None and k not in ("method", "path")
        )
        logger.info("%s %s %s", self.method, self.path, shown, extra={"access": fields})


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an access line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()
