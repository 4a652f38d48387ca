"""How long an upstream's 429 asks us to wait, as our error message says it."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from nanobot.agents.upstream import retry_after, retry_hint


def received(headers: dict[str, str]) -> httpx.Headers:
    """``headers`` as httpx hands them over from the wire (as UTF-8 bytes)."""
    return httpx.Headers({name: value.encode() for name, value in headers.items()})


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": " 120 "}, 120.0),
        ({"Retry-After-Ms": "1500"}, 1.5),
        ({"Retry-After": "7", "Retry-After-Ms": "6500"}, 6.5),  # the finer one wins, as in OpenAI's SDK
        ({"Retry-After": "7", "Retry-After-Ms": "soon"}, 7.0),
        ({"Retry-After-Ms": "-5"}, None),
        ({"Retry-After-Ms": "inf"}, None),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date gone by: now
        ({"Retry-After": "later"}, None),
        ({"Retry-After": "\u00b2"}, None),  # a digit to str.isdigit, not to float
        ({"Retry-After": "9" * 400}, None),
        ({"Retry-After": "Wed, 21 Oct 99999 07:28:00 GMT"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_seconds_milliseconds_and_dates(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after(received(headers)) == seconds


def test_retry_after_counts_down_to_an_http_date() -> None:
    headers = received({"Retry-After": formatdate(time.time() + 30, usegmt=True)})
    assert retry_after(headers) in (29.0, 30.0, 31.0)


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({"Retry-After": "7"}, "; retry after 7 s"),
        ({"Retry-After-Ms": "250"}, "; retry after 0.25 s"),
        ({"Retry-After-Ms": "1234567"}, "; retry after 1234.567 s"),
        ({"Retry-After": "86400"}, "; retry after 86400 s"),
        ({}, ""),
    ],
)
def test_retry_hint_ends_the_message(headers: dict[str, str], hint: str) -> None:
    assert retry_hint(received(headers)) == hint
