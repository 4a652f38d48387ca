"""The relays of W4, each in front of the cheap upstream (:mod:`benchmarks.upstream`).

- ours: the ``openai`` agent (``load_agent("openai", settings)``, as ``nanobot serve --agent
  openai`` builds it), served by ``create_app`` on aiohttp or ``create_asgi_app`` on uvicorn.
- ``relay-naive``: aiohttp written the usual way: an ``httpx.AsyncClient`` stream, ``aiter_lines``,
  ``json.loads`` of every chunk, the model renamed, ``json.dumps`` of it, one ``write`` per
  chunk. Its pool is as unbounded as ours (httpx's default of 100 connections would queue
  W4's 256 streams), so the comparison is about the per-chunk path.
- ``litellm``: the LiteLLM proxy's own app (``litellm[proxy]``, one ``openai/`` model, a master
  key, no database), offline (``LITELLM_LOCAL_MODEL_COST_MAP``), on uvicorn as ours.
- ``relay-floor``: :mod:`benchmarks.relayfloor`.

Every relay asks the upstream for :data:`UPSTREAM_MODEL` but answers as the model the client
asked for, except the floor, which passes the request through untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from typing import Any

from aiohttp import web

from benchmarks.servers import MODEL

UPSTREAM_MODEL = "upstream-model"
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else importing litellm fetches a price list
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",  # no .env file read
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
}


def openai_agent(upstream_url: str) -> Any:
    """Our ``openai`` agent pointed at the upstream, built as the CLI builds it."""
    from nanobot.agents.loader import load_agent
    from nanobot.config import Settings

    settings = Settings(agent="openai", model=MODEL, upstream_url=upstream_url, upstream_model=UPSTREAM_MODEL)
    return load_agent("openai", settings.checked())


def ours_aiohttp(upstream_url: str) -> web.Application:
    from nanobot import heap
    from nanobot.api.server import create_app

    app = create_app(openai_agent(upstream_url), model_name=MODEL)
    heap.settle()  # as nanobot serve does
    return app


def ours_asgi(upstream_url: str) -> Any:
    from nanobot import heap
    from nanobot.api.asgi import create_asgi_app

    app = create_asgi_app(openai_agent(upstream_url), model_name=MODEL)
    heap.settle()  # as nanobot serve does
    return app


def naive_relay_app(upstream_url: str) -> web.Application:
    """A relay as usually written: httpx stream, ``json.loads`` and ``json.dumps`` per chunk."""
    import httpx

    endpoint = upstream_url.rstrip("/") + "/chat/completions"
    clients: list[httpx.AsyncClient] = []

    async def start(app: web.Application) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        clients.append(httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0, connect=10.0)))

    async def stop(app: web.Application) -> None:
        await clients[0].aclose()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        body["model"] = UPSTREAM_MODEL
        if not body.get("stream"):
            answer = (await clients[0].post(endpoint, json=body)).json()
            answer["model"] = MODEL
            return web.json_response(answer)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            async with clients[0].stream("POST", endpoint, json=body) as upstream:
                upstream.raise_for_status()
                await response.prepare(request)
                async for line in upstream.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        await response.write(b"data: [DONE]\n\n")
                        break
                    chunk = json.loads(data)
                    chunk["model"] = MODEL
                    text = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
                    await response.write(f"data: {text}\n\n".encode())
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client is gone: nothing to tell it
        return response

    app = web.Application(handler_args={"handler_cancellation": True})
    app.router.add_post("/v1/chat/completions", chat)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def run_litellm(upstream_url: str) -> None:
    """Serve the LiteLLM proxy's ASGI app, one model at the upstream, on uvicorn (uvloop +
    httptools, no access log, as ours); ``LITELLM_MASTER_KEY`` must be set."""
    from benchmarks.servers import announce, listening_socket, serve_uvicorn

    if not os.environ.get("LITELLM_MASTER_KEY"):
        raise SystemExit("litellm: LITELLM_MASTER_KEY is not set")
    harness = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    # Its banners (print) go nowhere: not into the harness's pipe, not onto the terminal; its
    # errors still reach stderr (its logging, at ERROR).
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, sys.stdout.fileno())
    os.close(quiet)
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{UPSTREAM_MODEL}",
                    "api_base": upstream_url,
                    "api_key": "none",
                },
            }
        ],
        "litellm_settings": {"telemetry": False},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="bench-litellm-", delete=False) as file:
        json.dump(config, file)  # JSON is YAML
    try:
        os.environ.update({**LITELLM_ENV, "CONFIG_FILE_PATH": file.name})
        from litellm.proxy.proxy_server import app

        sock = listening_socket()
        announce("READY", sock.getsockname()[1], harness)
        harness.close()
        serve_uvicorn(_forgetting(app, file.name), sock, loop="uvloop", http="httptools")
    finally:
        _remove(file.name)


def _forgetting(app: Any, path: str) -> Any:
    """``app``, removing the file at ``path`` once its startup read it: LiteLLM's shutdown ends
    the process by the signal, so no ``finally`` would."""

    async def forgetting(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)  # type: ignore[no-any-return]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] in ("lifespan.startup.complete", "lifespan.startup.failed"):
                _remove(path)
            await send(message)

        return await app(scope, receive, sending)  # type: ignore[no-any-return]

    return forgetting


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
