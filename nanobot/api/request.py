"""Untrusted request bytes in, a typed :class:`ChatRequest` out, or an error naming the field."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from nanobot.api.tools import parse_tool_calls, parse_tools
from nanobot.core.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from nanobot.core.events import ToolCall

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
SESSION_HEADERS = ("x-session-id", "x-openwebui-chat-id")
#: The session key agents get when the client named none (the seed contract's ``api:default``).
DEFAULT_SESSION = "api:default"

#: Sampling fields handed, as sent, to agents that take ``options`` (the ``openai`` agent relays
#: them; the upstream judges them). Other agents ignore them.
FORWARDED = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "user",
    "logit_bias",
)

#: Fields we cannot honour: refused with 400 unless they hold their harmless value.
_REFUSED: dict[str, tuple[object, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "audio": (None,),
}


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str
    images: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  #: an assistant message's client tool calls
    tool_call_id: str | None = None  #: the call a ``tool`` message answers

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's shape: ``content`` is the text, or a list of parts when there are images."""
        if self.tool_calls:
            calls = [call.to_dict() for call in self.tool_calls]
            return {"role": self.role, "content": self.content or None, "tool_calls": calls}
        if self.tool_call_id is not None:
            return {"role": self.role, "tool_call_id": self.tool_call_id, "content": self.content}
        if not self.images:
            return {"role": self.role, "content": self.content}
        parts: list[dict[str, Any]] = [{"type": "text", "text": self.content}] if self.content else []
        parts += ({"type": "image_url", "image_url": {"url": url}} for url in self.images)
        return {"role": self.role, "content": parts}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: tuple[Message, ...]
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    session_id: str | None = None
    #: The client's sampling fields (:data:`FORWARDED`) and tool options, as sent, for agents
    #: that relay them.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: The client's function tools, as sent (validated).
    tools: tuple[Mapping[str, Any], ...] = ()

    @property
    def prompt(self) -> Message:
        """The new message: the last one (the user's, or a tool result)."""
        return self.messages[-1]


async def read_body(chunks: AsyncIterable[bytes], *, limit: int, declared: int | None) -> bytes:
    """Collect a request body, refusing one over ``limit`` bytes before reading it whole."""
    check_body_size(None, limit=limit, declared=declared)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the {limit} byte limit.")
        parts.append(chunk)
    return b"".join(parts)


def check_content_encoding(headers: Mapping[str, str]) -> None:
    """Refuse a compressed body (415) before reading any of it: decompressing is unbounded work
    (199 KB of gzip inflate to 200 MB), and no OpenAI client compresses its requests."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Send the request body uncompressed: Content-Encoding {encoding[:64]!r} is not accepted.",
            param="content-encoding",
            code="unsupported_content_encoding",
        )


def check_body_size(body: bytes | None, *, limit: int, declared: int | None) -> bytes:
    """``body`` (already whole) if it and the declared size are within ``limit`` bytes."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"Request body of {declared} bytes exceeds the {limit} byte limit.")
    if body is None:
        return b""
    if len(body) > limit:
        raise PayloadTooLarge(f"Request body exceeds the {limit} byte limit.")
    return body


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one request may ask for: its messages and its images."""

    max_messages: int = 2048
    max_images: int = 64
    max_tools: int = 128

    @property
    def max_tokens(self) -> int:
        """JSON strings, and values outside strings, a large body may hold: 64 per message (at
        least 65,536), far above any real conversation."""
        return max(64 * self.max_messages, 65_536)


#: Bodies up to this size are parsed without a structure check: they cannot hold enough.
CHECKED_ABOVE = 256 * 1024


def _check_size(body: bytes, limits: Limits) -> None:
    """Refuse a large body of countless tiny values before parsing it: ``orjson.loads`` holds
    the GIL throughout (≈ 100 ms for 100,000 image parts, 1.5 s for 5.6 million ``[]``), even in
    a worker thread. Strings are counted by their quotes (a raw quote never occurs inside a JSON
    string once escapes are removed), and the values outside them by their separators."""
    if len(body) <= CHECKED_ABOVE:
        return
    plain = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    strings = plain.count(b'"') // 2
    outside = b"".join(plain.split(b'"')[0::2]) if strings <= limits.max_tokens else b""
    values = outside.count(b",") + outside.count(b"[") + outside.count(b"{")
    if strings > limits.max_tokens or values > limits.max_tokens:
        raise InvalidRequest(
            f"The request holds over {limits.max_tokens} JSON strings or values; "
            "no conversation needs that many.",
            param="messages",
            code="request_too_complex",
        )


JSON_TYPES = ("application/json",)


def is_form(content_type: str) -> bool:
    """Whether the body is a multipart form (else JSON); any other type is refused with 415."""
    kind = content_type.partition(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return True
    if kind in JSON_TYPES or (kind.startswith("application/") and kind.endswith("+json")):
        return False
    raise UnsupportedMediaType(
        f"Send the request as 'Content-Type: application/json' (or multipart/form-data), "
        f"not {content_type or 'no Content-Type'!r}.",
        param="content-type",
    )


def load_object(body: bytes, limits: Limits) -> dict[str, Any]:
    """A request body as a JSON object: checked for size first, then parsed (400 if not JSON,
    or not an object). Every dialect's parser starts here."""
    _check_size(body, limits)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return data


