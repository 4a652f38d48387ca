"""The OpenAPI document of the API as this server really serves it (``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from nanobot.api.dialects.messages import openapi as messages_openapi
from nanobot.api.request import ROLES

_ERROR_STATUSES = {
    "400": "Invalid request: the error's `param` names the field.",
    "401": "Missing or wrong API key.",
    "403": "A browser origin that may not call this server.",
    "404": "Unknown model, or unknown or expired (previous) response.",
    "408": "The request body did not arrive in time.",
    "413": "Request body or a media item too large.",
    "415": "The body is neither JSON nor a multipart form.",
    "421": "A Host this server does not answer for (no API key, loopback).",
    "429": "The session's queue is full, or the upstream is rate limiting.",
    "500": "The agent failed (carries `x-should-retry: false`).",
    "502": "The agent's upstream failed.",
    "503": "The server is shutting down (carries `Retry-After`).",
    "504": "The agent did not answer within the request timeout.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: str) -> dict[str, Any]:
    return {
        code: {
            "description": _ERROR_STATUSES[code],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for code in codes
    }


_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "image_url"]},
        "text": {"type": "string"},
        "image_url": {
            "type": "object",
            "required": ["url"],
            "properties": {"url": {"type": "string", "description": "a base64 `data:` URL"}},
        },
    },
}
_TOOL_CALL = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name", "arguments"],
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
        },
    },
}
_TOOL = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
                "strict": {"type": "boolean"},
            },
        },
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": sorted(ROLES)},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _PART}, {"type": "null"}]},
        "tool_calls": {"type": "array", "items": _TOOL_CALL, "description": "assistant messages"},
        "tool_call_id": {"type": "string", "description": "tool messages: the call answered"},
    },
}
_CHAT_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "description": "OpenAI's request body; sampling fields are accepted and ignored.",
    "properties": {
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "model": {"type": ["string", "null"]},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {
            "type": ["object", "null"],
            "properties": {"include_usage": {"type": ["boolean", "null"]}},
        },
        "session_id": {"type": ["string", "null"], "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"},
        "tools": {"type": ["array", "null"], "items": _TOOL},
        "tool_choice": {
            "anyOf": [
                {"type": "string", "enum": ["none", "auto", "required"]},
                {"type": "object", "required": ["type", "function"]},
                {"type": "null"},
            ]
        },
        "parallel_tool_calls": {"type": ["boolean", "null"]},
    },
}
_FORM_REQUEST = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "session_id": {"type": "string"},
        "model": {"type": "string"},
        "stream": {"type": "string", "enum": ["true", "false"]},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
    },
}
_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        name: {"type": "integer"} for name in ("prompt_tokens", "completion_tokens", "total_tokens")
    },
}
_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": {"type": ["string", "null"]},
                            "reasoning_content": {"type": "string"},
                            "tool_calls": {"type": "array", "items": _TOOL_CALL},
                        },
                    },
                    "finish_reason": {"type": "string"},
                },
            },
        },
        "usage": _ref("Usage"),
    },
}
_MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_RESPONSES_REQUEST = {
    "type": "object",
    "required": ["input"],
    "description": "OpenAI's Responses request (see the README's 'Responses API' for what is honoured).",
    "properties": {
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "instructions": {"type": ["string", "null"]},
        "previous_response_id": {"type": ["string", "null"]},
        "store": {"type": "boolean"},
        "stream": {"type": "boolean"},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"oneOf": [{"type": "string"}, {"type": "object"}]},
        "max_output_tokens": {"type": "integer", "minimum": 1},
        "reasoning": {"type": "object"},
        "text": {"type": "object"},
        "metadata": {"type": "object"},
    },
}
_RESPONSE = {
    "type": "object",
    "required": ["id", "object", "created_at", "status", "model", "output", "error", "incomplete_details"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "status": {"enum": ["completed", "incomplete", "failed", "in_progress"]},
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": ["object", "null"]},
        "error": {"type": ["object", "null"]},
        "incomplete_details": {"type": ["object", "null"]},
    },
}
_STREAMED_RESPONSE = (
    "A response object (JSON), or with `stream: true` an SSE stream of Responses events (`event:` "
    "and `data:` lines) ending `response.completed`, `response.incomplete` or `response.failed`."
)
_RESPONSE_ID = [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def openapi_document(model_name: str) -> dict[str, Any]:
    """The document, naming the one model this server serves."""
    chat_ok = {
        "description": "A completion (JSON), or with `stream: true` an SSE stream of chunks ending `[DONE]`.",
        "content": {
            "application/json": {"schema": _ref("ChatCompletion")},
            # OpenAPI 3.1 tools (schemathesis) read an SSE schema as one event's: its data is text.
            "text/event-stream": {
                "schema": {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "nanobot-api", "version": "1", "description": f"Serves the model '{model_name}'."},
        "components": {
            "schemas": {
                "ChatRequest": _CHAT_REQUEST,
                "ChatCompletion": _COMPLETION,
                "Usage": _USAGE,
                "Model": _MODEL,
                "Error": _ERROR,
                "ResponsesRequest": _RESPONSES_REQUEST,
                "Response": _RESPONSE,
                **messages_openapi.SCHEMAS,
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}, {}],
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "operationId": "createChatCompletion",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _ref("ChatRequest")},
                            "multipart/form-data": {"schema": _FORM_REQUEST},
                        },
                    },
                    "responses": {"200": chat_ok, **_errors(*_ERROR_STATUSES)},
                }
            },
            "/v1/responses": {
                "post": {
                    "operationId": "createResponse",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ResponsesRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": _STREAMED_RESPONSE,
                            "content": {
                                "application/json": {"schema": _ref("Response")},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(*_ERROR_STATUSES),
                    },
                }
            },
            "/v1/responses/{response_id}": {
                "get": {
                    "operationId": "retrieveResponse",
                    "parameters": _RESPONSE_ID,
                    "responses": {
                        "200": _json(_ref("Response"), "A stored response."),
                        **_errors("401", "404", "421", "503"),
                    },
                },
                "delete": {
                    "operationId": "deleteResponse",
                    "parameters": _RESPONSE_ID,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["id", "object", "deleted"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "object": {"const": "response"},
                                    "deleted": {"const": True},
                                },
                            },
                            "The response is forgotten.",
                        ),
                        **_errors("401", "404", "421", "503"),
                    },
                },
            },
            **messages_openapi.PATHS,
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["object", "data"],
                                "properties": {
                                    "object": {"const": "list"},
                                    "data": {"type": "array", "items": _ref("Model")},
                                },
                            },
                            "The served model.",
                        ),
                        **_errors("401"),
                    },
                }
            },
            "/v1/models/{model_id}": {
                "get": {
                    "operationId": "retrieveModel",
                    "parameters": [
                        {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": _json(_ref("Model"), "The model."), **_errors("401", "404")},
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"const": "ok"}},
                            },
                            "The server is up.",
                        )
                    },
                }
            },
        },
    }
