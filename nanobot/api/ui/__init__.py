"""The chat page at ``/``: one HTML page, its script and its styles, all shipped in the package.

No build step and nothing fetched from elsewhere. Every answer carries a Content-Security-Policy
that allows only this server's own script, styles and connections (no inline script), and
``nosniff``. Caching cannot hold an old version: every file is ``no-cache`` with an ``ETag``
(a revalidation costs a 304), and the page names its script and styles by their content's hash.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from nanobot.api.replies import JSONReply

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
#: The files under ``/ui/``, with their types.
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
PAGE_TYPE = "text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Asset:
    """One file as served: its bytes, type and entity tag."""

    body: bytes
    content_type: str
    etag: str


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')


class ChatPage:
    """The page's files, read once; :meth:`reply` answers ``GET /`` and ``GET /ui/NAME``."""

    def __init__(self, model_name: str) -> None:
        folder = resources.files(__package__)
        files = {name: (folder / name).read_bytes() for name in ASSETS}
        version = hashlib.sha256(b"".join(files.values())).hexdigest()[:12]
        page = (folder / "index.html").read_text("utf-8")
        page = page.replace("{{version}}", version).replace("{{model}}", html.escape(model_name))
        self._assets = {"/": _asset(page.encode(), PAGE_TYPE)}
        for name, content_type in ASSETS.items():
            self._assets[f"/ui/{name}"] = _asset(files[name], content_type)

    def reply(self, path: str, headers: Mapping[str, str], base: dict[str, str]) -> JSONReply | None:
        """The file at ``path`` (304 when the client's copy is current); ``None`` if there is none."""
        asset = self._assets.get(path)
        if asset is None:
            return None
        answer = {**base, **SECURITY_HEADERS, "ETag": asset.etag}
        if asset.etag in {tag.strip() for tag in headers.get("if-none-match", "").split(",")}:
            return JSONReply(304, answer, b"", asset.content_type)
        return JSONReply(200, answer, asset.body, asset.content_type)

    def size(self) -> int:
        """The page's bytes in all (what a first visit downloads, before compression)."""
        return sum(len(asset.body) for asset in self._assets.values())
