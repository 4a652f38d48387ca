"""Measure what oversized headers and idle or slow sockets do to a real ``nanobot serve``.

Not a test: a probe for before/after figures. It starts ``python -m nanobot serve --port 0`` on
the chosen stack (with an API key set and never sent), then

1. sends ``--requests`` requests (one after another, or ``--together``), one connection
   each, with one ``--header-mb`` MB header streamed in 64 KiB pieces, and reports each
   answer and the server's RSS (now and peak);
2. opens ``--idle`` sockets that send nothing and one that drips a header byte per second,
   and reports how long the server keeps them open (at most ``--wait`` seconds).

    python scripts/measure_limits.py --stack asgi
    python scripts/measure_limits.py --stack aiohttp --wait 30 -- --header-timeout 2
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIECE = b"a" * 65536


def memory(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of ``pid`` in MB, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def big_header(port: int, size: int) -> str:
    """Send a request whose one header is ``size`` bytes; say how the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    sent = 0
    try:
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: probe\r\nX-Big: ")
        while sent < size:
            writer.write(PIECE)
            await asyncio.wait_for(writer.drain(), 30)
            sent += len(PIECE)
        writer.write(b"\r\n\r\n")
        await writer.drain()
    except (ConnectionError, TimeoutError) as exc:
        outcome = f"send stopped: {type(exc).__name__}"
    else:
        outcome = "sent all"
    try:
        head = await asyncio.wait_for(reader.read(200), 60)
        answer = head.split(b"\r\n", 1)[0].decode(errors="replace") or "EOF"
    except (ConnectionError, TimeoutError) as exc:
        answer = type(exc).__name__
    writer.close()
    took = time.perf_counter() - started
    return f"{outcome} after {sent / 2**20:.1f} MB; answer {answer!r}; {took:.1f} s"


async def open_until_closed(port: int, drip: bool, wait: float) -> float | None:
    """Seconds until the server closes a silent (or dripping) socket; None if still open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()

    async def dripping() -> None:
        writer.write(b"GET /v1/models HTTP/1.1\r\nX-Slow: ")
        while True:
            await asyncio.sleep(1)
            writer.write(b"a")

    dripper = asyncio.create_task(dripping()) if drip else None
    try:
        await asyncio.wait_for(reader.read(), wait)
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    finally:
        if dripper is not None:
            dripper.cancel()
        writer.close()
    return time.perf_counter() - started


def closed_summary(results: Sequence[float | None], wait: float) -> str:
    closed = [r for r in results if r is not None]
    if not closed:
        return f"all {len(results)} still open after {wait:.0f} s"
    return f"{len(closed)}/{len(results)} closed, after {min(closed):.1f}-{max(closed):.1f} s"


async def probe(port: int, pid: int, args: argparse.Namespace) -> None:
    rss, peak = memory(pid)
    print(f"start: RSS {rss:.0f} MB, peak {peak:.0f} MB", flush=True)
    size = int(args.header_mb * 2**20)
    if args.together:
        outcomes = await asyncio.gather(*(big_header(port, size) for _ in range(args.requests)))
        for number, outcome in enumerate(outcomes):
            print(f"request {number + 1}: {outcome}")
        rss, peak = memory(pid)
        print(f"RSS {rss:.0f} MB, peak {peak:.0f} MB", flush=True)
    for number in range(0 if args.together else args.requests):
        outcome = await big_header(port, size)
        rss, peak = memory(pid)
        print(f"request {number + 1}: {outcome}; RSS {rss:.0f} MB, peak {peak:.0f} MB", flush=True)
    await asyncio.sleep(1)
    rss, peak = memory(pid)
    print(f"after: RSS {rss:.0f} MB kept, peak {peak:.0f} MB", flush=True)
    silent = [open_until_closed(port, False, args.wait) for _ in range(args.idle)]
    results = await asyncio.gather(*silent, open_until_closed(port, True, args.wait))
    print(f"silent sockets: {closed_summary(results[:-1], args.wait)}")
    print(f"dripping socket: {closed_summary(results[-1:], args.wait)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--stack", default="asgi", choices=("aiohttp", "asgi"))
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--header-mb", type=float, default=32)
    parser.add_argument("--together", action="store_true", help="send the requests at once")
    parser.add_argument("--idle", type=int, default=20)
    parser.add_argument("--wait", type=float, default=30)
    parser.add_argument("serve_args", nargs="*", help="more 'nanobot serve' flags, after --")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "nanobot", "serve", "--port", "0", "--stack", args.stack]
    server = subprocess.Popen(
        [*command, "--api-key", "k", *args.serve_args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        match = re.search(r"at http://[^:]+:(\d+)/v1", server.stdout.readline())
        assert match, "no banner"
        asyncio.run(probe(int(match.group(1)), server.pid, args))
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    lines = [line for line in output.splitlines() if line and not line.startswith("try: curl")]
    print(f"server output after the banner: {len(lines)} lines")
    print("\n".join(f"  {line}" for line in lines[:10]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
