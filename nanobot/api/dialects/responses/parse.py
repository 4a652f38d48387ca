"""A Responses request body in, the neutral request out (chat-shaped messages, tools, options).

``input`` items become messages: ``message`` items (``input_text``, ``output_text``,
``input_image``, text ``input_file`` parts), ``function_call`` items the assistant's tool calls,
``function_call_output`` items tool results; ``reasoning`` items (and other items we never
produce) are dropped. ``instructions`` is a system message put first. Function tools become
Chat Completions function tools; a namespace's functions are offered as ``NAMESPACE__NAME``
(see :func:`qualify`) and their calls mapped back; hosted tools (``web_search`` ...) are dropped
and logged, never refused. Sampling fields go into ``options`` under their Chat Completions
names, for agents that relay them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nanobot.api.request import ChatRequest, Limits, Message, check_new_message, load_object
from nanobot.api.tools import TOOL_NAME, parse_tools
from nanobot.core.errors import InvalidRequest
from nanobot.core.events import ToolCall

if TYPE_CHECKING:
    from nanobot.api.dialects.responses.encode import ResponsesStream

logger = logging.getLogger("nanobot.api")

RESPONSE_ID = re.compile(r"resp_[A-Za-z0-9_-]{1,128}")
ROLES = frozenset({"user", "assistant", "system", "developer"})
#: Request fields we cannot honour: refused with 400 unless they hold their harmless value.
_REFUSED: dict[str, tuple[object, ...]] = {
    "background": (None, False),
    "conversation": (None,),
    "prompt": (None,),
    "top_logprobs": (None, 0),
}
#: Input items we never produce and cannot relay: dropped (a client sends back what it got).
_DROPPED_ITEMS = frozenset(
    {
        "reasoning",
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "custom_tool_call",
        "custom_tool_call_output",
        "compaction",
        "tool_search_call",
        "tool_search_output",
    }
)
#: ``text/*`` and these file types are inlined as text; other files are refused.
_TEXT_FILES = frozenset({"application/json", "application/xml", "application/x-yaml", "application/yaml"})
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)", re.DOTALL)
_dropped_logged: set[str] = set()
DEFAULT_LIMITS = Limits()


class TurnState:
    """What one turn of a request learns as it runs: its encoder, its final response."""

    __slots__ = ("encoder", "response")

    def __init__(self) -> None:
        self.encoder: ResponsesStream | None = None
        self.response: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ResponsesRequest(ChatRequest):
    """The neutral request, with what the Responses dialect keeps for its reply and state."""

    instructions: str | None = None
    #: The conversation before this request's input (from ``previous_response_id``).
    history: tuple[Message, ...] = ()
    #: This request's ``input``, as messages.
    input: tuple[Message, ...] = ()
    previous_response_id: str | None = None
    store: bool = True
    #: The request's settings, echoed in the ``response`` object.
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: A qualified function name the agent sees -> (namespace, name) the client knows.
    names: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)
    #: Reasoning is shown as summary parts (the client asked ``reasoning.summary``).
    summary: bool = False
    turn: TurnState = field(default_factory=TurnState, compare=False, repr=False)


def parse_responses_request(
    body: bytes, limits: Limits = DEFAULT_LIMITS, *, relays: bool = False
) -> ResponsesRequest:
    """Validate a ``POST /v1/responses`` body (400 naming the field)."""
    data = load_object(body, limits)
    for name, harmless in _REFUSED.items():
        if name in data and data[name] not in harmless:
            raise InvalidRequest(
                f"'{name}' is not supported by this server.", param=name, code="unsupported_parameter"
            )
    instructions = _optional(data, "instructions", str)
    previous = _optional(data, "previous_response_id", str)
    if previous is not None and not RESPONSE_ID.fullmatch(previous):
        raise InvalidRequest(
            "'previous_response_id' must be a response id ('resp_…').", param="previous_response_id"
        )
    store = _optional(data, "store", bool)
    store = True if store is None else store
    tools, echoed_tools, names = _tools(data.get("tools"), limits.max_tools)
    chat_tools, tool_options = parse_tools({"tools": tools, **_tool_options(data, names)}, limits.max_tools)
    items = _input(data.get("input"), limits)
    reasoning = _object(data, "reasoning")
    text = _object(data, "text")
    options = _options(data, reasoning, text, relays)
    options.update(tool_options)
    settings = {
        "instructions": instructions,
        "max_output_tokens": _optional(data, "max_output_tokens", int),
        "max_tool_calls": data.get("max_tool_calls") if isinstance(data.get("max_tool_calls"), int) else None,
        "metadata": _optional(data, "metadata", dict) or {},
        "parallel_tool_calls": data.get("parallel_tool_calls", True) is not False,
        "previous_response_id": previous,
        "prompt_cache_key": _optional(data, "prompt_cache_key", str),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "default",
        "store": store,
        "temperature": _number(data, "temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": data.get("tool_choice") if data.get("tool_choice") is not None else "auto",
        "tools": echoed_tools,
        "top_p": _number(data, "top_p", 1.0),
        "truncation": data.get("truncation")
        if data.get("truncation") in ("auto", "disabled")
        else "disabled",
        "user": _optional(data, "user", str),
    }
    head = (Message("system", instructions),) if instructions else ()
    return ResponsesRequest(
        messages=(*head, *items),
        model=_optional(data, "model", str),
        stream=bool(_optional(data, "stream", bool)),
        include_usage=True,
        options=options,
        tools=chat_tools,
        instructions=instructions,
        input=items,
        previous_response_id=previous,
        store=store,
        settings=settings,
        names=names,
        summary=reasoning.get("summary") in ("auto", "concise", "detailed"),
    )


# -- fields ----------------------------------------------------------------------------------


_TYPE_NAMES = {str: "a string", bool: "a boolean", dict: "an object", list: "an array", int: "an integer"}


def _optional(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if value is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    raise InvalidRequest(f"'{name}' must be {_TYPE_NAMES[kind]}.", param=name, code="invalid_type")


def _object(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value: dict[str, Any] = _optional(data, name, dict) or {}
    return value


def _number(data: Mapping[str, Any], name: str, default: float) -> Any:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise InvalidRequest(f"'{name}' must be a number.", param=name, code="invalid_type")


def _options(
    data: Mapping[str, Any], reasoning: Mapping[str, Any], text: Mapping[str, Any], relays: bool
) -> dict[str, Any]:
    """The sampling fields, under the names Chat Completions gives them (what a relay sends)."""
    options: dict[str, Any] = {}
    for name in ("temperature", "top_p"):
        if data.get(name) is not None:
            options[name] = _number(data, name, 0.0)
    limit = _optional(data, "max_output_tokens", int)
    if limit is not None:
        if limit < 1:
            raise InvalidRequest("'max_output_tokens' must be at least 1.", param="max_output_tokens")
        options["max_tokens"] = limit
    user = _optional(data, "user", str)
    if user is not None:
        options["user"] = user
    effort = reasoning.get("effort")
    if effort is not None:
        if not isinstance(effort, str):
            raise InvalidRequest("'reasoning.effort' must be a string.", param="reasoning.effort")
        options["reasoning_effort"] = effort
    fmt = text.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
            raise InvalidRequest("'text.format' must be an object with a 'type'.", param="text.format")
        if fmt["type"] != "text":
            if not relays:
                raise InvalidRequest(
                    "Only the 'text' format is supported.", param="text.format", code="unsupported_parameter"
                )
            options["response_format"] = _response_format(fmt)
    return options


def _response_format(fmt: Mapping[str, Any]) -> dict[str, Any]:
    """``text.format`` as Chat Completions' ``response_format``."""
    if fmt["type"] != "json_schema":
        return {"type": fmt["type"]}
    schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
    return {"type": "json_schema", "json_schema": schema}


