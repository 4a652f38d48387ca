"""An Anthropic Messages request body in, the neutral (chat-shaped) :class:`ChatRequest` out.

The translation (what an ``openai`` relay sends upstream):

- ``system`` (a string or text blocks) and any ``role: "system"`` entry of ``messages`` become
  one leading system message (many upstream chat templates refuse a system message later on);
- ``text`` blocks are text; ``image`` blocks with a base64 source are ``data:`` URL images;
  ``document`` blocks with a text source are text (a PDF becomes a one-line note);
- an assistant's ``tool_use`` blocks are its ``tool_calls`` (ids kept as sent); a user's
  ``tool_result`` blocks are ``tool`` messages, before the rest of that user message;
- ``thinking``/``redacted_thinking`` blocks and server-tool blocks are dropped;
- Claude Code's ``x-anthropic-billing-header:`` system block is dropped (it would defeat the
  upstream's prefix cache);
- ``cache_control`` is ignored wherever it is, as are ``metadata``, ``output_config`` (but its
  ``effort``), ``context_management``, ``container``, ``service_tier`` and other fields;
- ``tools`` are chat function tools; server tools (a ``type`` other than ``custom``) are dropped;
- ``max_tokens``, ``stop_sequences``, ``temperature``, ``top_p``, ``top_k``, ``tool_choice`` and
  ``thinking`` become the options a relaying agent sends upstream (``max_tokens``, ``stop``,
  ``temperature``, ``top_p``, ``top_k``, ``tool_choice``, ``parallel_tool_calls``,
  ``reasoning_effort``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from nanobot.api.request import ChatRequest, Limits, Message, check_new_message, load_object
from nanobot.core.errors import InvalidRequest
from nanobot.core.events import ToolCall


def parse_messages_request(raw: bytes, limits: Limits, *, max_tokens_required: bool = True) -> ChatRequest:
    """Validate a Messages body (``max_tokens_required`` is off for ``count_tokens``)."""
    data = load_object(raw, limits)
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string.", param="model")
    options = _options(data, max_tokens_required)
    tools, names = _tools(data.get("tools"), limits.max_tools)
    if tools:
        options.update(_tool_choice(data.get("tool_choice"), names))
    messages = _messages(data.get("messages"), _system_text(data.get("system"), "system"), limits)
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    return ChatRequest(messages=messages, model=model, stream=bool(stream), options=options, tools=tools)


# -- options ------------------------------------------------------------------------------------


def _options(data: Mapping[str, Any], max_tokens_required: bool) -> dict[str, Any]:
    options: dict[str, Any] = {}
    max_tokens = data.get("max_tokens")
    if max_tokens is None and max_tokens_required:
        raise InvalidRequest("max_tokens: Field required", param="max_tokens")
    if max_tokens is not None:
        if not _is_int(max_tokens) or max_tokens < 1:
            raise InvalidRequest("'max_tokens' must be a positive integer.", param="max_tokens")
        options["max_tokens"] = max_tokens
    for name in ("temperature", "top_p", "top_k"):
        value = data.get(name)
        if value is None:
            continue
        if not _is_number(value):
            raise InvalidRequest(f"'{name}' must be a number.", param=name)
        options[name] = value
    stops = data.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidRequest("'stop_sequences' must be an array of strings.", param="stop_sequences")
        if stops:
            options["stop"] = stops
    effort = _effort(data.get("thinking"), data.get("output_config"))
    if effort is not None:
        options["reasoning_effort"] = effort
    for name in ("metadata", "output_config", "context_management"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise InvalidRequest(f"'{name}' must be an object.", param=name)
    return options


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


#: ``output_config.effort`` as a chat ``reasoning_effort``.
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high", "xhigh": "high"}


def _effort(thinking: object, output_config: object) -> str | None:
    """``thinking`` as a ``reasoning_effort``: an ``enabled`` budget by size, ``adaptive`` by
    ``output_config.effort``; ``disabled`` (or no thinking) sends none."""
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in ("enabled", "adaptive", "disabled"):
        raise InvalidRequest(
            "'thinking.type' must be 'enabled', 'adaptive' or 'disabled'.", param="thinking.type"
        )
    assert isinstance(thinking, dict)
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise InvalidRequest(
                "'thinking.budget_tokens' must be an integer.", param="thinking.budget_tokens"
            )
        return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    if kind == "adaptive" and isinstance(output_config, dict):
        return _EFFORTS.get(str(output_config.get("effort")))
    return None


# -- tools --------------------------------------------------------------------------------------


def _tools(raw: object, max_tools: int) -> tuple[tuple[Mapping[str, Any], ...], set[str]]:
    """Custom tools as chat function tools; server tools (web search, bash, ...) are dropped."""
    if raw is None:
        return (), set()
    if not isinstance(raw, list):
        raise InvalidRequest("'tools' must be an array.", param="tools")
    if len(raw) > max_tools:
        raise InvalidRequest(
            f"'tools' has {len(raw)} tools; at most {max_tools} are accepted.",
            param="tools",
            code="too_many_tools",
        )
    tools: list[Mapping[str, Any]] = []
    names: set[str] = set()
    for i, tool in enumerate(raw):
        where = f"tools.{i}"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"'{where}' must be an object.", param=where)
        if tool.get("type") not in (None, "custom"):
            continue
        name, schema, description = tool.get("name"), tool.get("input_schema"), tool.get("description")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"'{where}.name' must be a non-empty string.", param=f"{where}.name")
        if name in names:
            raise InvalidRequest(f"Tool names must be unique; '{name}' is repeated.", param=f"{where}.name")
        if not isinstance(schema, dict):
            raise InvalidRequest(f"'{where}.input_schema' must be an object.", param=f"{where}.input_schema")
        if description is not None and not isinstance(description, str):
            raise InvalidRequest(f"'{where}.description' must be a string.", param=f"{where}.description")
        names.add(name)
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if description:
            function["description"] = description
        tools.append({"type": "function", "function": function})
    return tuple(tools), names


def _tool_choice(choice: object, names: set[str]) -> dict[str, Any]:
    """``tool_choice`` as chat's (``any`` is ``required``); ``disable_parallel_tool_use`` as
    ``parallel_tool_calls``."""
    if choice is None:
        return {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or kind not in ("auto", "any", "tool", "none"):
        raise InvalidRequest(
            "'tool_choice.type' must be 'auto', 'any', 'tool' or 'none'.", param="tool_choice.type"
        )
    options: dict[str, Any] = {}
    if kind == "tool":
        name = choice.get("name")
        if name not in names:
            raise InvalidRequest(
                f"'tool_choice.name' ({name!r}) names no tool of 'tools'.", param="tool_choice.name"
            )
        options["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        options["tool_choice"] = {"any": "required"}.get(str(kind), kind)
    parallel = choice.get("disable_parallel_tool_use")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise InvalidRequest(
                "'tool_choice.disable_parallel_tool_use' must be a boolean.",
                param="tool_choice.disable_parallel_tool_use",
            )
        if kind != "none":
            options["parallel_tool_calls"] = not parallel
    return options


# -- messages -----------------------------------------------------------------------------------


#: How Claude Code's attribution line starts: a text block it puts first in ``system``.
BILLING_HEADER = "x-anthropic-billing-header:"


def _system_text(system: object, where: str) -> str:
    """``system``: a string or an array of text blocks (``cache_control`` ignored). Claude
    Code's attribution line (:data:`BILLING_HEADER`) is dropped: it means nothing to a model, and
    it changes with the conversation, so kept first it would defeat an upstream's prefix cache."""
    if system is None:
        return ""
    if isinstance(system, str):
        if system.startswith(BILLING_HEADER):
            system = system.partition("\n")[2].lstrip("\n")
        return system
    if isinstance(system, list):
        texts = []
        for i, block in enumerate(system):
            if not isinstance(block, dict) or not isinstance(block.get("text"), str):
                raise InvalidRequest(f"'{where}.{i}' must be a text block.", param=f"{where}.{i}")
            if not block["text"].startswith(BILLING_HEADER):
                texts.append(block["text"])
        return "\n\n".join(texts)
    raise InvalidRequest(f"'{where}' must be a string or an array of text blocks.", param=where)


