"""``nanobot serve``: run the API on the chosen stack until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from nanobot import heap
from nanobot.agents import Agent
from nanobot.agents.loader import AgentLoadError, load_agent
from nanobot.api.guard import is_loopback
from nanobot.config import USAGE_ERROR, ConfigError, Settings, flag_name, print_error, read_command
from nanobot.fdlimit import calm_resource_errors, raise_open_file_limit
from nanobot.workers import Supervisor, metrics_dir, remove_metrics_dir, reuse_port_spreads

logger = logging.getLogger("nanobot")
PROG = "nanobot serve"


def configure_logging(settings: Settings) -> None:
    """``--log-level`` and ``--log-format``: text lines, or one JSON object per line."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        from nanobot.api.access import JSONFormatter  # imports prometheus-client: after metrics_dir

        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)


def build_agent(settings: Settings) -> Agent:
    """The agent; a ``module:attribute`` spec is looked up in ``--app-dir`` first (default: here)."""
    app_dir = str(Path(settings.app_dir).resolve())
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    return load_agent(settings.agent, settings)


def check_exposure(settings: Settings) -> None:
    """Refuse to serve a network address with no API key, unless told the network is trusted."""
    if settings.api_key or settings.allow_unauthenticated or is_loopback(settings.host):
        return
    raise ConfigError(
        f"{settings.host} serves the network, so set an API key: --api-key KEY (or NANOBOT_API_KEY), "
        "which clients send as 'Authorization: Bearer KEY'; on a trusted network, "
        "--allow-unauthenticated serves without one",
        "host",
    )


def bind(settings: Settings) -> socket.socket:
    """A listening socket, bound before the server starts so the URL printed is the real one.

    With several workers it is made to share its port (``SO_REUSEPORT``, where the kernel spreads
    connections among such sockets): the supervisor gives each worker a socket of its own.
    A ``ConfigError`` says which address could not be served, and why.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    shared = settings.workers > 1 and reuse_port_spreads()
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets it knows are TCP
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        port = _free_port(family, settings.host, settings.port) if shared else settings.port
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        shown = f"[{settings.host}]" if ":" in settings.host else settings.host
        why = (exc.strerror or str(exc)).lower()
        if isinstance(exc, socket.gaierror):
            raise ConfigError(f"cannot find the address {settings.host!r}: {why}", "host") from None
        hint = (
            " (another process listens there: stop it, or choose another port)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise ConfigError(f"cannot listen on {shown}:{settings.port}: {why}{hint}") from None
    sock.setblocking(False)
    return sock


def _free_port(family: socket.AddressFamily, host: str, port: int) -> int:
    """``port`` (or a free one for 0) once a socket without ``SO_REUSEPORT`` could bind it: a
    server already there (another ``nanobot serve --workers`` too) is "address already in use",
    not a silent sharer of its connections."""
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        free: int = probe.getsockname()[1]
        return free


def banner(settings: Settings, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    auth = " -H 'Authorization: Bearer YOUR_API_KEY'" if settings.api_key else ""  # never the key
    return (
        f"nanobot serving agent {settings.agent!r} as model {settings.model!r} "
        f"on {settings.stack} at {url}/v1" + ("" if settings.no_ui else f" (chat page: {url}/)") + "\n"
        f"try: curl -N {url}/v1/chat/completions{auth} -H 'Content-Type: application/json' "
        f'-d \'{{"model": "{settings.model}", "stream": true, '
        f'"messages": [{{"role": "user", "content": "hello there"}}]}}\''
    )


@asynccontextmanager
async def _serving_aiohttp(settings: Settings, agent: Agent, sock: socket.socket) -> AsyncIterator[None]:
    from aiohttp import web

    from nanobot.api.aiohttp_http import LimitedAppRunner
    from nanobot.api.server import SERVICE, create_app

    app = create_app(agent, **settings.service_options())
    runner = LimitedAppRunner(app, limits=settings.head_limits(), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield
    finally:
        # Drain while still listening, as on uvicorn: /health and new requests get a 503 then
        # (aiohttp's own on_shutdown drain, for web.run_app, runs after it stops listening).
        await app[SERVICE].drain()
        await runner.cleanup()


@asynccontextmanager
async def _serving_asgi(settings: Settings, agent: Agent, sock: socket.socket) -> AsyncIterator[None]:
    import uvicorn

    from nanobot.api.asgi import create_asgi_app
    from nanobot.api.uvicorn_http import uvicorn_options

    class Server(uvicorn.Server):
        """uvicorn, told when it is up, leaving signals to us (it would re-raise them on exit)."""

        ready = asyncio.Event()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            self.ready.set()

    app = create_asgi_app(agent, **settings.service_options())
    config = uvicorn.Config(
        app,
        log_config=None,  # our handler and format (text or JSON) for uvicorn's lines too
        access_log=False,  # the core logs each request once
        log_level="debug" if settings.log_level.lower() == "debug" else "warning",  # no start-up chatter
        lifespan="on",
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings.head_limits()),
    )
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait((task, ready), return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    try:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped during start-up")
        yield
    finally:
        await app.state.service.drain()  # uvicorn would wait at most 5 s, then cut open streams
        server.should_exit = True
        await task


def _force_exit(signum: int, frame: FrameType | None) -> None:
    """A second SIGINT or SIGTERM: leave now, whatever is still shutting down."""
    sys.stdout.flush()
    name = signal.Signals(signum).name
    print(f"nanobot: {name} again, exiting without waiting", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _stop_on_signals(stop: asyncio.Event, *, worker: bool = False) -> None:
    """The first SIGINT or SIGTERM sets ``stop``; the next one forces an exit.

    The second is handled outside the event loop, so it works even while the loop is stuck.
    A worker of ``--workers`` takes its orders from the supervisor alone: it ignores SIGINT
    (Ctrl-C reaches the whole process group) and a SIGTERM repeated within a second of the first
    (a service manager may signal every process of the group as the supervisor passes it on).
    """
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM,) if worker else (signal.SIGINT, signal.SIGTERM)
    if worker:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def first(signum: int) -> None:
        stop.set()
        since = time.monotonic()
        for sig in signals:
            loop.remove_signal_handler(sig)
            signal.signal(sig, _force_exit if not worker else functools.partial(_forced_after, since))

    for sig in signals:
        loop.add_signal_handler(sig, first, sig)


def _forced_after(since: float, signum: int, frame: FrameType | None) -> None:
    """A worker's second SIGTERM: an echo of the first if it comes within a second."""
    if time.monotonic() - since > 1.0:
        _force_exit(signum, frame)


