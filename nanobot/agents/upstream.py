"""The upstream: one OpenAI-compatible server, streamed over one pooled ``aiohttp`` client session.

aiohttp's client was chosen by measurement: against a bare asyncio upstream it costs about a
fifth of httpx's CPU per request and a third per streamed chunk (its HTTP parser is in C).
Every fault becomes the API error a client should see: unreachable, refused, failed or broken
upstreams, and events over :data:`~nanobot.agents.chunks.MAX_EVENT_BYTES`, are 502
(:class:`UpstreamFailed`); so is a redirect: none is followed (a 307 would re-send the prompt to
another host, a 302 make us fetch any address), unless ``follow_redirects`` allows same-origin
ones (:func:`redirect_target`); a request it rejects as invalid (400, 422) is our 400 with its
message; its 429 is our 429 with its ``Retry-After``, which the message repeats for streaming
clients (all they get is the error event); its silence past :data:`DEFAULT_TIMEOUT` is 504.
Nothing is retried: a turn runs upstream at most once. Cancelling :meth:`Upstream.complete`
closes the upstream connection at once. The body is read as bytes and split into events by
:class:`~nanobot.agents.chunks.EventDecoder`. The upstream's silence (``sock_read``) is watched by
one timer per request (:class:`Silence`), not by aiohttp's, which it resets on every read.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import math
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import certifi
import orjson
from yarl import URL

from nanobot.agents.chunks import MAX_EVENT_BYTES, ChunkReader, EventDecoder, error_detail, too_large
from nanobot.api.metrics import UPSTREAM_FAILURES, UPSTREAM_TIME
from nanobot.core.errors import AgentTimeout, APIError, InvalidRequest, RateLimited, UpstreamFailed
from nanobot.core.events import OnEvent, TextDelta, ToolCall
from nanobot.core.reply import Usage

logger = logging.getLogger("nanobot.agents.upstream")

OnDelta = Callable[[str], Awaitable[None]]
#: A message as sent upstream: ``content`` is text, or OpenAI's list of parts (text, images).
UpstreamMessage = Mapping[str, Any]

#: Connecting must be quick; the gap between two upstream reads may be long (prefill, model
#: loading). The whole turn is bounded by the server's ``request_timeout`` anyway.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=300.0)
#: Idle pooled connections kept per upstream (turns are bounded by the server anyway).
POOL_SIZE = 64
#: How long to wait for the end of the response body after ``[DONE]`` (to reuse the connection).
DRAIN_GRACE = 1.0
#: How much of an error body to read.
ERROR_BODY_LIMIT = 64 * 1024
#: Request bodies past this size are handed to aiohttp as a buffer, not as bytes.
LARGE_BODY = 1024 * 1024
#: Statuses by which an upstream says the request itself is wrong: the client's 400.
REJECTED = frozenset({400, 422})
#: Statuses that redirect (``Location``); followed only when same-origin ones are allowed.
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Most same-origin redirects one request follows.
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer: its whole text, why it finished (the upstream's reason) and, when the upstream
    told us, its counts; its client tool calls and its reasoning."""

    content: str
    usage: Usage | None = None
    finish_reason: str = "stop"
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""


class UpstreamRejected(InvalidRequest):
    """The upstream refused the request as invalid (e.g. a sampling field it does not take)."""

    default_code = "upstream_rejected"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """A TLS context with certifi's CA bundle, built once per process (loading it takes ~80 ms)."""
    return ssl.create_default_context(cafile=certifi.where())


def chat_endpoint(url: str) -> str:
    """``.../v1`` or the full ``.../v1/chat/completions``: the URL to POST to."""
    base = url.rstrip("/")
    return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