# -- tools -----------------------------------------------------------------------------------


def qualify(namespace: str, name: str) -> str:
    """The name the agent sees for function ``name`` of ``namespace``: ``NAMESPACE__NAME``, with
    characters a function name may not hold turned into ``_``; past 64 characters, cut and
    ended with a hash of the whole, so two functions never share a name."""
    joined = re.sub(r"[^A-Za-z0-9_-]", "_", f"{namespace}__{name}")
    if len(joined) <= 64:
        return joined
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:8]
    return f"{joined[:55]}_{digest}"


def _tools(
    raw: object, max_tools: int
) -> tuple[list[dict[str, Any]], list[Any], dict[str, tuple[str | None, str]]]:
    """Chat function tools, the tools echoed in the response, and the namespaced names."""
    if raw is None:
        return [], [], {}
    if not isinstance(raw, list):
        raise InvalidRequest("'tools' must be an array of tools.", param="tools", code="invalid_type")
    if len(raw) > max_tools:
        raise InvalidRequest(
            f"'tools' has {len(raw)} tools; at most {max_tools} are accepted.",
            param="tools",
            code="too_many_tools",
        )
    tools: list[dict[str, Any]] = []
    echoed: list[Any] = []
    names: dict[str, tuple[str | None, str]] = {}
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or not isinstance(kind, str):
            raise InvalidRequest(f"'{where}' must be an object with a 'type'.", param=where)
        if kind == "function":
            tools.append(_function(tool, where, None, names))
            echoed.append(tool)
        elif kind == "namespace":
            namespace = tool.get("name")
            members = tool.get("tools")
            if not isinstance(namespace, str) or not namespace or not isinstance(members, list):
                raise InvalidRequest(
                    f"'{where}' must have a 'name' and an array of function 'tools'.", param=where
                )
            for j, member in enumerate(members):
                at = f"{where}.tools[{j}]"
                if not isinstance(member, dict) or member.get("type", "function") != "function":
                    _drop(f"{kind}/{member.get('type') if isinstance(member, dict) else '?'}")
                    continue
                tools.append(_function(member, at, namespace, names))
            echoed.append(tool)
        else:
            _drop(kind)
    return tools, echoed, names


