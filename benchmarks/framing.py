"""Request framing shared by the two floors (``floor.py``, ``relayfloor.py``): the body of the
next whole HTTP/1.1 request in a connection's buffer, as cheaply as the floors must be."""

from __future__ import annotations

MAX_REQUEST = 1024 * 1024


class TooLarge(Exception):
    """The buffer passed :data:`MAX_REQUEST` bytes: the floor closes the connection."""


def take_request(buffer: bytearray) -> bytes | None:
    """The body of the first whole request in ``buffer``, removed from it; ``None`` while its
    head or body is still arriving. Raises :class:`TooLarge` past :data:`MAX_REQUEST` bytes."""
    if len(buffer) > MAX_REQUEST:
        raise TooLarge
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    size = end + 4 + _content_length(bytes(buffer[:end]))
    if len(buffer) < size:
        return None
    body = bytes(buffer[end + 4 : size])
    del buffer[:size]
    return body


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0