class Upstream:
    """Streams chat completions from ``url`` (e.g. ``http://localhost:11434/v1``) for ``model``."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        follow_redirects: bool = False,
        max_tokens: int = 0,
        reasoning_effort: bool = True,
    ) -> None:
        self.endpoint = chat_endpoint(url)
        self.model = model
        #: The largest ``max_tokens``/``max_completion_tokens`` sent (0: the client's, as sent).
        self.max_tokens = max_tokens
        #: Send the client's ``reasoning_effort`` (off for an upstream or model that refuses it).
        self.reasoning_effort = reasoning_effort
        #: Follow the upstream's redirects within its origin (scheme, host, port); never beyond.
        self.follow_redirects = follow_redirects
        self._headers = {
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",  # a compressing upstream or proxy would hold tokens back
            "Content-Type": "application/json",
            "User-Agent": "nanobot-api",
        }
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._silence_limit = timeout.sock_read or None  # watched by Silence, not by aiohttp
        self._timeout = aiohttp.ClientTimeout(
            total=timeout.total,
            connect=timeout.connect,
            sock_connect=timeout.sock_connect,
            ceil_threshold=timeout.ceil_threshold,
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the session's

    async def complete(
        self,
        messages: Sequence[UpstreamMessage],
        on_delta: OnDelta,
        *,
        request_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        on_event: OnEvent | None = None,
    ) -> Completion:
        """Stream one answer to ``messages``, handing each text delta to ``on_delta`` as it comes,
        and its reasoning and tool-call fragments to ``on_event`` (dropped when ``None``).

        ``options`` are the client's sampling fields (``temperature``, ``max_tokens``, ...) and
        tool options (``tool_choice``, ``parallel_tool_calls``), sent as they came, as are the
        client's ``tools``; they never override the model, the messages or streaming. The
        operator's limits apply first: ``max_tokens`` lowered to :attr:`max_tokens`,
        ``reasoning_effort`` dropped unless :attr:`reasoning_effort`."""
        if options and (self.max_tokens or not self.reasoning_effort):
            options = self._limited(options)
        body = {
            **(options or {}),
            "model": self.model,
            "messages": messages if isinstance(messages, list) else list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = tools if isinstance(tools, list) else list(tools)
        headers = {"X-Request-Id": request_id} if request_id else None
        started = time.perf_counter()
        session = self._client()
        silence = Silence(self._loop, self._silence_limit)
        try:
            try:
                async with self._post(session, _payload(body), headers) as response:
                    if response.status >= 300:
                        raise await self._refusal(response, silence)
                    return await self._read(response, on_delta, on_event, silence)
            except asyncio.CancelledError:
                if silence.expired():
                    raise TimeoutError("the upstream was silent too long") from None
                raise
            finally:
                silence.stop()
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = self._fault(exc)
            UPSTREAM_FAILURES.labels(error.code or "upstream_error").inc()
            raise error from exc
        except APIError as exc:
            UPSTREAM_FAILURES.labels(exc.code or "upstream_error").inc()
            raise
        finally:
            UPSTREAM_TIME.observe(time.perf_counter() - started)

    def _limited(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` within the operator's limits (:attr:`max_tokens`, :attr:`reasoning_effort`)."""
        limited = dict(options)
        if not self.reasoning_effort:
            limited.pop("reasoning_effort", None)
        for name in ("max_tokens", "max_completion_tokens"):
            value = limited.get(name)
            if self.max_tokens and isinstance(value, int) and value > self.max_tokens:
                limited[name] = self.max_tokens
        return limited

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use (aiohttp wants a running loop for it)."""
        if self._session is None or self._session.closed:
            self._loop = asyncio.get_running_loop()
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ssl=tls_context())
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    @asynccontextmanager
    async def _post(
        self, session: aiohttp.ClientSession, data: bytes | io.BytesIO, headers: dict[str, str] | None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The upstream's answer to ``data``, after the same-origin redirects it may follow."""
        url = URL(self.endpoint)
        for _ in range(MAX_REDIRECTS + 1):
            if isinstance(data, io.BytesIO):
                data.seek(0)  # a redirect sends the same body again
            async with session.post(url, data=data, headers=headers, allow_redirects=False) as response:
                if response.status not in REDIRECTS:
                    yield response
                    return
                url = self._redirect(response)
        raise UpstreamFailed(
            f"The upstream at {self.endpoint} redirected more than {MAX_REDIRECTS} times.",
            code="upstream_redirect",
        )

    def _redirect(self, response: aiohttp.ClientResponse) -> URL:
        """Where a redirect may take the request, or the 502 saying why it goes nowhere."""
        location = response.headers.get("Location", "")
        target = redirect_target(response.url, location)
        shown = repr(location[:200]) if location else "nowhere (no Location)"
        where = f"The upstream at {self.endpoint} answered {response.status}, a redirect to {shown}"
        if target is None or not self.follow_redirects:
            logger.warning("upstream %s answered %d: a redirect to %s", self.endpoint, response.status, shown)
            advice = (
                "only same-origin redirects are followed"
                if target is None and self.follow_redirects
                else "the relay follows no redirects: set --upstream-url to the final address"
                " (or allow same-origin ones with --upstream-follow-redirects)"
            )
            raise UpstreamFailed(f"{where}; {advice}.", code="upstream_redirect")
        return target

    async def _read(
        self, response: aiohttp.ClientResponse, on_delta: OnDelta, on_event: OnEvent | None, silence: Silence
    ) -> Completion:
        reader = ChunkReader(self.endpoint)
        if response.content_type == "application/json":
            body = await _read_body(response, MAX_EVENT_BYTES, silence)
            if body is None:
                raise too_large(self.endpoint, "a non-streamed answer", MAX_EVENT_BYTES)
            text = reader.read_completion(body)
            if text:
                await on_delta(text)
            elif reader.events:
                await _relay_events(reader, on_delta, on_event)
        else:
            await self._read_events(response, reader, on_delta, on_event, silence)
            if not reader.complete:
                raise UpstreamFailed(
                    f"The upstream at {self.endpoint} ended the stream before the answer was complete.",
                    code="upstream_broken",
                )
        return Completion(
            reader.content, reader.usage, reader.finish_reason or "stop", reader.tool_calls, reader.reasoning
        )

    async def _read_events(
        self,
        response: aiohttp.ClientResponse,
        reader: ChunkReader,
        on_delta: OnDelta,
        on_event: OnEvent | None,
        silence: Silence,
    ) -> None:
        """Relay the SSE body's events to ``reader`` until ``[DONE]`` or the end of the body:
        text to ``on_delta``, reasoning and tool-call fragments to ``on_event``, each as it comes."""
        content = response.content
        readany, clock = content.readany, silence.clock
        decoder = EventDecoder(self.endpoint)
        feed, read = decoder.feed, reader.feed
        while True:
            silence.since = clock()
            chunk = await readany()
            silence.since = None  # relaying what came is no silence of the upstream's
            if not chunk:
                break
            for data in feed(chunk):
                text = read(data)
                if text:
                    await on_delta(text)
                elif reader.events:
                    await _relay_events(reader, on_delta, on_event)
                if reader.done:
                    await _drain(content)
                    return
        tail = decoder.close()
        text = read(tail) if tail is not None else ""
        if text:
            await on_delta(text)
        elif reader.events:
            await _relay_events(reader, on_delta, on_event)

    def _fault(self, exc: aiohttp.ClientError | TimeoutError) -> APIError:
        """The error for a request that failed on the network: unreachable, silent or cut off."""
        reason = unreachable(exc, self._timeout.sock_connect or self._timeout.connect)
        if reason is not None:
            logger.warning("cannot reach the upstream at %s (%s)", self.endpoint, reason)
            message = f"Cannot reach the upstream at {self.endpoint} ({reason})."
            return AgentTimeout(message) if isinstance(exc, TimeoutError) else UpstreamFailed(message)
        where = f"The upstream at {self.endpoint}"
        if isinstance(exc, TimeoutError):
            logger.warning("the upstream at %s did not answer in time", self.endpoint)
            return AgentTimeout(f"{where} did not answer in time ({type(exc).__name__}).")
        logger.warning(
            "the upstream at %s broke off the answer (%s: %s)", self.endpoint, type(exc).__name__, exc
        )
        return UpstreamFailed(
            f"{where} broke off the answer ({type(exc).__name__}: {exc}).", code="upstream_broken"
        )

    async def _refusal(self, response: aiohttp.ClientResponse, silence: Silence) -> APIError:
        """The error for a non-2xx answer, read from at most :data:`ERROR_BODY_LIMIT` bytes."""
        status = response.status
        payload = await _json_prefix(response, silence)
        detail = error_detail(payload) or response.reason or str(status)
        where = f"The upstream at {self.endpoint}"
        logger.warning("upstream %s answered %d: %s", self.endpoint, status, detail)
        if status in (401, 403):
            return UpstreamFailed(
                f"{where} rejected our API key ({status}); check --upstream-api-key.",
                code="upstream_unauthorized",
            )
        if status == 429:
            retry = {k: v for k in ("Retry-After", "Retry-After-Ms") if (v := response.headers.get(k))}
            hint = retry_hint(response.headers)
            return RateLimited(f"{where} is rate limiting us (429): {detail}{hint}", headers=retry)
        if status in REJECTED:
            param, code = _error_fields(payload)
            return UpstreamRejected(
                f"{where} rejected the request ({status}): {detail}", param=param, code=code
            )
        if status == 404:
            hint = "check --upstream-url (it usually ends in /v1) and --upstream-model"
            detail = f"{detail.rstrip('.')}; {hint}"
        return UpstreamFailed(f"{where} answered {status}: {detail}")


