"""Browser safety for a server with no API key: no cross-site calls, no DNS rebinding.

A web page can send a request to ``http://127.0.0.1:8900`` from any site, and a rebinding page
can even read the answer. Without a key, a chat request is therefore refused when it carries an
``Origin`` that CORS does not allow (browsers send one with every cross-site or rebound POST),
and, on a loopback connection, when its ``Host`` names anything but this machine or an
explicitly allowed host (a reverse proxy that keeps the client's ``Host`` must list it).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Iterable, Mapping

from nanobot.api.cors import CORSPolicy
from nanobot.core.errors import Forbidden, MisdirectedRequest


def key_matches(token: str, key: bytes) -> bool:
    """Constant-time compare, whichever way the stack decoded the header (UTF-8 or latin-1)."""
    as_utf8 = hmac.compare_digest(token.encode("utf-8", "surrogateescape"), key)
    try:
        as_latin1 = hmac.compare_digest(token.encode("latin-1"), key)
    except UnicodeEncodeError:
        as_latin1 = False
    return as_utf8 | as_latin1


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    """``localhost``, ``*.localhost`` or a loopback address (IPv4, IPv6, with or without ``[]``).

    Cached: a server sees few distinct addresses and ``Host`` names, and parsing one into an
    ``ipaddress`` object on every request cost 2-3 % of a short relayed turn's CPU.
    """
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return bool((mapped or address).is_loopback)


def _is_address(name: str) -> bool:
    """An IP address (IPv4, or IPv6 without brackets): no DNS name a rebinding page could own."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_name(host: str) -> str:
    """The name in a ``Host`` header, without its port."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BrowserGuard:
    """Checks ``Origin`` and ``Host`` of chat requests to a server that has no API key."""

    def __init__(self, *, enabled: bool, cors: CORSPolicy, allowed_hosts: Iterable[str] = ()) -> None:
        self.enabled = enabled
        self._cors = cors
        self._hosts = frozenset(h.lower().rstrip(".") for h in allowed_hosts)

    def check(self, headers: Mapping[str, str], local_address: str | None) -> None:
        if not self.enabled:
            return
        origin = headers.get("origin")
        host = headers.get("host")
        if origin is not None and not self._cors.allows(origin) and not self._own_page(origin, host):
            raise Forbidden(
                f"Requests from the web page at {origin!r} are refused: this server has no API key "
                "(set one, or allow the origin with --cors-origin).",
                code="origin_not_allowed",
            )
        if host and local_address and is_loopback(local_address) and not self._allows_host(host):
            raise MisdirectedRequest(
                f"This server answers on loopback and does not serve the host {host!r} "
                "(set an API key, or allow the host with --allowed-host).",
            )

    def _own_page(self, origin: str, host: str | None) -> bool:
        """A page this server served (the chat page at ``/``) calling it: ``Origin`` names the
        ``Host`` the request went to, and that host is a loopback name, an IP address or a
        host allowed by name. A rebinding page's origin names its own domain, so it never passes."""
        scheme, _, authority = origin.partition("://")
        if scheme not in ("http", "https") or not host or authority.lower() != host.lower():
            return False
        name = host_name(host).lower().rstrip(".")
        return name in self._hosts or is_loopback(name) or _is_address(name)  # not '*': any name

    def _allows_host(self, host: str) -> bool:
        name = host_name(host).lower().rstrip(".")
        return "*" in self._hosts or name in self._hosts or is_loopback(name)
