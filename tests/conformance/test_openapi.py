"""The OpenAPI document matches the server: schemathesis fuzzes both stacks from it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.conftest import Serve
from tests.support.agents import ScriptedAgent
from tests.support.process import running_server


@pytest.mark.asyncio
async def test_document_names_every_route(serve: Serve) -> None:
    client = await serve(ScriptedAgent(["x"]), model_name="m", api_key="k")
    response = await client.get("/openapi.json")  # public, like /health
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/models",
        "/v1/models/{model_id}",
        "/health",
    }
    assert "'m'" in document["info"]["description"]


@pytest.fixture(params=["aiohttp", "asgi"])
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    # warnings only: nobody reads the server's output past its banner, and a pipe full of
    # request-log lines would block the server
    with running_server("--stack", str(request.param), "--model", "nanobot", "--log-level", "warning") as url:
        yield url


def test_schemathesis_finds_no_server_error_or_schema_mismatch(server_url: str, tmp_path: Path) -> None:
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server_url}/openapi.json",
            "--checks",
            checks,
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
            "--workers",
            "1",
            "--no-color",
        ],
        cwd=tmp_path,  # schemathesis keeps a cache folder in its working directory
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
