"""Does one hostile request stall everyone else? ``/health`` latency while it is being served.

``python -m benchmarks.stall`` starts ``nanobot serve`` on each stack (echo agent, the default
limits), sends each probe request from issue 9 once, and meanwhile asks ``/health`` every 5 ms
on another connection. It prints the probe's status and the ``/health`` p50/p99/max. A probe
that the limits refuse early is the point: a request must never hold the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks.processes import running, wait_listening

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()
Probe = Callable[[], tuple[bytes, bytes]]  # (content type, body)


def images(n: int) -> tuple[bytes, bytes]:
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    return b"application/json", json.dumps({"messages": [{"role": "user", "content": [part] * n}]}).encode()


def files(n: int) -> tuple[bytes, bytes]:
    boundary = b"b0undary"
    png = base64.b64decode(PNG)
    part = (
        b'--%s\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n%s\r\n" % (boundary, png)
    )
    body = part * n + b'--%s\r\nContent-Disposition: form-data; name="message"\r\n\r\nhi\r\n--%s--\r\n' % (
        boundary,
        boundary,
    )
    return b"multipart/form-data; boundary=" + boundary, body


def messages(n: int) -> tuple[bytes, bytes]:
    body = {"messages": [{"role": "user", "content": ""}] * (n - 1) + [{"role": "user", "content": "x"}]}
    return b"application/json", json.dumps(body, separators=(",", ":")).encode()


def echo(size: int) -> tuple[bytes, bytes]:
    words = " w" * (size // 2)
    return b"application/json", json.dumps(
        {"stream": True, "messages": [{"role": "user", "content": words}]}
    ).encode()


PROBES: dict[str, Probe] = {
    "100k data-URL images": lambda: images(100_000),
    "100k multipart files": lambda: files(100_000),
    "559k messages": lambda: messages(559_000),
    "echo of a 7.6 MB body": lambda: echo(7_600_000),
}


async def send(port: int, content_type: bytes, body: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (content_type, len(body))
    )
    writer.write(body)
    try:
        status = (await reader.readline()).split(b" ")[1]
        while await reader.read(1 << 20):  # read the whole answer, as a client would
            pass
    except ConnectionError:  # the server answered early and closed while the body was still going
        status = status if "status" in locals() else b"closed"
    writer.close()
    return status


async def health(port: int, stop: asyncio.Event, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    while not stop.is_set():
        start = time.perf_counter()
        writer.write(request)
        await reader.readuntil(b"\r\n\r\n")
        await reader.readuntil(b"}")
        latencies.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.005)
    writer.close()


async def probe(port: int, make: Probe) -> tuple[bytes, float, list[float]]:
    content_type, body = make()
    stop = asyncio.Event()
    latencies: list[float] = []
    poller = asyncio.create_task(health(port, stop, latencies))
    start = time.perf_counter()
    status = await send(port, content_type, body)
    took = time.perf_counter() - start
    stop.set()
    await poller
    return status, took, latencies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stack", action="append", choices=("aiohttp", "asgi"))
    args = parser.parse_args()
    print("| stack | probe | status | served in s | /health p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for stack in args.stack or ("aiohttp", "asgi"):
        port = free_port()
        args = ("serve", "--stack", stack, "--port", str(port), "--log-level", "warning")
        with running("nanobot", *args) as server:
            wait_listening(server, port, 30)
            for name, make in PROBES.items():
                status, took, lat = asyncio.run(probe(port, make))
                p99 = (
                    statistics.quantiles(lat, n=100, method="inclusive")[98]
                    if len(lat) >= 2
                    else max(lat, default=0)
                )
                print(
                    f"| {stack} | {name} | {status.decode()} | {took:.2f} | "
                    f"{statistics.median(lat):.1f} | {p99:.1f} | {max(lat):.1f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
