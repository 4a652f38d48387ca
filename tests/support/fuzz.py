"""A seeded raw-socket HTTP/1.1 fuzzer: realistic-but-hostile requests, every answer classified.

Exchange ``index`` of a run (one connection: one request, or a few pipelined) is built from its
own ``random.Random(f"{seed}:{index}")``, so ``exchange(seed, index).raw`` gives back its exact
bytes whatever ran before or beside it: ``python -m tests.support.fuzz SEED INDEX`` prints them.

The grammar mutates a valid chat request: methods, targets, versions, header values and syntax,
body framing (Content-Length, chunked), Content-Encoding, Content-Type (JSON, multipart with odd
boundaries), and the JSON and form bodies themselves.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gzip
import json
import logging
import random
import re
import sys
import traceback
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

T = TypeVar("T")
KEY = "sk-fuzz-key"
CRLF = b"\r\n"
#: Seconds to wait for each response; for one to a request whose framing leaves the server waiting.
PATIENCE = 3.0
STALL_PATIENCE = 0.3


def alts(text: bytes) -> tuple[bytes, ...]:
    """``b"a|b c|"`` -> ``(b"a", b"b c", b"")``: compact tables of alternatives."""
    return tuple(text.split(b"|"))


# -- the pieces -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Raw:
    """A JSON token emitted verbatim: NaN, a lone surrogate escape, a broken literal."""

    text: str


JSON = None | bool | int | float | str | Raw | list["JSON"] | dict[str, "JSON"]
TEXTS = ("hi", "hello there", "ünï cödé", "日本語 テキスト", "emoji 🎉 ok", "tab\tand\nnewline", " ")
ODD_STRINGS = ("", " ", "x" * 70_000, "\ud800", "a\udfffb", "\x00", "\u202e", "\ufeff", "data:")
ODD_TOKENS = (
    *("NaN", "Infinity", "-Infinity", "1e999", "-0", "1" + "0" * 400, "-" + "9" * 30, "0.1e-99999"),
    *('"\\ud800"', '"a\\udc00b"', '"\\ud83d\\ude00"', '"\\u0000"', '"\\uZZZZ"', '"\t"', '"\\x41"'),
    *("tru", "nul", "01", "1.", ".5", "+1", "0x10", '"', "}", "[" * 3000, "[" * 600 + "]" * 600),
)
FIELDS = (
    *("messages", "model", "stream", "stream_options", "session_id", "n", "logprobs", "top_logprobs"),
    *("tools", "functions", "tool_choice", "function_call", "response_format", "modalities", "audio"),
    *("temperature", "max_tokens", "stop", "user", "metadata", "seed", "role", "content", "type", "url"),
    *("input", "instructions", "previous_response_id", "store", "reasoning", "text", "include", "call_id"),
    *("parallel_tool_calls", "tool_calls", "tool_call_id", "function", "name", "parameters", "arguments"),
    *("system", "stop_sequences", "thinking", "tool_use_id", "input", "input_schema", "source", "top_k"),
    *("cache_control", "is_error", "output_config", "budget_tokens", "media_type", "data", "id"),
)
TOOL: JSON = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": False},
}
IMAGES = {
    "image/png": b"\x89PNG\r\n\x1a\n" + bytes(24),
    "image/jpeg": b"\xff\xd8\xff\xe0" + bytes(24),
    "image/gif": b"GIF89a" + bytes(24),
    "image/webp": b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(16),
}
ODD_IMAGE_TYPES = ("image/svg+xml", "text/html", "IMAGE/PNG", "", "image/", "image/png;", "application/pdf")
CONTENT_TYPES = alts(
    b"application/json; charset=utf-8|application/json; charset=latin-1|application/json;charset=bogus"
    b"|text/plain|text/plain; charset=utf-8|application/x-www-form-urlencoded|*/*||application/octet-stream"
    b"|application/json\x00|application/json; charset=\xff|\xff\xfe|multipart/form-data|multipart/mixed; boundary=x"
    b'|multipart/form-data; boundary=|multipart/form-data; boundary=""|MULTIPART/FORM-DATA; boundary=x'
    b"|multipart/form-data; boundary=" + b"b" * 300
)
BOUNDARIES = (
    *alts(
        b'fuzzBoundary123|--------------------x|has space|q"uote|semi;colon|\xc3\xa9|\xff\xfe|\xe6\x97\xa5|x'
    ),
    *(b"a" * n for n in (70, 256, 257, 300, 2000)),
)
AUTHORIZATIONS = (
    *alts(b"Bearer|Bearer |bearer sk-fuzz-key|Basic dXNlcjpwYXNz|Bearer \xff\xfe\xfd|Bearer sk-t\xe9st"),
    *alts(
        b"Bearer sk-t\xc3\xa9st|Bearer  sk-fuzz-key|Bearer sk-fuzz-key |Bearer\tsk-fuzz-key|\xff|Bearer \x80"
    ),
    *alts(b"Bearer \xed\xa0\x80||Bearer " + b"k" * 4000),
)
IDS = alts(b"s1||../etc|\xff\xfe|sess\xc3\xa3o|a b|-x|s1\xc3|x\x7f|\xd0\xb8\xd0\xb4|%00|mine|" + b"a" * 129)
MODEL_IDS = alts(
    b"nanobot|other|..%2F..%2Fetc|\xe5\x90\x8d|%E5%90%8D|a%00b|nanobot/extra|%ff|%|nano%62ot|\xff\xfe|%2e%2e"
    b"|nanobot%20|" + b"a" * 3000
)
ROUTES = alts(
    b"/v1/chat/completions|/v1/models|/v1/models/|/health|/openapi.json|/|/v1/x"
    b"|/v1/responses|/v1/responses/resp_x|/v1/responses/|/v1/responses/resp_x/input_items"
    b"|/v1/messages|/v1/messages/count_tokens|/v1/messages/x"
)
CHAT, MESSAGES, COUNT_TOKENS = b"/v1/chat/completions", b"/v1/messages", b"/v1/messages/count_tokens"
RESPONSES = b"/v1/responses"
ANTHROPIC_TOOL: JSON = {
    "name": "get_weather",
    "input_schema": {"type": "object"},
    "cache_control": {"type": "ephemeral"},
}
ODD_METHODS = alts(b"post|FOO|M-SEARCH|PROPFIND|CONNECT|TRACE|GE T|G\xffT|" + b"A" * 100)
ODD_VERSIONS = alts(b"HTTP/1.2|HTTP/2.0|HTTP/0.9|http/1.1|HTTP/1.1 x|HTTP/11|HTTP/1.")
TRANSFER_ENCODINGS = alts(
    b"Chunked|gzip, chunked|chunked, gzip|identity|xchunked|chunked\xff|chunked, chunked"
)
TRAILERS = alts(b"X-Trailer: 1\r\n|Content-Length: 5\r\n|X-Bad Trailer\r\n")
ENCODINGS = alts(b"bogus|gzip, deflate|identity|GZIP||gzip;q=1|\xff|br|zstd|compress")
HOSTS = alts(b"|Host:|Host: [::1|Host: h\xff|Host: a\r\nHost: b|Host: " + b"h" * 500)
#: (probability, header lines, alternatives for ``{}`` in them): each is sent with one, or not.
OPTIONAL_HEADERS: tuple[tuple[float, bytes, tuple[bytes, ...]], ...] = (
    (0.2, b"Authorization: Bearer sk-fuzz-key", ()),
    (0.3, b"Authorization: {}", AUTHORIZATIONS),  # both at once: two Authorization headers
    (0.1, b"x-api-key: {}", alts(b"sk-fuzz-key|sk-fuzz-key|wrong||\xff|Bearer sk-fuzz-key")),
    (0.1, b"anthropic-version: {}", alts(b"2023-06-01|2099-01-01|\xff")),
    (0.05, b"anthropic-beta: {}", alts(b"claude-code-20250219,interleaved-thinking-2025-05-14|x|")),
    (0.15, b"X-Session-Id: {}", IDS),
    (0.05, b"X-OpenWebUI-Chat-Id: {}", IDS),
    (0.15, b"X-Request-Id: {}", IDS),
    (0.05, b"Session-Id: {}", IDS),
    (0.2, b"Accept: {}", alts(b"text/event-stream|application/json|*/*|\xff|text/html")),
    (0.1, b"Accept-Encoding: {}", alts(b"gzip, deflate, br|*;q=0|\xff|zstd")),
    (0.05, b"Expect: {}", alts(b"100-continue|100-Continue|bogus")),
    (0.1, b"Origin: {}", alts(b"https://ok.example|https://evil.example|null|\xff")),
    (0.03, b"X-Long: {}", tuple(b"a" * n for n in (4000, 7000, 9000))),
    (0.03, b"{}", tuple(CRLF.join(b"X-Junk-%d: v" % i for i in range(n)) for n in (50, 100, 200))),
    (0.04, b"{}", alts(b"X-Fold: a\r\n b|Bad Header: x|NoColon|: empty-name|X-Space : v|X-Nul: a\x00b|X-Empty:")),
    (0.04, b"{}", alts(b"X-Ctl: a\x01b|X-High: \x80\xff|Content-Type: application/json|Content-Length: 0")),
    (0.02, b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}",
        alts(b"dGhlIHNhbXBsZSBub25jZQ==|x")),
    (0.01, b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__", ()),
)  # fmt: skip
PREFLIGHT_HEADERS: tuple[tuple[float, bytes, tuple[bytes, ...]], ...] = (
    (0.7, b"Origin: {}", alts(b"https://ok.example|https://evil.example")),
    (0.6, b"Access-Control-Request-Method: {}", alts(b"POST||\xff|FOO")),
    (0.4, b"Access-Control-Request-Headers: {}", alts(b"authorization, content-type||\xff|" + b"x" * 2000)),
)


def weighted(rng: random.Random, *choices: tuple[float, T]) -> T:
    return rng.choices([c for _, c in choices], [w for w, _ in choices])[0]


def dump(value: JSON) -> str:
    """JSON text, with :class:`Raw` tokens verbatim (lone surrogates stay: encode ``surrogatepass``)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return (
            "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{dump(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(map(dump, value)) + "]"
    return json.dumps(value, ensure_ascii=False)