def _drop(kind: str) -> None:
    """A tool we cannot run (hosted by OpenAI): left out, logged once per type."""
    if kind not in _dropped_logged:
        _dropped_logged.add(kind)
        logger.info("responses: dropped tool of type %r (hosted tools are not offered to the agent)", kind)


def _function(
    tool: Mapping[str, Any], where: str, namespace: str | None, names: dict[str, tuple[str | None, str]]
) -> dict[str, Any]:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"'{where}.name' is required.", param=f"{where}.name")
    if namespace is None and not TOOL_NAME.fullmatch(name):
        raise InvalidRequest(
            f"'{where}.name' must be 1-64 letters, digits, underscores or dashes.",
            param=f"{where}.name",
            code="invalid_tool_name",
        )
    qualified = name if namespace is None else qualify(namespace, name)
    if qualified in names:
        raise InvalidRequest(
            f"Two tools are named '{qualified}'; tool names must be unique.", param=f"{where}.name"
        )
    names[qualified] = (namespace, name)
    function = {k: tool[k] for k in ("description", "parameters", "strict") if tool.get(k) is not None}
    return {"type": "function", "function": {"name": qualified, **function}}


def _tool_options(data: Mapping[str, Any], names: Mapping[str, tuple[str | None, str]]) -> dict[str, Any]:
    """``tool_choice`` and ``parallel_tool_calls`` in Chat Completions' shape; a choice of a
    hosted tool (or of allowed tools) is left to the agent (``auto``)."""
    options: dict[str, Any] = {}
    if "parallel_tool_calls" in data:
        options["parallel_tool_calls"] = data["parallel_tool_calls"]
    choice = data.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("'tool_choice.name' must name a function.", param="tool_choice.name")
        namespace = choice.get("namespace")
        if isinstance(namespace, str):
            name = qualify(namespace, name)
        options["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif isinstance(choice, dict):
        _drop(f"tool_choice/{choice.get('type')}")
    elif choice is not None:
        options["tool_choice"] = choice
    return options


# -- input -----------------------------------------------------------------------------------


def _input(raw: object, limits: Limits) -> tuple[Message, ...]:
    if isinstance(raw, str):
        if not raw.strip():
            raise InvalidRequest("'input' is empty.", param="input")
        return (Message("user", raw),)
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'input' must be a string or a non-empty array of items.", param="input")
    if len(raw) > limits.max_messages:
        raise InvalidRequest(
            f"'input' has {len(raw)} items; at most {limits.max_messages} are accepted.",
            param="input",
            code="too_many_messages",
        )
    messages: list[Message] = []
    for i, item in enumerate(raw):
        _add_item(messages, item, f"input[{i}]")
    last = len(raw) - 1
    if not messages or messages[-1].role not in ("user", "tool"):
        raise InvalidRequest(
            "The last input item must be a user message or a 'function_call_output'.", param=f"input[{last}]"
        )
    check_new_message(messages[-1], f"input[{last}].content", limits)
    return tuple(messages)


def _add_item(messages: list[Message], item: object, where: str) -> None:
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{where}' must be an object.", param=where)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        messages.append(_message(item, where))
    elif kind == "function_call":
        call = _call(item, where)
        previous = messages[-1] if messages else None
        if previous is not None and previous.role == "assistant":
            calls = (*previous.tool_calls, call)
            messages[-1] = Message("assistant", previous.content, previous.images, tool_calls=calls)
        else:
            messages.append(Message("assistant", "", tool_calls=(call,)))
    elif kind == "function_call_output":
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(
                f"'{where}.call_id' must name the call it answers.", param=f"{where}.call_id"
            )
        messages.append(Message("tool", _output(item.get("output"), f"{where}.output"), tool_call_id=call_id))
    elif isinstance(kind, str) and kind in _DROPPED_ITEMS:
        return
    elif kind == "item_reference":
        raise InvalidRequest(
            "'item_reference' items are not supported; send the item itself, or 'previous_response_id'.",
            param=f"{where}.type",
            code="unsupported_parameter",
        )
    else:
        raise InvalidRequest(
            f"'{where}.type' must be 'message', 'function_call' or 'function_call_output'.",
            param=f"{where}.type",
        )


def _message(item: Mapping[str, Any], where: str) -> Message:
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(
            f"'{where}.role' must be one of: {', '.join(sorted(ROLES))}.", param=f"{where}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return Message(role, content)
    if not isinstance(content, list):
        raise InvalidRequest(
            f"'{where}.content' must be a string or an array of parts.", param=f"{where}.content"
        )
    texts: list[str] = []
    images: list[str] = []
    for i, part in enumerate(content):
        at = f"{where}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict):
            raise InvalidRequest(f"'{at}' must be an object.", param=at)
        if kind in ("input_text", "output_text", "text", "summary_text") and isinstance(
            part.get("text"), str
        ):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "input_image":
            images.append(_image(part, at))
        elif kind == "input_file":
            file = _file(part, at)
            if file.startswith("data:"):
                images.append(file)
            else:
                texts.append(file)
        else:
            raise InvalidRequest(
                f"'{at}' must be an 'input_text', 'output_text', 'input_image' or 'input_file' part.",
                param=at,
                code="unsupported_content",
            )
    return Message(role, "\n".join(texts), tuple(images))


def _image(part: Mapping[str, Any], where: str) -> str:
    url = part.get("image_url")
    if isinstance(url, dict):  # the Chat Completions shape, which some clients send
        url = url.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(
            f"'{where}.image_url' must be a 'data:' URL (file ids are not supported).",
            param=f"{where}.image_url",
            code="unsupported_image_url",
        )
    if not url.startswith("data:"):
        raise InvalidRequest(
            "Only base64 'data:' image URLs are accepted; this server fetches nothing remote.",
            param=f"{where}.image_url",
            code="unsupported_image_url",
        )
    return url


def _file(part: Mapping[str, Any], where: str) -> str:
    """An ``input_file``: an image's data URL (an attachment), or a text file's text, inlined."""
    data = part.get("file_data")
    match = _DATA_URL.fullmatch(data) if isinstance(data, str) else None
    if match is None:
        raise InvalidRequest(
            f"'{where}' must carry 'file_data' as a base64 'data:' URL (no file ids or URLs).",
            param=f"{where}.file_data",
            code="unsupported_content",
        )
    kind = match["type"].lower()
    if kind.startswith("image/"):
        return str(data)
    if not (kind.startswith("text/") or kind in _TEXT_FILES):
        raise InvalidRequest(
            f"Files of type '{kind}' are not supported; send text files or images.",
            param=f"{where}.file_data",
            code="unsupported_content",
        )
    try:
        text = base64.b64decode(match["data"], validate=True).decode()
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            "The file is not valid base64 UTF-8 text.", param=f"{where}.file_data", code="invalid_file"
        ) from None
    name = part.get("filename")
    return f"[{name}]\n{text}" if isinstance(name, str) and name else text


def _call(item: Mapping[str, Any], where: str) -> ToolCall:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"'{where}.call_id' must be a non-empty string.", param=f"{where}.call_id")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"'{where}.name' must be a non-empty string.", param=f"{where}.name")
    if not isinstance(arguments, str):
        raise InvalidRequest(f"'{where}.arguments' must be a string of JSON.", param=f"{where}.arguments")
    namespace = item.get("namespace")
    return ToolCall(call_id, qualify(namespace, name) if isinstance(namespace, str) else name, arguments)


def _output(output: object, where: str) -> str:
    """A function call's output: a string, or parts whose text is joined; an image part (Codex
    CLI's ``view_image`` answers with one) is ``[image]`` and a file part ``[file NAME]``, as a
    chat ``tool`` message carries only text."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(text for part in output if (text := _output_part(part)) is not None)
    raise InvalidRequest(f"'{where}' must be a string or an array of parts.", param=where)


def _output_part(part: object) -> str | None:
    if not isinstance(part, dict):
        return None
    if isinstance(part.get("text"), str):
        return str(part["text"])
    if part.get("type") == "input_image":
        return "[image]"
    if part.get("type") == "input_file":
        name = part.get("filename")
        return f"[file {name}]" if isinstance(name, str) and name else "[file]"
    return None
