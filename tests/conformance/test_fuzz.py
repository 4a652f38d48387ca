"""No request a client can send gets a 5xx or logs an ERROR: a seeded raw-socket fuzz of both stacks.

``NANOBOT_FUZZ_REQUESTS`` sets the requests per stack, shared by its two servers (without and with
an API key); ``NANOBOT_FUZZ_SEED`` the seed. A failure prints the seed and the failing bytes;
``python -m tests.support.fuzz SEED INDEX`` prints any request of a run again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from nanobot.agents.echo import EchoAgent
from tests.support.fuzz import KEY, fuzz
from tests.support.servers import run_server

REQUESTS = int(os.environ.get("NANOBOT_FUZZ_REQUESTS", "6000"))
SEED = int(os.environ.get("NANOBOT_FUZZ_SEED", "9"))
#: Small limits, so that fuzzed bodies and images cross them.
LIMITS: dict[str, Any] = {"max_body_bytes": 64 * 1024, "max_media_bytes": 16 * 1024, "request_timeout": 5}
#: Each variant has its own seed, so that the two send different requests.
VARIANTS: dict[str, tuple[int, dict[str, Any]]] = {
    "open": (SEED, {}),
    "guarded": (SEED + 1, {"api_key": KEY, "cors_origins": ["https://ok.example"]}),
}

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60 + REQUESTS // 100)]


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_no_request_gets_a_5xx_or_an_error_log(stack: str, variant: str, tmp_path: Path) -> None:
    seed, options = VARIANTS[variant]
    async with run_server(stack, EchoAgent(), **LIMITS, **options, media_dir=tmp_path) as url:
        started = time.perf_counter()
        report = await fuzz(url, seed=seed, requests=REQUESTS // len(VARIANTS))
        elapsed = time.perf_counter() - started
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            health = await client.get("/health")
    summary = f"{stack}/{variant} in {elapsed:.1f} s: {report.summary()}"
    print(summary)
    if health.status_code != 200:
        pytest.fail(f"/health answered {health.status_code} after {summary}", pytrace=False)
    if report.failures or report.errors:
        pytest.fail(summary, pytrace=False)