def redirect_target(origin: URL, location: str) -> URL | None:
    """``location`` resolved against ``origin``, if it stays on its scheme, host and port."""
    if not location:
        return None
    try:
        target = origin.join(URL(location))
        return target if target.origin() == origin.origin() else None
    except ValueError:  # not a URL, or one without an origin (``mailto:``)
        return None


def unreachable(exc: BaseException, connect_timeout: float | None) -> str | None:
    """Why the upstream could not be reached, in a few words; ``None`` if it was reached."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"no connection within {connect_timeout:g} s" if connect_timeout else "timed out connecting"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"host name {exc.host!r} not found"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "its TLS certificate is not trusted"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        return os.strerror(errno).lower() if errno else "connection failed"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid URL"
    return None


def _error_fields(payload: object) -> tuple[str | None, str | None]:
    """``param`` and ``code`` of an OpenAI-shaped error body, when they are short strings."""
    error = payload.get("error") if isinstance(payload, Mapping) else None
    if not isinstance(error, Mapping):
        return None, None
    fields = (error.get("param"), error.get("code"))
    param, code = (f if isinstance(f, str) and 0 < len(f) <= 128 else None for f in fields)
    return param, code


def retry_hint(headers: Mapping[str, str]) -> str:
    """The wait a 429 asks for, to end an error message with (``"; retry after 7 s"``), or ``""``."""
    seconds = retry_after(headers)
    if seconds is None:
        return ""
    shown = f"{seconds:.3f}".rstrip("0").removesuffix(".")  # 7, 1.5, 0.25: no float noise
    return f"; retry after {shown} s"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``Retry-After-Ms`` or else ``Retry-After`` (seconds or an HTTP date).

    ``headers`` are looked up by lower-case name (aiohttp's headers ignore case anyway).
    """
    with suppress(ValueError):
        millis = float(headers.get("retry-after-ms", "nan"))
        if math.isfinite(millis) and millis >= 0:
            return millis / 1000
    after = headers.get("retry-after", "").strip()
    if after.isascii() and after.isdigit():
        return float(after) if len(after) < 16 else None  # no "retry after inf s"
    with suppress(TypeError, ValueError, OverflowError):
        when = parsedate_to_datetime(after)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return float(max(0, math.ceil(when.timestamp() - time.time())))
    return None


