"""The servers under test, and the child process that runs one of them.

``python -m benchmarks.servers NAME CPU [UPSTREAM]`` binds ``127.0.0.1:0`` itself, prints
``READY <port>`` once the socket listens (connections wait in its backlog until the server
accepts them), and serves until it is terminated. Granian binds its own socket in its own worker
process, so for it the child prints ``PORT <port>`` and the harness connects until the port
answers. A W4 relay (``relay=True``) relays to ``UPSTREAM``, the cheap upstream's base URL;
``direct`` is no process of its own: it names the upstream itself.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from benchmarks.agents import BenchAgent

MODEL = "bench"
BACKLOG = 4096


@dataclass(frozen=True, slots=True)
class Server:
    """One server under test: a short name, what it is, and the modules it needs."""

    name: str
    kind: str  # "ours", "peer", "floor" or (W4) "direct"
    description: str
    requires: tuple[str, ...] = ()
    relay: bool = False  # a W4 relay in front of the cheap upstream (runs W4 only; the others skip it)
    hint: str = ""  # how to install what it needs, if that is not the bench extra
    start_timeout: float = 30.0  # seconds to wait for it to listen
    #: Scale-out (issue 13): sessions in the run's ``redis-server``; runs :data:`SCALE_WORKLOADS` only.
    redis: bool = False
    pinned: bool = True  # on the server core (else on both: ``--workers 2`` shares the load's core)

    def missing(self) -> list[str]:
        """The modules (and, for a Redis server, the programs) it needs that are not installed."""
        missing = [module for module in self.requires if importlib.util.find_spec(module) is None]
        if self.redis and shutil.which("redis-server") is None:
            missing.append("redis-server")
        return missing

    def runs(self, workload: str) -> bool:
        """Whether it runs a reported step of ``workload``."""
        return not self.redis or workload in SCALE_WORKLOADS


#: What the scale-out servers run: the per-token and the per-request figure.
SCALE_WORKLOADS = ("W1y", "W3")


SERVERS = (
    Server("floor", "floor", "asyncio.Protocol, pre-encoded chunks, uvloop", ("uvloop",)),
    Server("aiohttp", "ours", "create_app on aiohttp AppRunner, uvloop", ("uvloop",)),
    Server("uvicorn", "ours", "create_asgi_app on uvicorn, uvloop + httptools", ("uvloop", "httptools")),
    Server("uvicorn-h11", "ours", "create_asgi_app on uvicorn, asyncio + h11", ("h11",)),
    Server("hypercorn", "ours", "create_asgi_app on hypercorn (h11), uvloop", ("hypercorn", "uvloop")),
    Server("granian", "ours", "create_asgi_app on granian (Rust HTTP), 1 worker, uvloop", ("granian",)),
    Server("sse-starlette", "peer", "EventSourceResponse on uvicorn, uvloop + httptools", ("sse_starlette",)),
    Server("aiohttp-sse", "peer", "aiohttp_sse.sse_response on aiohttp, uvloop", ("aiohttp_sse", "uvloop")),
    Server("naive", "peer", "aiohttp, Queue + json.dumps + one write per token, uvloop", ("uvloop",)),
    Server("direct", "direct", "W4 without a relay: the load talks to the upstream", ("uvloop",), True),
    Server(
        "relay-floor", "floor", "asyncio.Protocol relay, pooled upstream, bytes re-framed", ("uvloop",), True
    ),
    Server("relay-aiohttp", "ours", "openai agent on create_app, aiohttp, uvloop", ("uvloop",), True),
    Server(
        "relay-uvicorn",
        "ours",
        "openai agent on create_asgi_app, uvicorn, uvloop + httptools",
        ("uvloop", "httptools"),
        True,
    ),
    Server(
        "relay-naive", "peer", "aiohttp + httpx stream, json.loads + json.dumps per chunk", ("uvloop",), True
    ),
    Server(
        "litellm",
        "peer",
        "LiteLLM proxy app on uvicorn, uvloop + httptools",
        ("litellm", "fastapi", "uvloop", "httptools"),
        True,
        " (pip install 'litellm[proxy]'; see benchmarks/README.md)",
        180.0,  # importing the proxy takes tens of seconds on a small machine
    ),
    *(
        Server(
            f"{stack}-{tag}",
            "ours",
            f"{what}, sessions in Redis, {stack}, uvloop",
            ("uvloop",),
            redis=True,
            pinned=tag == "redis",
            hint=" (apt-get install -y redis-server)",
        )
        for stack in ("aiohttp", "uvicorn")
        for tag, what in (
            ("redis", "one process"),
            ("w1", "nanobot's Supervisor, 1 worker on both cores"),
            ("w2", "nanobot's Supervisor, 2 workers on both cores"),
        )
    ),
)
QUICK = ("floor", "aiohttp", "uvicorn", "sse-starlette", "aiohttp-sse", "naive", "aiohttp-w2", "uvicorn-w2")
QUICK_RELAYS = ("direct", "relay-floor", "relay-aiohttp", "relay-uvicorn", "relay-naive")


def by_name(name: str) -> Server:
    for server in SERVERS:
        if server.name == name:
            return server
    raise KeyError(f"no server named {name!r}; known: {', '.join(s.name for s in SERVERS)}")


def listening_socket() -> socket.socket:
    # IPPROTO_TCP, not 0: the stock asyncio loop turns Nagle off only on sockets it knows are TCP;
    # with proto 0, uvicorn on asyncio stalls 40 ms (delayed ACK) on every keep-alive response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def announce(word: str, port: int, out: TextIO | None = None) -> None:
    print(f"{word} {port}", file=out or sys.stdout, flush=True)


def nanobot_asgi() -> Any:
    """The ASGI app under test (a factory, so granian's worker can import it)."""
    from nanobot import heap
    from nanobot.api.asgi import create_asgi_app

    app = create_asgi_app(BenchAgent(), model_name=MODEL)
    heap.settle()  # as nanobot serve and asgi.app do
    return app


async def until_terminated() -> None:
    """Wait for SIGTERM or SIGINT."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def run_aiohttp(make_app: Callable[[BenchAgent], Any], sock: socket.socket | None = None) -> None:
    """An aiohttp application on ``AppRunner`` + ``SockSite``, on uvloop; it binds its own
    socket and announces it unless given one."""
    import uvloop
    from aiohttp import web

    async def main() -> None:
        runner = web.AppRunner(make_app(BenchAgent()), access_log=None, handle_signals=False)
        await runner.setup()
        bound = sock or listening_socket()
        await web.SockSite(runner, bound, backlog=BACKLOG).start()
        if sock is None:
            announce("READY", bound.getsockname()[1])
        try:
            await until_terminated()
        finally:
            await runner.cleanup()

    uvloop.run(main())


def run_uvicorn(app: Any, *, loop: str, http: str) -> None:
    """An ASGI app on uvicorn, serving a socket we bound."""
    sock = listening_socket()
    announce("READY", sock.getsockname()[1])
    serve_uvicorn(app, sock, loop=loop, http=http)


def serve_uvicorn(app: Any, sock: socket.socket, *, loop: str, http: str) -> None:
    """Serve ``sock`` with uvicorn until terminated."""
    import uvicorn

    config = uvicorn.Config(
        app,
        loop=loop,
        http=http,
        log_level="warning",
        access_log=False,
        backlog=BACKLOG,
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run(sockets=[sock])


def run_hypercorn(app: Any) -> None:
    """An ASGI app on hypercorn's asyncio worker, on uvloop, serving a socket we bound."""
    import uvloop
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = listening_socket()
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.loglevel = "WARNING"  # no "Running on ..." line in the harness's output
    config.backlog = BACKLOG
    config.graceful_timeout = 1
    announce("READY", sock.getsockname()[1])
    uvloop.run(serve(app, config, shutdown_trigger=until_terminated, mode="asgi"))


def run_granian() -> None:
    """Our ASGI app on granian: one worker process, single-threaded runtime, uvloop."""
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes
    from granian.log import LogLevels

    probe = listening_socket()
    port = probe.getsockname()[1]
    probe.close()
    announce("PORT", port)
    Granian(
        "benchmarks.servers:nanobot_asgi",
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        workers=1,
        runtime_mode=RuntimeModes.st,
        loop=Loops.uvloop,
        factory=True,
        log_level=LogLevels.warning,
        backlog=BACKLOG,
    ).serve()


def run_floor() -> None:
    """The floor protocol on uvloop."""
    import uvloop

    from benchmarks.floor import FloorProtocol

    async def main() -> None:
        agent = BenchAgent()
        sock = listening_socket()
        server = await asyncio.get_running_loop().create_server(lambda: FloorProtocol(agent), sock=sock)
        announce("READY", sock.getsockname()[1])
        try:
            await until_terminated()
        finally:
            server.close()

    uvloop.run(main())


def run_relay_floor(upstream_url: str) -> None:
    """The relay floor on uvloop."""
    import uvloop

    from benchmarks.relayfloor import ClientSide, Pool

    async def main() -> None:
        pool = Pool(upstream_url.rstrip("/") + "/chat/completions")
        sock = listening_socket()
        server = await asyncio.get_running_loop().create_server(lambda: ClientSide(pool), sock=sock)
        announce("READY", sock.getsockname()[1])
        try:
            await until_terminated()
        finally:
            server.close()

    uvloop.run(main())


def _nanobot_aiohttp(agent: BenchAgent, redis_url: str = "") -> Any:
    from nanobot import heap
    from nanobot.api.server import create_app

    if not redis_url:
        app = create_app(agent, model_name=MODEL)
    else:
        from nanobot.api.redis_sessions import RedisSessions

        app = create_app(agent, model_name=MODEL, sessions=RedisSessions(redis_url))
    heap.settle()  # as nanobot serve does
    return app


def _nanobot_asgi_redis(redis_url: str) -> Any:
    from nanobot import heap
    from nanobot.api.asgi import create_asgi_app
    from nanobot.api.redis_sessions import RedisSessions

    app = create_asgi_app(BenchAgent(), model_name=MODEL, sessions=RedisSessions(redis_url))
    heap.settle()  # as nanobot serve does
    return app


def run_scaled(stack: str, workers: int, redis_url: str) -> None:
    """Ours with sessions in Redis; ``workers > 0``: that many workers under nanobot's
    :class:`~nanobot.workers.Supervisor` (as ``nanobot serve --workers N``), sharing our socket.
    Each worker makes its own app (its own Redis connections), after the fork."""

    def serve(sock: socket.socket | None = None) -> int:
        if stack == "aiohttp":
            run_aiohttp(lambda agent: _nanobot_aiohttp(agent, redis_url), sock)
        elif sock is None:
            run_uvicorn(_nanobot_asgi_redis(redis_url), loop="uvloop", http="httptools")
        else:
            serve_uvicorn(_nanobot_asgi_redis(redis_url), sock, loop="uvloop", http="httptools")
        return 0

    if workers == 0:
        serve()
        return
    from nanobot.workers import Supervisor

    sock = listening_socket()
    announce("READY", sock.getsockname()[1])
    sys.exit(Supervisor(serve, sock, workers).run())


def run(name: str, cpu: int | None, upstream: str = "") -> None:
    """Serve the server called ``name``, pinned to ``cpu``, until terminated; a W4 relay relays
    to the ``upstream`` base URL (``http://127.0.0.1:PORT/v1``), a scale-out server keeps its
    sessions at the ``upstream`` Redis URL."""
    from benchmarks import peers, relays
    from benchmarks.processes import prepare_process

    prepare_process(cpu)

    runners: dict[str, Callable[[], None]] = {
        "floor": run_floor,
        "aiohttp": lambda: run_aiohttp(_nanobot_aiohttp),
        "uvicorn": lambda: run_uvicorn(nanobot_asgi(), loop="uvloop", http="httptools"),
        "uvicorn-h11": lambda: run_uvicorn(nanobot_asgi(), loop="asyncio", http="h11"),
        "hypercorn": lambda: run_hypercorn(nanobot_asgi()),
        "granian": run_granian,
        "sse-starlette": lambda: run_uvicorn(
            peers.sse_starlette_app(BenchAgent()), loop="uvloop", http="httptools"
        ),
        "aiohttp-sse": lambda: run_aiohttp(peers.aiohttp_sse_app),
        "naive": lambda: run_aiohttp(peers.naive_app),
        "relay-floor": lambda: run_relay_floor(upstream),
        "relay-aiohttp": lambda: run_aiohttp(lambda _: relays.ours_aiohttp(upstream)),
        "relay-uvicorn": lambda: run_uvicorn(relays.ours_asgi(upstream), loop="uvloop", http="httptools"),
        "relay-naive": lambda: run_aiohttp(lambda _: relays.naive_relay_app(upstream)),
        "litellm": lambda: relays.run_litellm(upstream),
    }
    for stack in ("aiohttp", "uvicorn"):
        for tag, workers in (("redis", 0), ("w1", 1), ("w2", 2)):
            runners[f"{stack}-{tag}"] = functools.partial(run_scaled, stack, workers, upstream)
    runners[name]()


if __name__ == "__main__":
    cpu_arg = sys.argv[2] if len(sys.argv) > 2 else "-"
    run(sys.argv[1], None if cpu_arg == "-" else int(cpu_arg), sys.argv[3] if len(sys.argv) > 3 else "")
