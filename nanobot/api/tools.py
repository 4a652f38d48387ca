"""Client tools in a Chat Completions request: ``tools``, ``tool_choice``, ``parallel_tool_calls``,
assistant ``tool_calls`` and ``tool`` results, validated with an error naming the field.

Tools are kept as the client sent them (an upstream gets them unchanged); only their shape is
checked here. The legacy ``functions``/``function_call`` fields are refused with a pointer to
``tools``: mapping them would also mean answering in the legacy ``function_call`` shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nanobot.core.errors import InvalidRequest
from nanobot.core.events import ToolCall

#: OpenAI's rule for a function name.
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
CHOICES = ("none", "auto", "required")


def parse_tools(
    data: Mapping[str, Any], max_tools: int
) -> tuple[tuple[Mapping[str, Any], ...], dict[str, Any]]:
    """The request's function tools, and the options that go with them (``tool_choice``,
    ``parallel_tool_calls``, forwarded as sent when there are tools)."""
    _refuse_legacy(data)
    raw = data.get("tools")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise InvalidRequest(
            "'tools' must be an array of function tools.", param="tools", code="invalid_type"
        )
    if len(raw) > max_tools:
        raise InvalidRequest(
            f"'tools' has {len(raw)} tools; at most {max_tools} are accepted.",
            param="tools",
            code="too_many_tools",
        )
    names: set[str] = set()
    for i, tool in enumerate(raw):
        name = _check_tool(tool, f"tools[{i}]")
        if name in names:
            raise InvalidRequest(
                f"Two tools are named '{name}'; tool names must be unique.",
                param=f"tools[{i}].function.name",
            )
        names.add(name)
    options: dict[str, Any] = {}
    choice = data.get("tool_choice")
    if choice is not None:
        _check_choice(choice, names)
        if raw:
            options["tool_choice"] = choice
    parallel = data.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise InvalidRequest(
                "'parallel_tool_calls' must be a boolean.", param="parallel_tool_calls", code="invalid_type"
            )
        if raw:
            options["parallel_tool_calls"] = parallel
    return tuple(raw), options


def _refuse_legacy(data: Mapping[str, Any]) -> None:
    for name, harmless in (("functions", (None, [])), ("function_call", (None, "none", "auto"))):
        if data.get(name) not in harmless:
            raise InvalidRequest(
                f"'{name}' is OpenAI's deprecated form of tools and is not supported; "
                "send 'tools' and 'tool_choice' instead.",
                param=name,
                code="unsupported_parameter",
            )


def _check_tool(tool: object, where: str) -> str:
    if not isinstance(tool, dict):
        raise InvalidRequest(f"'{where}' must be an object.", param=where, code="invalid_type")
    if tool.get("type") != "function":
        raise InvalidRequest(
            f"'{where}.type' must be 'function'; other tool types are not supported.",
            param=f"{where}.type",
            code="unsupported_tool_type",
        )
    function = tool.get("function")
    if not isinstance(function, dict):
        raise InvalidRequest(f"'{where}.function' must be an object.", param=f"{where}.function")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"'{where}.function.name' is required.", param=f"{where}.function.name")
    if not TOOL_NAME.fullmatch(name):
        raise InvalidRequest(
            f"'{where}.function.name' must be 1-64 letters, digits, underscores or dashes.",
            param=f"{where}.function.name",
            code="invalid_tool_name",
        )
    for field, kind, label in (
        ("description", str, "a string"),
        ("parameters", dict, "an object (JSON Schema)"),
    ):
        if function.get(field) is not None and not isinstance(function[field], kind):
            raise InvalidRequest(
                f"'{where}.function.{field}' must be {label}.", param=f"{where}.function.{field}"
            )
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidRequest(
            f"'{where}.function.strict' must be a boolean.", param=f"{where}.function.strict"
        )
    return name


def _check_choice(choice: object, names: set[str]) -> None:
    if isinstance(choice, str):
        if choice not in CHOICES:
            raise InvalidRequest(
                "'tool_choice' must be 'none', 'auto', 'required' or a named function.", param="tool_choice"
            )
        if choice == "required" and not names:
            raise InvalidRequest("'tool_choice' is 'required' but 'tools' is empty.", param="tool_choice")
        return
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            "'tool_choice' must be 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}.',
            param="tool_choice",
        )
    if name not in names:
        raise InvalidRequest(
            f"'tool_choice' names the function '{name}', which is not in 'tools'.",
            param="tool_choice.function.name",
        )


def parse_tool_calls(raw: object, where: str) -> tuple[ToolCall, ...]:
    """An assistant message's ``tool_calls``."""
    if not isinstance(raw, list):
        raise InvalidRequest(f"'{where}' must be an array.", param=where, code="invalid_type")
    calls = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(function, dict):
            raise InvalidRequest(f"'{at}' must be a function tool call.", param=at)
        call_id, name, arguments = item.get("id"), function.get("name"), function.get("arguments")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(f"'{at}.id' must be a non-empty string.", param=f"{at}.id")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                f"'{at}.function.name' must be a non-empty string.", param=f"{at}.function.name"
            )
        if not isinstance(arguments, str):
            raise InvalidRequest(
                f"'{at}.function.arguments' must be a string of JSON.", param=f"{at}.function.arguments"
            )
        calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)


def check_tool_results(messages: Sequence[Any], *, session: bool) -> None:
    """Every ``tool`` message answers a call an earlier assistant message issued. A client of a
    named session may send only its tool results: when the request holds no assistant tool
    call at all, the ids are the agent's to check against the session's history."""
    issued: set[str] = set()
    for i, message in enumerate(messages):
        if message.tool_calls:
            issued.update(call.call_id for call in message.tool_calls)
        elif message.role == "tool" and message.tool_call_id not in issued and (issued or not session):
            raise InvalidRequest(
                f"'messages[{i}].tool_call_id' ({message.tool_call_id!r}) answers no tool call of an "
                "earlier assistant message.",
                param=f"messages[{i}].tool_call_id",
                code="unknown_tool_call_id",
            )
