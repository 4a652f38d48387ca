"""The head meter of the uvicorn protocol: lines counted across chunks, stopping at the head's end."""

from __future__ import annotations

import pytest

from nanobot.api.limits import HeadLimits
from nanobot.api.uvicorn_http import LINE_SLACK, HeadMeter

LIMITS = HeadLimits(max_header_size=100, max_headers=3)
LINE_LIMIT = 2 * 100 + LINE_SLACK


def fed(meter: HeadMeter, *chunks: bytes) -> str | None:
    """Feed chunks until one is refused; the refusal's message, or None."""
    for chunk in chunks:
        if (error := meter.check(chunk)) is not None:
            return error.message
    return None


def test_a_small_head_in_one_chunk_passes() -> None:
    assert fed(HeadMeter(LIMITS), b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n") is None


def test_lines_are_counted_across_chunks() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert "more than 3 header" in (
        fed(HeadMeter(LIMITS), *(head[i : i + 3] for i in range(0, len(head), 3))) or ""
    )


def test_a_line_growing_across_chunks_is_refused_once_over() -> None:
    meter = HeadMeter(LIMITS)
    assert fed(meter, b"GET / HTTP/1.1\r\nX: ", b"a" * (LINE_LIMIT - 3)) is None
    assert "longer than 100 bytes" in (fed(meter, b"aa") or "")


def test_the_body_after_the_head_is_not_metered() -> None:
    body = b"{" + b"x" * 10_000 + b"\n" * 50
    assert fed(HeadMeter(LIMITS), b"POST / HTTP/1.1\r\nHost: x\r\n\r\n" + body) is None
    meter = HeadMeter(LIMITS)
    assert fed(meter, b"POST / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\n" + body) is None


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_empty_lines_before_the_request_line_do_not_end_the_head(ending: bytes) -> None:
    meter = HeadMeter(LIMITS)
    assert fed(meter, ending * 2, b"GET / HTTP/1.1\r\n", b"X: " + b"a" * LINE_LIMIT) is not None


def test_reset_starts_a_new_head() -> None:
    meter = HeadMeter(LIMITS)
    assert fed(meter, b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n") is None
    meter.reset()
    assert fed(meter, b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n") is None
