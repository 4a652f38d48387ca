"""The Anthropic Messages routes in the OpenAPI document (``/openapi.json``)."""

from __future__ import annotations

from typing import Any

_ERROR_STATUSES = {
    "400": "invalid_request_error: the message names the field.",
    "401": "authentication_error: missing or wrong key (`x-api-key` or `Authorization: Bearer`).",
    "403": "permission_error: a browser origin that may not call this server.",
    "404": "not_found_error: unknown model (see `--model-alias`).",
    "408": "invalid_request_error: the request body did not arrive in time.",
    "413": "request_too_large: request body or an image too large.",
    "415": "invalid_request_error: the body is not JSON.",
    "421": "invalid_request_error: a Host this server does not answer for.",
    "429": "rate_limit_error: the session's queue is full, or the upstream is rate limiting.",
    "500": "api_error: the agent failed.",
    "502": "api_error: the agent's upstream failed.",
    "503": "api_error: the server is shutting down.",
    "504": "timeout_error: the agent did not answer within the request timeout.",
    "529": "overloaded_error: past the server's stream or queue limit (carries `Retry-After`).",
}
_BLOCKS = {"type": "array", "items": {"type": "object", "required": ["type"]}}
_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "description": "Anthropic's Messages request; see the README for what is honoured and ignored.",
    "properties": {
        "model": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1, "description": "Required on /v1/messages."},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["user", "assistant", "system"]},
                    "content": {"oneOf": [{"type": "string"}, _BLOCKS]},
                },
            },
        },
        "system": {"oneOf": [{"type": "string"}, _BLOCKS]},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"type": "object"},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "top_k": {"type": "integer"},
        "thinking": {"type": "object"},
        "metadata": {"type": "object"},
        "stream": {"type": "boolean"},
    },
}
_USAGE = {
    "type": "object",
    "required": ["input_tokens", "output_tokens"],
    "properties": {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}},
}
_MESSAGE = {
    "type": "object",
    "required": ["id", "type", "role", "content", "model", "stop_reason", "stop_sequence", "usage"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "content": _BLOCKS,
        "model": {"type": "string"},
        "stop_reason": {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]},
        "stop_sequence": {"type": ["string", "null"]},
        "usage": _USAGE,
    },
}
_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}

SCHEMAS: dict[str, Any] = {
    "MessagesRequest": _REQUEST,
    "Message": _MESSAGE,
    "AnthropicError": _ERROR,
}


def _errors(*codes: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/AnthropicError"}
    return {
        code: {"description": _ERROR_STATUSES[code], "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


def _post(operation: str, ok: dict[str, Any], codes: tuple[str, ...]) -> dict[str, Any]:
    body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessagesRequest"}}},
    }
    return {
        "post": {"operationId": operation, "requestBody": body, "responses": {"200": ok, **_errors(*codes)}}
    }


PATHS: dict[str, Any] = {
    "/v1/messages": _post(
        "createMessage",
        {
            "description": "A message (JSON), or with `stream: true` Anthropic's SSE stream of named events.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Message"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        },
        tuple(_ERROR_STATUSES),
    ),
    "/v1/messages/count_tokens": _post(
        "countMessageTokens",
        {
            "description": "An estimate: a token per 4 characters of text, tools as JSON, 1600 an image.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["input_tokens"],
                        "properties": {"input_tokens": {"type": "integer"}},
                    }
                }
            },
        },
        ("400", "401", "403", "404", "408", "413", "415", "421"),
    ),
}