def _slots(value: JSON) -> Iterator[tuple[dict[str, JSON] | list[JSON], str | int]]:
    """Every (container, key) of a JSON document: the places a mutation may hit."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield value, key  # type: ignore[misc]
        yield from _slots(item)


@functools.cache
def gzip_bomb() -> bytes:
    return gzip.compress(bytes(2 << 20), mtime=0)  # 2 MiB of zeros in 2 KiB


# -- the grammar ----------------------------------------------------------------------------------


class Grammar:
    """Builds requests; every random choice comes from ``rng``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.route = CHAT  #: where a POST usually goes; its JSON body grows from that API's seed

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def odd_value(self, depth: int = 0) -> JSON:
        rng = self.rng
        kind = rng.randrange(14 if depth < 3 else 10)
        scalars: tuple[JSON, ...] = (None, True, False, 0, -1, 2**63, 2**64, 3.5)
        if kind < len(scalars):
            return scalars[kind]
        makers: list[Callable[[], JSON]] = [
            lambda: Raw(rng.choice(ODD_TOKENS)),
            lambda: rng.choice(TEXTS + ODD_STRINGS),
            lambda: [self.odd_value(depth + 1) for _ in range(rng.randrange(3))],
            lambda: {rng.choice(FIELDS): self.odd_value(depth + 1)},
            lambda: [{"type": "text", "text": self.odd_value(depth + 1)}],
            lambda: [{"type": "image_url", "image_url": self.image_url()}],
        ]
        return makers[kind - len(scalars)]()

    def image_url(self) -> JSON:
        rng = self.rng
        kind, data = rng.choice(list(IMAGES.items()))
        declared = weighted(rng, (6, kind), (2, rng.choice(list(IMAGES))), (2, rng.choice(ODD_IMAGE_TYPES)))
        if self.chance(0.1):
            data += bytes(20_000)  # over the media limit the tests set
        b64 = base64.b64encode(data).decode()
        b64 = rng.choice(
            [b64] * 6 + ["!!" + b64, b64.rstrip("="), b64 + "==", b64[:10] + "\n " + b64[10:], "", "%00%ff"]
            + [base64.urlsafe_b64encode(b"\xfb\xff" + data).decode()]
        )  # fmt: skip
        url = rng.choice(
            [f"data:{declared};base64,{b64}"] * 6
            + [f"data:{declared},{b64}", f"data:{declared};charset=utf-8;base64,{b64}", "data:;base64,"]
            + ["http://example.invalid/x.png", "", "file:///etc/passwd", "data:"]
        )  # fmt: skip
        usual: JSON = {"url": url}
        return rng.choice([usual] * 7 + [url, {"url": self.odd_value(2)}, {"url": url, "detail": "high"}])

    def chat(self) -> dict[str, JSON]:
        """A valid chat request: the seed every JSON body grows from."""
        rng = self.rng
        content: JSON = rng.choice(TEXTS)
        if self.chance(0.25):
            content = [{"type": "text", "text": content}]
            if self.chance(0.7):
                content.append({"type": "image_url", "image_url": self.image_url()})
        messages: list[JSON] = [{"role": "user", "content": content}]
        if self.chance(0.2):
            messages[:0] = [{"role": "user", "content": "before"}, {"role": "assistant", "content": None}]
        if self.chance(0.2):
            messages.insert(0, {"role": rng.choice(("system", "developer")), "content": "be brief"})
        body: dict[str, JSON] = {"messages": messages}
        if self.chance(0.5):
            body["model"] = "nanobot"
        if self.chance(0.6):
            body["stream"] = self.chance(0.6)
        if self.chance(0.2):
            body["stream_options"] = {"include_usage": self.chance(0.5)}
        if self.chance(0.1):
            body["session_id"] = rng.choice(("s1", "s2", "a" * 129, "bad id"))
        if self.chance(0.1):
            body.update(temperature=0.2, max_tokens=5, n=1, tool_choice="auto", user="u")
        if self.chance(0.2):
            self.add_tools(body, messages)
        return body

    def responses_body(self) -> dict[str, JSON]:
        """A valid Responses request, as the openai SDK and Codex CLI send them."""
        rng = self.rng
        text: JSON = rng.choice(TEXTS)
        body: dict[str, JSON] = {"input": text}
        if self.chance(0.6):
            content: list[JSON] = [{"type": "input_text", "text": text}]
            if self.chance(0.3):
                url = self.image_url()
                content.append(
                    {"type": "input_image", "image_url": url["url"] if isinstance(url, dict) else url}
                )
            items: list[JSON] = [{"type": "message", "role": "user", "content": content}]
            if self.chance(0.3):
                items.insert(
                    0, {"role": "developer", "content": [{"type": "input_text", "text": "be brief"}]}
                )
            if self.chance(0.3):
                call = {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "get_weather"}
                items += [
                    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": None},
                    {**call, "arguments": '{"city": "Oslo"}'},
                    {
                        "type": "function_call_output",
                        "id": "fco_1",
                        "call_id": "c1",
                        "output": rng.choice(TEXTS),
                    },
                ]
            body["input"] = items
        if self.chance(0.3):
            body["tools"] = [
                {
                    "type": "function",
                    "name": "get_weather",
                    "strict": False,
                    "parameters": {"type": "object"},
                },
                {
                    "type": "namespace",
                    "name": "ns",
                    "description": "d",
                    "tools": [{"type": "function", "name": "f"}],
                },
                {"type": "web_search"},
            ]
            body["tool_choice"] = rng.choice(
                ["auto", "none", "required", {"type": "function", "name": "get_weather"}]
            )
            if self.chance(0.3):
                body["input"] = '/call get_weather {"city": "Rome"}'
        for name, value in (
            ("model", "nanobot"),
            ("stream", self.chance(0.6)),
            ("store", self.chance(0.5)),
            ("instructions", "be kind"),
            ("previous_response_id", rng.choice(("resp_x", "bad", "resp_" + "a" * 200))),
            ("reasoning", {"effort": "low", "summary": "auto"}),
            ("include", ["reasoning.encrypted_content"]),
            ("text", {"format": rng.choice(({"type": "text"}, {"type": "json_object"}))}),
            ("max_output_tokens", 5),
            ("metadata", {"k": "v"}),
            ("prompt_cache_key", "k"),
            ("client_metadata", {"a": "b"}),
            ("truncation", "auto"),
            ("parallel_tool_calls", False),
            ("background", self.chance(0.5)),
        ):
            if self.chance(0.15):
                body[name] = value
        return body

    def anthropic(self) -> dict[str, JSON]:
        """A valid Anthropic Messages request: the seed of bodies for ``/v1/messages``."""
        rng = self.rng
        text: JSON = rng.choice(TEXTS)
        content: JSON = text
        if self.chance(0.3):
            blocks: list[JSON] = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
            if self.chance(0.5):
                kind, data = rng.choice(list(IMAGES.items()))
                encoded = base64.b64encode(data + bytes(20_000 if self.chance(0.1) else 0)).decode()
                source: JSON = {"type": "base64", "media_type": kind, "data": encoded}
                blocks.append({"type": "image", "source": source})
            content = blocks
        messages: list[JSON] = [{"role": "user", "content": content}]
        body: dict[str, JSON] = {"model": "nanobot", "max_tokens": 64000, "messages": messages}
        if self.chance(0.3):
            systems: list[JSON] = ["be brief", [{"type": "text", "text": "be brief"}]]
            body["system"] = rng.choice(systems)
        if self.chance(0.1):
            messages.insert(0, {"role": "system", "content": "note"})
        if self.chance(0.6):
            body["stream"] = self.chance(0.7)
        if self.chance(0.2):
            claude: dict[str, JSON] = {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}
            body.update(claude, metadata={"user_id": "u"})
        if self.chance(0.1):
            body.update(temperature=1, top_k=5, stop_sequences=["END"])
        if self.chance(0.25):
            body["tools"] = [ANTHROPIC_TOOL]
            choices: list[JSON] = [{"type": t} for t in ("auto", "any", "none")]
            body["tool_choice"] = rng.choice(choices)
            if self.chance(0.5):
                call: JSON = {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                }
                messages.append({"role": "assistant", "content": [{"type": "text", "text": "ok"}, call]})
                result: JSON = {"type": "tool_result", "tool_use_id": "toolu_1", "content": rng.choice(TEXTS)}
                messages.append({"role": "user", "content": [result]})
            else:
                messages[-1] = {"role": "user", "content": '/call get_weather {"city": "Rome"}'}
        return body

    def add_tools(self, body: dict[str, JSON], messages: list[JSON]) -> None:
        """Client tools, and often a finished tool call with its result (or a call to make)."""
        rng = self.rng
        body["tools"] = [TOOL]
        body["tool_choice"] = rng.choice(
            ["auto", "none", "required", {"type": "function", "function": {"name": "get_weather"}}]
        )
        if self.chance(0.3):
            body["parallel_tool_calls"] = self.chance(0.5)
        if self.chance(0.5):
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            messages.append({"role": "tool", "tool_call_id": "call_1", "content": rng.choice(TEXTS)})
        elif self.chance(0.5):
            messages[-1] = {"role": "user", "content": '/call get_weather {"city": "Rome"}'}

    def mutate(self, doc: dict[str, JSON]) -> JSON:
        """Zero to three changes: a value anywhere made odd, a key removed or added."""
        rng = self.rng
        for _ in range(weighted(rng, (4, 0), (4, 1), (2, 2), (1, 3))):
            container, key = rng.choice(list(_slots(doc)) or [(doc, "messages")])
            action = rng.randrange(5)
            if action == 0 and isinstance(container, dict):
                container.pop(str(key), None)
            elif action == 1:
                doc[rng.choice(FIELDS)] = self.odd_value()
            elif isinstance(container, dict):
                container[str(key)] = self.odd_value()
            elif isinstance(container, list) and isinstance(key, int):
                container[key] = self.odd_value()
        return self.odd_value() if self.chance(0.03) else doc

    def json_body(self) -> bytes:
        seed = {CHAT: self.chat, RESPONSES: self.responses_body}.get(self.route, self.anthropic)
        text = dump(self.mutate(seed()))
        raw = text.encode("utf-8", "surrogatepass")
        if not self.chance(0.15):
            return raw
        at = self.rng.randrange(len(raw) + 1)
        bad = self.rng.choice(alts(b"\xff|\xc3\x28|\xed\xa0\x80|\xf4\x90\x80\x80|\x00|\x80"))
        return self.rng.choice((
            raw[:at], raw[:at] + bad + raw[at:], b"\xef\xbb\xbf" + raw, text.encode("utf-16", "surrogatepass"),
            raw + b" trailing", b"", b" \r\n\t ", b'{"messages": [{"role": "user", "content": "a"}], "messages": 1}',
        ))  # fmt: skip

    def junk_body(self) -> bytes:
        return self.rng.choice((
            *alts(b'|hello|message=hi&stream=true|null|"\\ud800"'), b"[" * 100_000, b"{" * 5000, bytes(range(256)),
            b"x" * 70_000, b'{"messages": [{"role": "user", "content": "' + b"w " * 40_000 + b'"}]}',
        ))  # fmt: skip

    def form(self) -> tuple[bytes, bytes]:
        """A multipart ``Content-Type`` value and body, each bent its own way."""
        rng = self.rng
        boundary = rng.choice(BOUNDARIES) if self.chance(0.5) else b"fuzzBoundary123"
        parts: list[tuple[bytes, bytes]] = []  # (part headers, data)
        fields = (
            (0.85, b"message", alts(b"hi there|| |\xc3\xbcn\xc3\xaf|\xff\xfe|" + b"x" * 20_000)),
            (0.4, b"stream", alts(b"true|false|yes|maybe||1")),
            (0.2, b"session_id", IDS),
            (0.2, b"model", alts(b"nanobot|other|")),
        )
        for p, name, values in fields:
            if self.chance(p):
                parts.append((b'Content-Disposition: form-data; name="' + name + b'"', rng.choice(values)))
        for _ in range(weighted(rng, (5, 0), (3, 1), (1, 2))):
            filename = rng.choice(
                alts(b"a.png||../../etc/passwd|a\x00b|\xff\xfe.png|\xc3\xa9.png|" + b"f" * 1000)
            )
            kind, data = rng.choice(
                [*IMAGES.items(), ("text/plain", b"plain text"), ("application/pdf", b"%PDF")]
            )
            declared = rng.choice((kind.encode(), kind.encode(), b"application/x-evil", b"", b"\xff"))
            headers = b'Content-Disposition: form-data; name="files"; filename="' + filename + b'"'
            if self.chance(0.9):
                headers += CRLF + b"Content-Type: " + declared
            parts.append((headers, data + bytes(20_000 if self.chance(0.05) else 0)))
        if self.chance(0.15):
            odd = b"X-No-Disposition: 1|Content-Disposition: form-data|NoColonHere"
            odd += b"|Content-Disposition: form-data; name*=UTF-8''%e2%82%ac|Content-Disposition: "
            parts.append((rng.choice(alts(odd)), b"data"))
        rng.shuffle(parts)
        sent = boundary if self.chance(0.9) else rng.choice(BOUNDARIES)
        eol = CRLF if self.chance(0.95) else b"\n"
        body = b"".join(b"--" + sent + eol + headers + eol + eol + data + eol for headers, data in parts)
        body += rng.choice((b"--" + sent + b"--" + eol, b"--" + sent + b"--", b"", b"--" + sent + eol))
        if self.chance(0.1):
            body = rng.choice((b"preamble" + eol, b"")) + body + rng.choice((b"epilogue", b"--x--"))
        content_type = rng.choice(
            [b"multipart/form-data; boundary=" + boundary] * 5
            + [b'multipart/form-data; boundary="' + boundary + b'"', b"MULTIPART/FORM-DATA; BOUNDARY=" + boundary]
            + [b"multipart/form-data;boundary=" + boundary + b";charset=utf-8", b"multipart/form-data"]
            + [b"multipart/form-data; boundary=" + boundary + b"; boundary=other"]
        )  # fmt: skip
        return content_type, body

    def target(self, method: bytes) -> bytes:
        rng = self.rng
        path = self.route if method == b"POST" and self.chance(0.85) else rng.choice(ROUTES)
        if path == b"/v1/models/":
            path += rng.choice(MODEL_IDS)
        if not self.chance(0.3):
            return path
        return rng.choice((
            path + b"/", b"/" + path, path.replace(b"/v1/", b"/v1/./x/../"), path.replace(b"/chat/", b"/chat%2F"),
            path.replace(b"/c", b"/%63").replace(b"/m", b"/%6d"), path + b"\xff\xfe", path.upper(), path + b"%00",
            path + rng.choice(alts(b"?stream=true|?x=%ff&y|#frag|?%|?" + b"q" * 2000)), b"*", b"",
            path + b"/" + b"a" * rng.choice((1000, 5000, 9000)), b"http://localhost:8900" + path,
            b"/v1/chat/completions/../../v1/models",
        ))  # fmt: skip

    def body_and_type(self, method: bytes) -> tuple[bytes | None, bytes | None]:
        """The body, or ``None``; its ``Content-Type``, or ``None`` for no header."""
        if not self.chance(0.1 if method in (b"GET", b"HEAD", b"OPTIONS", b"DELETE") else 0.95):
            return None, (b"application/json" if self.chance(0.1) else None)
        if self.chance(0.2):
            content_type, form = self.form()
            return form, content_type
        body = self.json_body() if self.chance(0.85) else self.junk_body()
        if self.chance(0.6):
            return body, b"application/json"
        return body, (None if self.chance(0.1) else self.rng.choice(CONTENT_TYPES))

    def encode(self, body: bytes, headers: list[bytes]) -> bytes:
        """Maybe a ``Content-Encoding``, matching the body or not."""
        if not self.chance(0.15):
            return body
        rng = self.rng
        gzipped, deflated = gzip.compress(body, mtime=0), zlib.compress(body)
        name, encoded = rng.choice(
            [(b"gzip", gzipped)] * 3 + [(b"deflate", deflated)] * 2 + [(b"deflate", deflated[2:-4])]  # raw
            + [(b"gzip", gzipped[: len(gzipped) // 2]), (b"gzip", gzip_bomb())]
            + [(rng.choice(alts(b"gzip|deflate|x-gzip")), body)] * 2  # says compressed, is not
            + [(rng.choice(ENCODINGS), body)] * 3
        )  # fmt: skip
        headers.append(b"Content-Encoding: " + name)
        return encoded

    def frame(self, body: bytes | None, headers: list[bytes]) -> tuple[bytes, bool]:
        """Framing headers for ``body``: the bytes to send, and whether they leave the server waiting."""
        rng = self.rng
        if body is None:
            length = weighted(rng, (85, b""), (10, b"0"), (5, b"10"))
            if length:
                headers.append(b"Content-Length: " + length)
            return b"", length == b"10"
        size = len(body)
        kind = weighted(
            rng, (70, "length"), (8, "chunked"), (6, "broken"), (10, "odd"), (3, "none"), (3, "both")
        )
        if kind == "length":
            headers.append(b"Content-Length: %d" % size)
        elif kind in ("chunked", "both"):
            headers.append(
                b"Transfer-Encoding: " + (b"chunked" if self.chance(0.8) else rng.choice(TRANSFER_ENCODINGS))
            )
            if kind == "both":
                headers.append(b"Content-Length: %d" % rng.choice((size, size + 5, 0)))
            return self.chunks(body), False
        elif kind == "broken":
            headers.append(b"Transfer-Encoding: chunked")
            return self.broken_chunks(body)
        elif kind == "odd":
            longer = b"%d" % (size + rng.randint(1, 100))
            value = rng.choice((
                b"%d" % max(0, size - rng.randint(1, 10)), longer, b"-1", b"9" * 20, b"1e3", b"+%d" % size,
                b" %d " % size, b"%d, %d" % (size, size), b"0x1F", b"", b"\xff", b"18446744073709551616",
            ))  # fmt: skip
            headers.append(b"Content-Length: " + value)
            if self.chance(0.3):
                headers.append(b"Content-Length: " + rng.choice((value, b"%d" % size, b"0")))
            return body, value == longer
        return body, False

    def chunks(self, body: bytes) -> bytes:
        out, at = bytearray(), 0
        while at < len(body):
            n = self.rng.randint(1, len(body) - at)
            ext = b"" if self.chance(0.9) else self.rng.choice(alts(b';a=b|;name="quoted"|;' + b"e" * 100))
            out += b"%x%s\r\n%s\r\n" % (n, ext, body[at : at + n])
            at += n
        trailer = self.rng.choice(TRAILERS) if self.chance(0.1) else b""
        return bytes(out) + b"0\r\n" + trailer + b"\r\n"

    def broken_chunks(self, body: bytes) -> tuple[bytes, bool]:
        n = len(body)
        return self.rng.choice(
            [
                (b"zz\r\n" + body + b"\r\n0\r\n\r\n", False),
                (b"%x\r\n%s\r\n0\r\n\r\n" % (n + 50, body), True),  # a chunk longer than its data
                (b"%x\r\n%s\r\n0\r\n\r\n" % (max(0, n - 3), body), False),
                (b"%x\r\n%s\r\n" % (n, body), True),  # no last chunk
                (b"-5\r\n" + body + b"\r\n0\r\n\r\n", False),
                (b"f" * 20 + b"\r\n" + body + b"\r\n0\r\n\r\n", True),
                (b"%x\n%s\n0\n\n" % (n, body), False),
                (b"%x;\x00\r\n%s\r\n0\r\n\r\n" % (n, body), False),
                (b"%x \r\n%s\r\n0\r\n\r\n" % (n, body), False),
                (b"0x%x\r\n%s\r\n0\r\n\r\n" % (n, body), False),
                (b"%x\r\n%s0\r\n\r\n" % (n, body), False),  # no CRLF after the data
                (b"%x\r\n%s\r\n0\r\nX-Bad Trailer\r\n\r\n" % (n, body), False),
            ]
        )

    def request(self, last: bool) -> tuple[bytes, bool]:
        """One request's bytes, and whether its framing leaves the server waiting for more."""
        rng = self.rng
        self.route = weighted(rng, (45, CHAT), (25, RESPONSES), (24, MESSAGES), (6, COUNT_TOKENS))
        method = weighted(
            rng, (62, b"POST"), (16, b"GET"), (6, b"OPTIONS"), (4, b"HEAD"), (3, b"PUT"),
            (3, rng.choice((b"DELETE", b"PATCH"))), (6, rng.choice(ODD_METHODS)),
        )  # fmt: skip
        version = weighted(rng, (85, b"HTTP/1.1"), (9, b"HTTP/1.0"), (6, rng.choice(ODD_VERSIONS)))
        body, content_type = self.body_and_type(method)
        headers = [b"Host: localhost:8900" if self.chance(0.9) else rng.choice(HOSTS)]
        if content_type is not None:
            headers.append(b"Content-Type: " + content_type)
        payload, stalls = self.frame(body if body is None else self.encode(body, headers), headers)
        for p, line, values in OPTIONAL_HEADERS + (PREFLIGHT_HEADERS if method == b"OPTIONS" else ()):
            if self.chance(p):
                headers.append(line.replace(b"{}", rng.choice(values)) if values else line)
        connection = weighted(rng, (6, b"close"), (3, b""), (1, b"keep-alive")) if last else b"keep-alive"
        if connection:
            headers.append(b"Connection: " + connection)
        if self.chance(0.3):
            rng.shuffle(headers)
        eol = CRLF if self.chance(0.97) else b"\n"
        head = [method + b" " + self.target(method) + b" " + version, *filter(None, headers)]
        tunnel = method == b"CONNECT" or any(line.startswith(b"Connection: Upgrade") for line in headers)
        return eol.join(head) + eol + eol + payload, stalls or tunnel  # a tunnel may wait for more


# -- exchanges: what one connection sends ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    """One connection: one request or a few pipelined, then maybe a half-close."""

    seed: int
    index: int
    requests: tuple[bytes, ...]
    stalls: bool  #: a request's framing, Upgrade or CONNECT may leave the server waiting for more
    half_close: bool
    read_bodies: bool  #: read the last response to its end (else hang up after its head)

    @property
    def raw(self) -> bytes:
        return b"".join(self.requests)

    def describe(self, limit: int = 1200) -> str:
        raw = self.raw
        shown = repr(raw[:limit]) + (f" ... ({len(raw)} bytes in all)" if len(raw) > limit else "")
        return f"seed={self.seed} index={self.index}{' then EOF' if self.half_close else ''}: {shown}"


def exchange(seed: int, index: int) -> Exchange:
    """Exchange ``index`` of the run seeded ``seed``: the same bytes every time."""
    rng = random.Random(f"{seed}:{index}")
    grammar = Grammar(rng)
    count = 1 if grammar.chance(0.9) else rng.randint(2, 3)
    built = [grammar.request(last=i == count - 1) for i in range(count)]
    stalls = any(stalls for _, stalls in built)
    half_close = stalls and grammar.chance(0.5)
    return Exchange(seed, index, tuple(raw for raw, _ in built), stalls, half_close, grammar.chance(0.5))


Outcome = int | Literal["closed", "timeout", "garbled"]


async def _response(reader: asyncio.StreamReader, read_body: bool, is_head: bool) -> int:
    """The status of the next final response (1xx skipped); its body read when ``read_body``."""
    while True:
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        if not 100 <= status < 200 or status == 101:
            break
    if not read_body or is_head or status in (101, 204, 304):
        return status
    fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    if "chunked" in fields.get("transfer-encoding", ""):
        while size := int((await reader.readuntil(CRLF)).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(CRLF)
    elif "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    else:
        await reader.read()
    return status


async def run_exchange(host: str, port: int, ex: Exchange) -> list[Outcome]:
    """Send ``ex`` on a fresh connection: the outcome of each response, in order."""
    outcomes: list[Outcome] = []
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        writer.write(ex.raw)
        if ex.half_close:
            writer.write_eof()
        with contextlib.suppress(ConnectionError):  # a server may answer (413) and close early
            await writer.drain()
        for i, request in enumerate(ex.requests):
            outcome: Outcome = "closed"
            try:
                async with asyncio.timeout(STALL_PATIENCE if ex.stalls else PATIENCE):
                    read_body = i < len(ex.requests) - 1 or ex.read_bodies
                    outcome = await _response(reader, read_body, request.startswith(b"HEAD "))
            except TimeoutError:
                outcome = "timeout"
            except (asyncio.IncompleteReadError, ConnectionError):
                outcome = "closed"
            except (ValueError, IndexError, asyncio.LimitOverrunError):
                outcome = "garbled"
            outcomes.append(outcome)
            if not isinstance(outcome, int) or outcome == 101:
                break  # nothing more to read, or no more HTTP
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return outcomes


# -- the server's ERROR records -------------------------------------------------------------------


@dataclass
class ErrorGroup:
    """Server ERROR records of one kind: logger, message, exception type, where it was raised."""

    key: str
    sample: str  #: the first record: message, last frames, exception
    count: int = 0
    suspects: list[int] = field(default_factory=list)  #: exchanges open or just closed at the time
    reproducer: Exchange | None = None  #: one that logs it when sent alone


class ErrorLog(logging.Handler):
    """Collects ERROR records of the server's loggers, grouped, while in its ``with`` block.

    The loggers stop propagating meanwhile: a fuzz run would fill the test's log with thousands
    of tracebacks and warnings; the groups report the errors instead.
    """

    LOGGERS = ("nanobot", "aiohttp", "uvicorn", "asyncio", "python_multipart")

    def __init__(self, suspects: Callable[[], Sequence[int]] = tuple) -> None:
        super().__init__(logging.ERROR)
        self.suspects = suspects
        self.groups: dict[str, ErrorGroup] = {}
        self._propagate: dict[str, bool] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key, sample = describe_record(record)
        group = self.groups.setdefault(key, ErrorGroup(key, sample))
        group.count += 1
        if len(group.suspects) < 64:
            group.suspects += [i for i in self.suspects() if i not in group.suspects]

    def __enter__(self) -> ErrorLog:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self._propagate[name], logger.propagate = logger.propagate, False
            logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.propagate = self._propagate[name]


def describe_record(record: logging.LogRecord) -> tuple[str, str]:
    """A grouping key (where and what was raised, numbers blurred) and a readable sample."""
    message = (record.getMessage().splitlines() or [""])[0][:200]
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
        return f"{record.name}: {message}", message
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename.split('site-packages/')[-1]}:{frames[-1].lineno}" if frames else "?"
    if isinstance(error, UnicodeEncodeError | UnicodeDecodeError):
        what = error.reason  # not the character, which varies
    else:  # aiohttp's parser errors read "400, message:\n  Invalid header token:\n ..."
        text = [line.strip() for line in str(error).splitlines() if line.strip() and "message:" not in line]
        what = re.sub(r"\d+", "N", text[0][:60]) if text else ""  # one group for "line 12" and "line 13"
    tail = "".join(traceback.format_list(frames[-3:])) + f"{type(error).__name__}: {error}"[:400]
    return f"{record.name}: {message} | {type(error).__name__} at {where}: {what}", f"{message}\n{tail}"


# -- a run ----------------------------------------------------------------------------------------


@dataclass
class Report:
    seed: int
    requests: int = 0
    exchanges: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[Exchange, int]] = field(default_factory=list)  #: 5xx answers
    surprises: list[Exchange] = field(default_factory=list)  #: timed out, yet framed completely
    errors: list[ErrorGroup] = field(default_factory=list)

    def add(self, ex: Exchange, outcomes: list[Outcome]) -> None:
        self.exchanges += 1
        self.requests += len(ex.requests)
        self.outcomes.update(map(str, outcomes))
        self.failures += [(ex, o) for o in outcomes if isinstance(o, int) and o >= 500]
        if "timeout" in outcomes and not ex.stalls:
            self.surprises.append(ex)

    def summary(self, shown: int = 5) -> str:
        records = sum(g.count for g in self.errors)
        lines = [
            f"seed {self.seed}: {self.requests} requests on {self.exchanges} connections: "
            f"{len(self.failures)} answered 5xx, {records} server ERROR records in {len(self.errors)} groups",
            "outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items())),
            *(f"  {status} from {ex.describe()}" for ex, status in self.failures[:shown]),
            *(f"  unexpected timeout: {ex.describe(300)}" for ex in self.surprises[:shown]),
        ]
        for group in sorted(self.errors, key=lambda g: -g.count):
            lines.append(f"ERROR x{group.count}: {group.key}\n    " + group.sample.replace("\n", "\n    "))
            lines.append(f"  reproducer: {group.reproducer.describe() if group.reproducer else 'none alone'}")
        lines.append("print any request again: python -m tests.support.fuzz SEED INDEX")
        return "\n".join(lines)


async def fuzz(url: str, *, seed: int, requests: int, concurrency: int = 8) -> Report:
    """Send about ``requests`` fuzzed requests to the server at ``url`` (``http://host:port``)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    report = Report(seed)
    open_now: dict[int, None] = {}  # insertion-ordered
    recent: deque[int] = deque(maxlen=concurrency)  # a record may come just after a hang-up
    indices = iter(range(sys.maxsize))

    async def worker() -> None:
        while report.requests < requests:
            ex = exchange(seed, next(indices))
            open_now[ex.index] = None
            try:
                report.add(ex, await run_exchange(host, int(port), ex))
            finally:
                del open_now[ex.index]
                recent.append(ex.index)

    with ErrorLog(lambda: [*open_now, *reversed(recent)]) as log:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.sleep(0.05)  # records of the last connections' teardown
    report.errors = list(log.groups.values())
    await _find_reproducers(host, int(port), seed, report.errors)
    return report


async def _find_reproducers(
    host: str, port: int, seed: int, groups: list[ErrorGroup], budget: int = 200
) -> None:
    """Replay suspects one at a time, each alone on the server, until every group has one."""
    tried: set[int] = set()
    for group in groups:
        for index in group.suspects:
            if group.reproducer is not None or budget == 0:
                break
            if index in tried:
                continue
            tried.add(index)
            budget -= 1
            ex = exchange(seed, index)
            with ErrorLog() as log:
                await run_exchange(host, port, ex)
                await asyncio.sleep(0.005)
            for other in groups:
                if other.reproducer is None and other.key in log.groups:
                    other.reproducer = ex


if __name__ == "__main__":
    print(repr(exchange(int(sys.argv[1]), int(sys.argv[2])).raw))