async def _serve(
    settings: Settings, agent: Agent, sock: socket.socket, fd_limit: tuple[int, int], *, worker: bool = False
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (the agent's ``aclose`` runs)."""
    stop = asyncio.Event()
    _stop_on_signals(stop, worker=worker)
    serving = _serving_asgi if settings.stack == "asgi" else _serving_aiohttp
    async with serving(settings, agent, sock):
        heap.settle()  # the app is built: freeze it, and collect garbage less often
        if not worker:  # the supervisor prints it once for all workers
            print(banner(settings, sock), flush=True)
        if fd_limit[1] != fd_limit[0]:
            logger.info("open-file limit raised from %d to %d", *fd_limit)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``nanobot``: its exit code (2 for any error in the command line or the settings)."""
    try:
        settings, name = read_command(argv)
    except SystemExit as exc:  # --help, --version, or an error already printed
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    # Before prometheus-client is imported: with several workers, it reads the folder then.
    folder = metrics_dir() if settings.workers > 1 else None
    try:
        return _main(settings, name)
    finally:
        remove_metrics_dir(folder)


def refused(exc: ConfigError | AgentLoadError, name: Callable[[str], str] = flag_name) -> int:
    """Print why the server cannot start, as every command-line error is printed; exit code 2."""
    error = exc if isinstance(exc, ConfigError) else ConfigError(str(exc), "agent")
    print_error(PROG, error.tidied().naming(name))
    return USAGE_ERROR


def _main(settings: Settings, name: Callable[[str], str]) -> int:
    configure_logging(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream request otherwise
    calm_resource_errors()
    fd_limit = raise_open_file_limit()
    try:
        check_exposure(settings)
        agent = build_agent(settings) if settings.workers == 1 else None
        sock = bind(settings)
    except (AgentLoadError, ConfigError) as exc:
        return refused(exc, name)
    if agent is not None:
        _run(_serve(settings, agent, sock, fd_limit))
        code = 0
    else:
        print(banner(settings, sock) + f"\n({settings.workers} workers)", flush=True)
        serve = functools.partial(_worker, settings, name, fd_limit)
        code = Supervisor(serve, sock, settings.workers).run()
    print("nanobot stopped", flush=True)
    return code


def _worker(
    settings: Settings, name: Callable[[str], str], fd_limit: tuple[int, int], sock: socket.socket
) -> int:
    """One of ``--workers``: its own agent and loop on its socket."""
    try:
        agent = build_agent(settings)
    except (AgentLoadError, ConfigError) as exc:
        return refused(exc, name)
    _run(_serve(settings, agent, sock, fd_limit, worker=True))
    return 0


#: Seconds tasks still running after shutdown get to end once cancelled.
LEFTOVER_GRACE = 1.0


def _run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run``, except that it never waits forever for tasks that ignore cancellation
    (an agent abandoned after its deadline): ``asyncio.run`` would, and the process would hang."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            _, pending = loop.run_until_complete(asyncio.wait(leftovers, timeout=LEFTOVER_GRACE))
            if pending:
                logger.warning("%d task(s) ignored cancellation at exit; leaving them", len(pending))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()
