"""Bounds on a request's head (request line and headers), the same on both HTTP stacks.

The stacks enforce them in their own protocol code (``aiohttp_http``, ``uvicorn_http``) before
a request reaches the app; this module holds what they share: the limits, and the 431 answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from nanobot.core.errors import APIError


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """How large a request head may be, and how long it may take to arrive.

    ``max_header_size`` bounds the request target (URL), and each header's name and value, in
    bytes (as aiohttp counts them); ``max_headers`` bounds the number of headers.

    ``header_timeout`` is the time a connection has to deliver a complete request head, counted
    from when it opens or from the end of its previous response: a connection that stays
    silent, sits idle between keep-alive requests, or sends its head byte by byte is closed
    when it runs out. It does not apply while a request's body is read or its response written.
    """

    max_header_size: int = 8192
    max_headers: int = 100
    header_timeout: float = 10.0


class HeadersTooLarge(APIError):
    """A request target, header name or value over ``max_header_size``; or too many headers."""

    status = 431
    type = "invalid_request_error"
    default_code = "request_header_fields_too_large"


def field_too_large(limits: HeadLimits) -> HeadersTooLarge:
    return HeadersTooLarge(
        f"The request target, or a header name or value, is longer than {limits.max_header_size} bytes."
    )


def too_many_headers(limits: HeadLimits) -> HeadersTooLarge:
    return HeadersTooLarge(f"The request has more than {limits.max_headers} header fields.")


def error_body(error: APIError) -> bytes:
    """OpenAI's error JSON for ``error``, encoded."""
    return orjson.dumps(error.to_body())