async def _read_body(response: aiohttp.ClientResponse, limit: int, silence: Silence) -> bytes | None:
    """The whole body, or ``None`` as soon as it passes ``limit`` bytes."""
    pieces: list[bytes] = []
    size = 0
    content = response.content
    while True:
        silence.since = silence.clock()
        piece = await content.readany()
        silence.since = None
        if not piece:
            return b"".join(pieces)
        size += len(piece)
        if size > limit:
            return None
        pieces.append(piece)


async def _json_prefix(response: aiohttp.ClientResponse, silence: Silence) -> Any:
    body = await _read_body(response, ERROR_BODY_LIMIT, silence)
    try:
        return orjson.loads(body) if body is not None else None
    except orjson.JSONDecodeError:
        return None


def _payload(body: Mapping[str, Any]) -> bytes | io.BytesIO:
    """The request body: bytes, or past :data:`LARGE_BODY` (a megabyte tool result) a buffer
    aiohttp writes in pieces, yielding to the loop between them (it warns about large bytes)."""
    data = orjson.dumps(body)
    return data if len(data) <= LARGE_BODY else io.BytesIO(data)


async def _relay_events(reader: ChunkReader, on_delta: OnDelta, on_event: OnEvent | None) -> None:
    """Send the events a chunk held beside its text, in order, and clear them."""
    events = reader.events
    try:
        for ev in events:
            if ev.__class__ is TextDelta:
                await on_delta(ev.text)
            elif on_event is not None:
                await on_event(ev)
    finally:
        events.clear()


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read to the end of the body so the connection goes back to the pool; give up quickly."""
    if content.at_eof():  # the usual case: the body's end came with ``[DONE]``
        return
    with suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(DRAIN_GRACE):
            while await content.readany():
                pass


class Silence:
    """Ends a request whose upstream stays silent for ``limit`` seconds (``None``: never).

    The reading side sets :attr:`since` to the clock when it starts waiting for the upstream and
    back to ``None`` once it has what it waited for: a clock read per read, where aiohttp's
    ``sock_read`` cancels and makes a timer on every read. One timer per request looks at the
    wait it was armed for: if that wait is still open when it fires, it cancels the request's
    task, and :meth:`expired` (asked when that cancellation arrives) tells it was this timeout,
    as ``asyncio.timeout`` would; else it re-arms for the wait now open (or ``limit`` from now,
    while the relay is busy writing to its client).
    """

    __slots__ = ("_armed", "_fired", "_handle", "_limit", "_loop", "_task", "clock", "since")

    def __init__(self, loop: asyncio.AbstractEventLoop | None, limit: float | None) -> None:
        self._loop = loop = loop or asyncio.get_running_loop()
        self.clock = loop.time
        self._limit = limit
        self._task = asyncio.current_task(loop)
        self._fired = False
        self.since: float | None = self.clock()  # the request is sent: waiting for its head
        self._armed = self.since
        self._handle: asyncio.TimerHandle | None = None
        if limit is not None:
            self._handle = loop.call_at(self.since + limit, self._check)

    def expired(self) -> bool:
        """The request's task was cancelled by this timeout alone (then it is no longer cancelled)."""
        if not self._fired or self._task is None:
            return False
        self._fired = False
        return self._task.uncancel() == 0

    def stop(self) -> None:
        """No more watching; a cancellation of ours that never arrived is taken back."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fired and self._task is not None:
            self._fired = False
            self._task.uncancel()

    def _check(self) -> None:
        self._handle = None
        since = self.since
        if since is not None and since == self._armed:  # the same wait, open for ``limit``
            if self._task is not None and not self._task.done():
                self._fired = True
                self._task.cancel()
            return
        self._armed = since = self.clock() if since is None else since
        self._handle = self._loop.call_at(since + self._limit, self._check)  # type: ignore[operator]