def _messages(raw: object, system: str, limits: Limits) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    if len(raw) > limits.max_messages:
        raise InvalidRequest(
            f"'messages' has {len(raw)} items; at most {limits.max_messages} are accepted.",
            param="messages",
            code="too_many_messages",
        )
    systems = [system] if system else []
    out: list[Message] = []
    for i, item in enumerate(raw):
        where = f"messages.{i}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{where}' must be an object.", param=where)
        role, content = item.get("role"), item.get("content")
        if role == "system":
            text = _system_text(content, f"{where}.content")
            if text:
                systems.append(text)
        elif role == "user":
            out.extend(_user(content, f"{where}.content"))
        elif role == "assistant":
            out.extend(_assistant(content, f"{where}.content"))
        else:
            raise InvalidRequest(f"'{where}.role' must be 'user' or 'assistant'.", param=f"{where}.role")
    while out and out[-1].role == "assistant":
        out.pop()  # a prefill: the upstream answers the user message before it
    if not out:
        raise InvalidRequest("'messages' holds no user message.", param="messages")
    check_new_message(out[-1], f"messages.{len(raw) - 1}.content", limits)
    head = (Message("system", "\n\n".join(systems)),) if systems else ()
    return head + tuple(out)


def _blocks(content: object, where: str) -> list[tuple[str, dict[str, Any]]]:
    """A message's content as ``(where, block)`` pairs; a string is one text block."""
    if isinstance(content, str):
        return [(where, {"type": "text", "text": content})]
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}' must be a string or an array of content blocks.", param=where)
    blocks = []
    for i, block in enumerate(content):
        at = f"{where}.{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"'{at}' must be a content block with a 'type'.", param=at)
        blocks.append((at, block))
    return blocks


