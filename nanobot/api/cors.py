"""Cross-origin access for browser clients: off unless origins are configured."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"  # DELETE: a stored response
ALLOWED_HEADERS = (
    "authorization, content-type, x-request-id, x-session-id, x-openwebui-chat-id, "
    "x-api-key, anthropic-version, anthropic-beta, session-id, thread-id"
)
EXPOSED_HEADERS = "x-request-id, x-should-retry, retry-after"


class CORSPolicy:
    """Which origins may call the API from a browser; ``*`` allows any."""

    def __init__(self, origins: Iterable[str] = ()) -> None:
        self.origins = frozenset(o.rstrip("/") for o in origins)
        self.enabled = bool(self.origins)

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.origins or origin in self.origins)

    def headers(self, request_headers: Mapping[str, str]) -> dict[str, str]:
        """Headers for an actual (non-preflight) response to ``request_headers``."""
        origin = request_headers.get("origin")
        if not self.enabled or not self.allows(origin):
            return {}
        assert origin is not None
        return {
            "access-control-allow-origin": "*" if "*" in self.origins else origin,
            "access-control-expose-headers": EXPOSED_HEADERS,
            "vary": "Origin",
        }

    def preflight(self, request_headers: Mapping[str, str]) -> dict[str, str] | None:
        """Headers for a preflight answer, or ``None`` when this origin may not ask."""
        if not self.allows(request_headers.get("origin")):
            return None
        asked = request_headers.get("access-control-request-headers")
        return {
            **self.headers(request_headers),
            "access-control-allow-methods": ALLOWED_METHODS,
            "access-control-allow-headers": asked if asked else ALLOWED_HEADERS,
            "access-control-max-age": "600",
        }