def parse_chat_request(body: bytes, limits: Limits = Limits(), *, relays: bool = False) -> ChatRequest:
    """Validate a Chat Completions request body. ``relays``: the agent takes the client's
    sampling fields, so a ``response_format`` other than text is the upstream's to judge."""
    data = load_object(body, limits)
    _refuse_unsupported(data, relays)
    tools, tool_options = parse_tools(data, limits.max_tools)
    options = {name: data[name] for name in FORWARDED if data.get(name) is not None}
    return ChatRequest(
        messages=_parse_messages(data.get("messages"), limits),
        model=_optional(data, "model", str),
        stream=bool(_optional(data, "stream", bool)),
        include_usage=_include_usage(data.get("stream_options")),
        session_id=check_session_id(_optional(data, "session_id", str), "session_id"),
        options={**options, **tool_options} if tool_options else options,
        tools=tools,
    )


def named_session(request: ChatRequest, headers: Mapping[str, str]) -> str | None:
    """The session the client named: the body's ``session_id``, else a session header."""
    if request.session_id is not None:
        return f"api:{request.session_id}"
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return f"api:{check_session_id(value, name)}"
    return None


def resolve_session(request: ChatRequest, headers: Mapping[str, str]) -> str:
    """The session key an agent gets: the named one, else :data:`DEFAULT_SESSION`."""
    return named_session(request, headers) or DEFAULT_SESSION


def check_session_id(value: str | None, param: str) -> str | None:
    if value is None or SESSION_ID.fullmatch(value):
        return value
    raise InvalidRequest(
        "A session id is 1-128 characters of letters, digits and . _ : @ -, starting with a letter or digit.",
        param=param,
        code="invalid_session_id",
    )


def _optional(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if value is None or isinstance(value, kind):
        return value
    raise InvalidRequest(f"'{name}' must be a {_TYPE_NAMES[kind]}.", param=name, code="invalid_type")


_TYPE_NAMES = {str: "string", bool: "boolean", dict: "object", list: "array"}


def _include_usage(options: object) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InvalidRequest(
            "'stream_options' must be an object.", param="stream_options", code="invalid_type"
        )
    return bool(_optional(options, "include_usage", bool))


def _refuse_unsupported(data: Mapping[str, Any], relays: bool) -> None:
    for name, harmless in _REFUSED.items():
        if name in data and data[name] not in harmless:
            raise InvalidRequest(
                f"'{name}' is not supported by this server.", param=name, code="unsupported_parameter"
            )
    fmt = data.get("response_format")
    if not relays and fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise InvalidRequest(
            "Only the 'text' response format is supported.",
            param="response_format",
            code="unsupported_parameter",
        )
    modalities = data.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise InvalidRequest(
            "Only the 'text' modality is supported.", param="modalities", code="unsupported_parameter"
        )


def _parse_messages(raw: object, limits: Limits) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    if len(raw) > limits.max_messages:
        raise InvalidRequest(
            f"'messages' has {len(raw)} items; at most {limits.max_messages} are accepted.",
            param="messages",
            code="too_many_messages",
        )
    messages = tuple(_parse_message(item, f"messages[{i}]") for i, item in enumerate(raw))
    last = messages[-1]
    # Too many images is reported first, whatever the role (as it always was).
    if last.role not in ("user", "tool") and len(last.images) <= limits.max_images:
        raise InvalidRequest(
            "The last message must have role 'user' (or 'tool': a tool result).",
            param=f"messages[{len(raw) - 1}].role",
        )
    check_new_message(last, f"messages[{len(raw) - 1}].content", limits)
    return messages


def check_new_message(message: Message, where: str, limits: Limits) -> None:
    """The new message (every dialect's last): not an empty user message, and at most
    ``max_images`` images; ``where`` names its content in the error."""
    if len(message.images) > limits.max_images:
        raise InvalidRequest(
            f"The new message has {len(message.images)} images; at most {limits.max_images} are accepted.",
            param=where,
            code="too_many_images",
        )
    if message.role == "user" and not message.content.strip() and not message.images:
        raise InvalidRequest("The last user message is empty.", param=where)


def _parse_message(item: object, where: str) -> Message:
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{where}' must be an object.", param=where)
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(
            f"'{where}.role' must be one of: {', '.join(sorted(ROLES))}.", param=f"{where}.role"
        )
    message = _parse_content(role, item.get("content"), where)
    if role == "assistant" and item.get("tool_calls") is not None:
        calls = parse_tool_calls(item["tool_calls"], f"{where}.tool_calls")
        return Message(role, message.content, message.images, tool_calls=calls)
    if role == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(
                f"'{where}.tool_call_id' must name the tool call this message answers.",
                param=f"{where}.tool_call_id",
            )
        return Message(role, message.content, tool_call_id=call_id)
    return message


def _parse_content(role: str, content: object, where: str) -> Message:
    if content is None and role in ("assistant", "tool"):
        return Message(role, "")
    if isinstance(content, str):
        return Message(role, content)
    if isinstance(content, list):
        return _parse_parts(role, content, f"{where}.content")
    raise InvalidRequest(
        f"'{where}.content' must be a string or an array of parts.", param=f"{where}.content"
    )


def _parse_parts(role: str, parts: list[object], where: str) -> Message:
    texts: list[str] = []
    images: list[str] = []
    for i, part in enumerate(parts):
        at = f"{where}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        kind = kind if isinstance(kind, str) else None
        if kind == "text" and isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part, dict):
            images.append(_image_url(part.get("image_url"), at))
        else:
            raise InvalidRequest(
                f"'{at}' must be a 'text' part or an 'image_url' part.", param=at, code="unsupported_content"
            )
    return Message(role, "\n".join(texts), tuple(images))


def _image_url(value: object, where: str) -> str:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"'{where}.image_url.url' must be a string.", param=f"{where}.image_url.url")
    if not url.startswith("data:"):
        raise InvalidRequest(
            "Only base64 'data:' image URLs are accepted; this server fetches nothing remote.",
            param=f"{where}.image_url.url",
            code="unsupported_image_url",
        )
    return url