def _user(content: object, where: str) -> list[Message]:
    """Tool results first (as ``tool`` messages), then the user's text and images, if any."""
    results: list[Message] = []
    texts: list[str] = []
    images: list[str] = []
    for at, block in _blocks(content, where):
        kind = block["type"]
        if kind == "tool_result":
            results.append(_tool_result(block, at))
        elif kind == "image":
            images.append(_image(block, at))
        else:
            text = _text(block, at)
            if text is not None:
                texts.append(text)
    if texts or images or not results:
        results.append(Message("user", "\n".join(texts), tuple(images)))
    return results


def _assistant(content: object, where: str) -> list[Message]:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for at, block in _blocks(content, where):
        if block["type"] == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequest(f"'{at}.id' must be a non-empty string.", param=f"{at}.id")
            if not isinstance(name, str) or not name:
                raise InvalidRequest(f"'{at}.name' must be a non-empty string.", param=f"{at}.name")
            if not isinstance(arguments, dict):
                raise InvalidRequest(f"'{at}.input' must be an object.", param=f"{at}.input")
            calls.append(ToolCall(call_id, name, orjson.dumps(arguments).decode()))
        elif block["type"] in ("text", "document"):
            text = _text(block, at)
            if text is not None:
                texts.append(text)
        # thinking, redacted_thinking and server-tool blocks are not sent upstream
    if not texts and not calls:
        return []
    return [Message("assistant", "\n".join(texts), tool_calls=tuple(calls))]


def _text(block: dict[str, Any], at: str) -> str | None:
    """A text block's text; a document as text (or a note for a PDF); ``None`` for a block we
    do not send upstream (thinking, server tools, search results, ...)."""
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise InvalidRequest(f"'{at}.text' must be a string.", param=f"{at}.text")
        return text
    if kind == "document":
        return _document(block, at)
    return None


def _document(block: dict[str, Any], at: str) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest(f"'{at}.source' must be an object.", param=f"{at}.source")
    title = block.get("title")
    head = f"[document: {title}]\n" if isinstance(title, str) and title else ""
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        return head + str(source["data"])
    if source.get("type") == "content" and isinstance(source.get("content"), list | str):
        return head + "\n".join(m.content for m in _user(source["content"], f"{at}.source.content"))
    kind = source.get("media_type") or source.get("type")
    return f"[a {kind} document was attached; this server passes on only text]"


def _image(block: dict[str, Any], at: str) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest(f"'{at}.source' must be an object.", param=f"{at}.source")
    if source.get("type") != "base64":
        raise InvalidRequest(
            "Only base64 image sources are accepted; this server fetches nothing remote.",
            param=f"{at}.source.type",
            code="unsupported_image_url",
        )
    media_type, data = source.get("media_type"), source.get("data")
    if not isinstance(media_type, str) or not isinstance(data, str) or not data:
        raise InvalidRequest(f"'{at}.source' needs a 'media_type' and base64 'data'.", param=f"{at}.source")
    return f"data:{media_type};base64,{data}"


def _tool_result(block: dict[str, Any], at: str) -> Message:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"'{at}.tool_use_id' must be a non-empty string.", param=f"{at}.tool_use_id")
    content = block.get("content")
    if content is None:
        text = ""
    else:
        parts = []
        for part_at, part in _blocks(content, f"{at}.content"):
            if part["type"] == "image":
                _image(part, part_at)
                parts.append("[image]")
            else:
                piece = _text(part, part_at)
                if piece is not None:
                    parts.append(piece)
        text = "\n".join(parts)
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return Message("tool", text, tool_call_id=call_id)


# -- counting -----------------------------------------------------------------------------------

#: What one image is counted as: about Anthropic's count for an image of its largest size.
IMAGE_TOKENS = 1600


def estimate_tokens(request: ChatRequest) -> int:
    """An estimate of a request's input tokens: a token per 4 characters of its text (system,
    messages, tool calls and results, and the tools as JSON), plus :data:`IMAGE_TOKENS` an image."""
    chars = images = 0
    for message in request.messages:
        chars += len(message.content)
        images += len(message.images)
        for call in message.tool_calls:
            chars += len(call.name) + len(call.arguments)
    if request.tools:
        chars += len(orjson.dumps(request.tools))
    return math.ceil(chars / 4) + images * IMAGE_TOKENS
