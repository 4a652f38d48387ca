"""Server settings: one table of options, read from ``NANOBOT_*`` variables and CLI flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanobot.api.sessions import Sessions

from nanobot.api.limits import HeadLimits


class ConfigError(ValueError):
    """A setting has a value it cannot take."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``nanobot serve`` and ``asgi/app.py`` are configured by."""

    stack: str = "aiohttp"
    host: str = "127.0.0.1"
    port: int = 8900
    agent: str = "echo"
    model: str = "nanobot"
    model_alias: tuple[str, ...] = ()
    api_key: str | None = None
    request_timeout: float = 120.0
    ping_interval: float = 15.0
    write_timeout: float = 30.0
    echo_delay: float = 0.0
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout: float = 60.0
    max_messages: int = 2048
    max_attachments: int = 64
    max_tools: int = 128
    drain_timeout: float = 30.0
    allowed_host: tuple[str, ...] = ()
    max_header_size: int = 8192
    max_headers: int = 100
    header_timeout: float = 10.0
    upstream_url: str | None = None
    upstream_model: str | None = None
    upstream_api_key: str | None = None
    system_prompt: str | None = None
    history: str = "memory"
    history_max_messages: int = 100
    session_ttl: float = 7 * 24 * 3600.0
    media_dir: str | None = None
    max_media_bytes: int = 10 * 1024 * 1024
    keep_media: bool = False
    cors_origin: tuple[str, ...] = ()
    app_dir: str = "."
    allow_unauthenticated: bool = False
    max_streams: int = 0
    max_pending: int = 0
    metrics_public: bool = False
    log_format: str = "text"
    log_level: str = "info"
    workers: int = 1
    redis_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(env_name(field.name))
            if raw is not None and raw != "":
                values[field.name] = _convert(field.name, raw)
        return cls(**values).checked()

    def checked(self) -> Settings:
        if self.stack not in STACKS:
            raise ConfigError(f"stack must be one of {', '.join(STACKS)}, not {self.stack!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, not {self.port}")
        for name in ("request_timeout", "ping_interval", "write_timeout", "echo_delay", "body_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.max_body_bytes <= 0:
            raise ConfigError("max_body_bytes must be positive")
        for name in ("max_header_size", "max_headers", "header_timeout", "max_messages", "drain_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if self.workers > 1 and not self.redis_url:
            raise ConfigError(
                f"--workers {self.workers} needs --redis-url redis://HOST:PORT/DB: each worker would "
                "otherwise keep its own sessions, and two turns of one session could run at once"
            )
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--redis-url must be a redis:// or rediss:// URL, not {self.redis_url!r}")
        for name in ("max_attachments", "max_tools", "max_streams", "max_pending"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(
                f"log_level must be one of {', '.join(LOG_LEVELS).lower()}, not {self.log_level!r}"
            )
        if self.max_media_bytes <= 0:
            raise ConfigError("max_media_bytes must be positive")
        if self.history_max_messages < 2:
            raise ConfigError("history_max_messages must be at least 2")
        for alias in self.model_alias:
            name, _, target = alias.partition("=")
            if not name.strip() or target.strip() != self.model:
                raise ConfigError(
                    f"--model-alias takes NAME=TARGET (TARGET: the --model {self.model!r}), not {alias!r}"
                )
        if self.agent != "openai":
            given = [
                f"--{name.replace('_', '-')}"
                for name in OPENAI_ONLY
                if getattr(self, name) != _DEFAULTS[name]
            ]
            if given:
                raise ConfigError(f"{', '.join(given)} only apply to --agent openai, not {self.agent!r}")
        return self

    def service_options(self) -> dict[str, Any]:
        """Keyword arguments for ``create_app`` / ``create_asgi_app``."""
        return {
            "model_name": self.model,
            "request_timeout": self.request_timeout,
            "api_key": self.api_key,
            "ping_interval": self.ping_interval,
            "write_timeout": self.write_timeout,
            "max_body_bytes": self.max_body_bytes,
            "media_dir": Path(self.media_dir) if self.media_dir else None,
            "max_media_bytes": self.max_media_bytes,
            "keep_media": self.keep_media,
            "cors_origins": self.cors_origin,
            "body_timeout": self.body_timeout,
            "max_messages": self.max_messages,
            "max_attachments": self.max_attachments,
            "max_tools": self.max_tools,
            "drain_timeout": self.drain_timeout,
            "allowed_hosts": self.allowed_host,
            "max_streams": self.max_streams,
            "max_pending": self.max_pending,
            "metrics_public": self.metrics_public,
            "model_aliases": self.model_aliases(),
            "sessions": self.shared_sessions(),
        }

    def model_aliases(self) -> tuple[tuple[str, str], ...]:
        """``--model-alias NAME=TARGET`` as ``(NAME, TARGET)`` pairs."""
        pairs = (alias.partition("=") for alias in self.model_alias)
        return tuple((name.strip(), target.strip()) for name, _, target in pairs)

    def shared_sessions(self) -> Sessions | None:
        """Per-session turn order in Redis when ``--redis-url`` is set (made per process)."""
        if not self.redis_url:
            return None
        from nanobot.api.redis_sessions import RedisSessions

        return RedisSessions(self.redis_url, max_waiting=MAX_SESSION_QUEUE)

    def head_limits(self) -> HeadLimits:
        """Request head limits, enforced by the HTTP stack before a request reaches the app."""
        return HeadLimits(self.max_header_size, self.max_headers, self.header_timeout)


STACKS = ("aiohttp", "asgi")
#: Turns queued per session before 429 (the service's default, shared through Redis).
MAX_SESSION_QUEUE = 16
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Settings only the ``openai`` agent reads: given with another agent, they are an error.
OPENAI_ONLY = (
    "upstream_url",
    "upstream_model",
    "upstream_api_key",
    "system_prompt",
    "history",
    "history_max_messages",
    "session_ttl",
)
HELP = {
    "stack": "HTTP stack: aiohttp, or asgi (Starlette on uvicorn)",
    "host": "address to bind",
    "port": "port to bind (0 picks a free one)",
    "agent": "agent: 'echo', 'openai' or 'module:attribute'",
    "model": "model name the API advertises",
    "model_alias": "NAME=TARGET: also answer to model NAME ('*' matches any text), TARGET the --model "
    "(repeatable; env: comma-separated)",
    "api_key": "require 'Authorization: Bearer KEY' on every route but /health",
    "request_timeout": "seconds an agent turn may take (0: no limit)",
    "ping_interval": "seconds of silence before a ': ping' keepalive (0: off)",
    "write_timeout": "seconds a write may wait on a client that stopped reading (0: no limit)",
    "echo_delay": "seconds the echo agent waits before each word",
    "max_body_bytes": "largest request body accepted (413 above)",
    "body_timeout": "seconds a request body may take to arrive (408 after; 0: no limit)",
    "max_messages": "most messages a request may hold (400 above)",
    "max_attachments": "most images or files in the new message (400 above)",
    "max_tools": "most client tools a request may offer (400 above)",
    "drain_timeout": "seconds open turns get to finish at shutdown before they end with an error event",
    "allowed_host": "with no API key, also serve this Host on loopback (repeatable; '*' for any; "
    "env: comma-separated)",
    "max_header_size": "largest request target (URL), header name or header value, in bytes (431 above)",
    "max_headers": "most headers a request may have (431 above)",
    "header_timeout": "seconds a connection has to send a complete request head, from when it opens "
    "or its previous response ends; then it is closed",
    "upstream_url": "openai agent: base URL of the OpenAI-compatible server, e.g. http://localhost:11434/v1",
    "upstream_model": "openai agent: model name to ask the upstream for",
    "upstream_api_key": "openai agent: API key for the upstream",
    "system_prompt": "openai agent: system prompt put first in every session",
    "history": "openai agent: session store, 'memory', 'sqlite:PATH' or 'redis://HOST:PORT/DB'",
    "history_max_messages": "openai agent: messages kept per session (oldest turns dropped first)",
    "session_ttl": "openai agent, redis history: seconds an idle session's conversation is kept (0: forever)",
    "media_dir": "where a turn's images and files are written (default: a temp folder)",
    "max_media_bytes": "largest image or file accepted (413 above)",
    "keep_media": "keep a turn's media files after the turn instead of removing them",
    "app_dir": "folder searched first for a 'module:attribute' agent, as uvicorn's --app-dir",
    "allow_unauthenticated": "serve a non-loopback --host without --api-key (a trusted network only)",
    "max_streams": "streaming turns open at once in a process; past it 503 before any byte (0: no limit)",
    "max_pending": "turns waiting for their session in a process; past it 503 (0: no limit)",
    "metrics_public": "serve /metrics without the API key (a scraper on a private network)",
    "log_format": "log lines as 'text' or 'json' (one object per line)",
    "log_level": "debug, info, warning or error; info logs one line per request",
    "workers": "processes serving the port (more than 1 needs --redis-url)",
    "redis_url": "Redis shared by every worker and host: per-session turn order and queue limits",
    "cors_origin": "allow browser calls from this origin (repeatable; '*' for any; env: comma-separated)",
}


#: The type of each setting that is not a string.
def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _origins(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


KINDS: dict[str, Callable[[str], Any]] = {
    "keep_media": _flag,
    "allow_unauthenticated": _flag,
    "metrics_public": _flag,
    "max_streams": int,
    "workers": int,
    "max_pending": int,
    "cors_origin": _origins,
    "allowed_host": _origins,
    "model_alias": _origins,
    "body_timeout": float,
    "max_messages": int,
    "max_attachments": int,
    "max_tools": int,
    "drain_timeout": float,
    "max_media_bytes": int,
    "port": int,
    "max_body_bytes": int,
    "max_header_size": int,
    "max_headers": int,
    "header_timeout": float,
    "history_max_messages": int,
    "session_ttl": float,
    "request_timeout": float,
    "ping_interval": float,
    "write_timeout": float,
    "echo_delay": float,
}
SECRETS = frozenset({"api_key", "upstream_api_key"})
REPEATABLE = ("cors_origin", "allowed_host", "model_alias")


def env_name(field: str) -> str:
    return f"NANOBOT_{field.upper()}"


def _convert(name: str, raw: str) -> Any:
    kind = KINDS.get(name, str)
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{env_name(name)}={raw!r} is not a valid {name} value") from None


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> Settings:
    """``nanobot serve`` flags over ``NANOBOT_*`` variables over defaults."""
    parser = argparse.ArgumentParser(prog="nanobot", description="OpenAI-compatible server for agents")
    try:
        base = Settings.from_env(environ)
    except ConfigError as exc:
        parser.error(str(exc))
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the API server")
    for field in fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(base, field.name)
        shown = "" if field.name in SECRETS or default is None else f"; default: {default!r}"
        described = f"{HELP[field.name]} (env {env_name(field.name)}{shown})"
        if field.name in ("keep_media", "allow_unauthenticated", "metrics_public"):
            serve.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=described)
        elif field.name in REPEATABLE:
            serve.add_argument(flag, action="append", default=None, help=described)
        else:
            kind = KINDS.get(field.name, str)
            choices = {"stack": STACKS, "log_format": LOG_FORMATS}.get(field.name)
            serve.add_argument(flag, type=kind, default=default, choices=choices, help=described)
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in fields(Settings)}
    for name in REPEATABLE:
        given = getattr(args, name)
        values[name] = tuple(given) if given else getattr(base, name)
    try:
        return Settings(**values).checked()
    except ConfigError as exc:
        parser.error(str(exc))


_DEFAULTS = {f.name: f.default for f in fields(Settings)}
