"""Server settings: one table of options, read from ``NANOBOT_*`` variables and CLI flags."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from nanobot.api.dialects.responses.store import ResponseStore
    from nanobot.api.sessions import Sessions

from nanobot import __version__
from nanobot.api.limits import HeadLimits


class ConfigError(ValueError):
    """A setting has a value it cannot take.

    ``fields`` are the settings at fault (``Settings`` field names, when known): the message
    names them as the user gave them, ``--port`` on the command line, ``NANOBOT_PORT`` in the
    environment (:meth:`naming`); ``problem`` says what is wrong with them.
    """

    def __init__(self, problem: str, *fields: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fields = fields

    def naming(self, name: Callable[[str], str]) -> str:
        """``WHERE: problem``, each field named by ``name`` (a flag or a variable)."""
        if not self.fields:
            return self.problem
        return f"{' and '.join(name(field) for field in self.fields)}: {self.problem}"

    def tidied(self) -> ConfigError:
        """The same error in the command line's style: lower case first, no full stop."""
        return ConfigError(_tidy(self.problem), *self.fields)

    def __str__(self) -> str:
        return self.naming(flag_name)


def _tidy(problem: str) -> str:
    """One style for every message: lower case first (unless a name or a flag), no full stop."""
    problem = problem.rstrip().rstrip(".")
    first = problem.split(" ", 1)[0]
    if first[:1].isupper() and first[1:].islower():
        problem = problem[0].lower() + problem[1:]
    return problem


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
    upstream_follow_redirects: bool = False
    upstream_max_tokens: int = 0
    upstream_reasoning_effort: bool = True
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
    no_ui: bool = False
    log_format: str = "text"
    log_level: str = "info"
    workers: int = 1
    redis_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``NANOBOT_*`` variables (an empty one counts as unset); a
        :class:`ConfigError` names the variable at fault."""
        env = os.environ if environ is None else environ
        values = {name: raw for name in _DEFAULTS if (raw := env.get(env_name(name)))}
        return settings_from(values, env_name)

    def checked(self) -> Settings:
        """These settings, if they can serve (an API key trimmed of spaces); else a :class:`ConfigError`."""
        _check_choice("stack", self.stack, STACKS)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"must be 0-65535, not {self.port}", "port")
        for name in ("request_timeout", "ping_interval", "write_timeout", "echo_delay", "body_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must not be negative, not {getattr(self, name):g}", name)
        for name in (
            "max_body_bytes",
            "max_header_size",
            "max_headers",
            "header_timeout",
            "max_messages",
            "drain_timeout",
            "max_media_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"must be positive, not {getattr(self, name):g}", name)
        for name in ("max_attachments", "max_tools", "max_streams", "max_pending", "upstream_max_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must not be negative, not {getattr(self, name):g}", name)
        if self.workers < 1:
            raise ConfigError(f"must be at least 1, not {self.workers}", "workers")
        if self.history_max_messages < 2:
            raise ConfigError(f"must be at least 2, not {self.history_max_messages}", "history_max_messages")
        _check_choice("log_format", self.log_format, LOG_FORMATS)
        _check_choice("log_level", self.log_level.lower(), tuple(level.lower() for level in LOG_LEVELS))
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError(
                "must not be blank: no client could send it (leave it out for no key)", "api_key"
            )
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"must be a redis:// or rediss:// URL, not {self.redis_url!r}", "redis_url")
        if self.workers > 1 and not self.redis_url:
            raise ConfigError(
                f"{self.workers} workers need --redis-url redis://HOST:PORT/DB: each worker would "
                "otherwise keep its own sessions, and two turns of one session could run at once",
                "workers",
            )
        for alias in self.model_alias:
            name, _, target = alias.partition("=")
            if not name.strip() or target.strip() != self.model:
                raise ConfigError(
                    f"takes NAME=TARGET (TARGET: the --model {self.model!r}), not {alias!r}", "model_alias"
                )
        if self.agent == "openai":
            check_upstream(self)
        else:
            given = [name for name in OPENAI_ONLY if getattr(self, name) != _DEFAULTS[name]]
            if given:
                verb = "applies" if len(given) == 1 else "apply"
                raise ConfigError(f"only {verb} to the openai agent, not to {self.agent!r}", *given)
        if self.api_key is not None and self.api_key != self.api_key.strip():
            return replace(self, api_key=self.api_key.strip())  # the server compares it trimmed
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
            "ui": not self.no_ui,
            "sessions": self.shared_sessions(),
            "response_store": self.response_store(),
        }

    def response_store(self) -> ResponseStore:
        """Where ``/v1/responses`` keeps stored responses: ``--history``'s store (Redis when
        ``--redis-url`` is set and ``--history`` is memory, so every worker sees them)."""
        from nanobot.api.dialects.responses.store import StoreSpecError, open_response_store

        try:
            return open_response_store(self.history, ttl=self.session_ttl or None, redis_url=self.redis_url)
        except StoreSpecError as exc:
            raise ConfigError(str(exc), "history") from exc

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
    "upstream_follow_redirects",
    "upstream_max_tokens",
    "upstream_reasoning_effort",
    "system_prompt",
    "history_max_messages",
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
    "upstream_follow_redirects": "openai agent: follow the upstream's redirects within its origin "
    "(scheme, host, port); without it any redirect is a 502",
    "upstream_max_tokens": "openai agent: largest max_tokens (and max_completion_tokens) sent upstream; "
    "a client's larger value is lowered to it (0: as sent)",
    "upstream_reasoning_effort": "openai agent: send the client's reasoning_effort upstream (off: never, "
    "for an upstream or model that refuses it)",
    "system_prompt": "openai agent: system prompt put first in every session",
    "history": "openai agent's sessions and /v1/responses' stored responses: 'memory', 'sqlite:PATH' "
    "or 'redis://HOST:PORT/DB'",
    "history_max_messages": "openai agent: messages kept per session (oldest turns dropped first)",
    "session_ttl": "seconds a stored response, and (redis history) an idle session's conversation, "
    "are kept (0: forever)",
    "media_dir": "where a turn's images and files are written (default: a temp folder)",
    "max_media_bytes": "largest image or file accepted (413 above)",
    "keep_media": "keep a turn's media files after the turn instead of removing them",
    "app_dir": "folder searched first for a 'module:attribute' agent, as uvicorn's --app-dir",
    "allow_unauthenticated": "serve a non-loopback --host without --api-key (a trusted network only)",
    "max_streams": "streaming turns open at once in a process; past it 503 before any byte (0: no limit)",
    "max_pending": "turns waiting for their session in a process; past it 503 (0: no limit)",
    "metrics_public": "serve /metrics without the API key (a scraper on a private network)",
    "no_ui": "serve no chat page at / (then / is a 404)",
    "log_format": "log lines as 'text' or 'json' (one object per line)",
    "log_level": "debug, info, warning or error; info logs one line per request",
    "workers": "processes serving the port (more than 1 needs --redis-url)",
    "redis_url": "Redis shared by every worker and host: per-session turn order and queue limits",
    "cors_origin": "allow browser calls from this origin (repeatable; '*' for any; env: comma-separated)",
}


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _origins(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


#: The type of each setting that is not a string.
KINDS: dict[str, Callable[[str], Any]] = {
    "keep_media": _flag,
    "allow_unauthenticated": _flag,
    "metrics_public": _flag,
    "no_ui": _flag,
    "upstream_follow_redirects": _flag,
    "upstream_reasoning_effort": _flag,
    "upstream_max_tokens": int,
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


#: ``serve --help`` groups the flags by topic; a setting missing here is listed under relay
#: when only the openai agent reads it, else under operations.
TOPICS: dict[str, tuple[str, ...]] = {
    "serving": (
        "stack",
        "host",
        "port",
        "api_key",
        "allow_unauthenticated",
        "allowed_host",
        "cors_origin",
        "ping_interval",
        "no_ui",
    ),
    "agent": ("agent", "model", "app_dir", "echo_delay", "media_dir", "keep_media"),
    "relay (the openai agent)": OPENAI_ONLY,
    "limits": (
        "request_timeout",
        "write_timeout",
        "body_timeout",
        "header_timeout",
        "max_body_bytes",
        "max_messages",
        "max_attachments",
        "max_tools",
        "max_media_bytes",
        "max_header_size",
        "max_headers",
        "max_streams",
        "max_pending",
    ),
    "operations": ("log_format", "log_level", "metrics_public", "drain_timeout"),
    "scale-out": ("workers", "redis_url"),
}
#: What ``serve --help`` shows as a flag's value, where the field's name would not read well.
METAVARS = {
    "stack": "{aiohttp,asgi}",
    "log_format": "{text,json}",
    "log_level": "{debug,info,warning,error}",
    "api_key": "KEY",
    "upstream_api_key": "KEY",
    "upstream_url": "URL",
    "redis_url": "URL",
    "upstream_model": "NAME",
    "model": "NAME",
    "system_prompt": "TEXT",
    "history": "STORE",
    "app_dir": "DIR",
    "media_dir": "DIR",
    "cors_origin": "ORIGIN",
    "allowed_host": "HOST",
}


def env_name(field: str) -> str:
    return f"NANOBOT_{field.upper()}"


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def topic_of(field: str) -> str:
    for topic, names in TOPICS.items():
        if field in names:
            return topic
    return "relay (the openai agent)" if field in OPENAI_ONLY else "operations"


def check_upstream(settings: Settings) -> None:
    """What the openai agent needs: an http(s) upstream URL (checked first) and a model."""
    url = settings.upstream_url
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"must start with http:// or https://, not {url!r}", "upstream_url")
    examples = {"upstream_url": "http://localhost:11434/v1", "upstream_model": "llama3.2"}
    missing = [name for name in examples if not getattr(settings, name)]
    if missing:
        shown = " and ".join(examples[name] for name in missing)
        raise ConfigError(f"needed by the openai agent (e.g. {shown})", *missing)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"must be {', '.join(choices[:-1])} or {choices[-1]}, not {value!r}", name)


#: How a value that does not convert is described, by its type.
_EXPECTED: dict[Callable[[str], Any], str] = {
    int: "a whole number",
    float: "a number",
    _flag: "on or off (1/0, true/false, yes/no)",
}


def _convert(name: str, raw: str) -> Any:
    kind = KINDS.get(name, str)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"expected {_EXPECTED.get(kind, 'another value')}, not {raw!r}", name)
    return value


def settings_from(given: Mapping[str, Any], name: Callable[[str], str]) -> Settings:
    """Checked settings from raw values (text, or already typed); errors name fields by ``name``."""
    try:
        values = {
            field: _convert(field, raw) if isinstance(raw, str) else raw for field, raw in given.items()
        }
        return Settings(**values).checked()
    except ConfigError as exc:
        raise NamedConfigError(exc, name) from None


class NamedConfigError(ConfigError):
    """A :class:`ConfigError` whose fields are named as the user gave them (flag or variable)."""

    def __init__(self, error: ConfigError, name: Callable[[str], str]) -> None:
        super().__init__(error.problem, *error.fields)
        self.name = name

    def __str__(self) -> str:
        return self.naming(self.name)


#: The exit code of every command-line error, as argparse's.
USAGE_ERROR = 2


def print_error(prog: str, message: str) -> None:
    """The one style of every command-line error: ``PROG: error: MESSAGE``, one line on stderr."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def fail(prog: str, message: str) -> NoReturn:
    print_error(prog, message)
    raise SystemExit(USAGE_ERROR)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in nanobot's style, and no usage dump before them."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, _plain(message))


def _plain(message: str) -> str:
    """argparse's own wording, said as nanobot says everything else."""
    if message.startswith("the following arguments are required: {serve}"):
        return "a command is needed: nanobot serve (nanobot serve --help lists its options)"
    if (choice := re.match(r"argument {serve}: invalid choice: '?(.*?)'? \(", message)) is not None:
        return f"{choice.group(1)!r} is not a command: the one command is serve"
    message = message.removeprefix("argument ")
    return message.replace("expected one argument", "expected a value")


def _readable(field: str, value: object) -> str | None:
    """A default as ``serve --help`` shows it: ``120 s``, ``7 days``, ``16 MiB``, ``off``."""
    if value is None or value == () or field in SECRETS:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if KINDS.get(field) is float and isinstance(value, float):
        days, rest = divmod(value, 86400)
        if days and not rest:
            return f"{days:g} day{'s' if days != 1 else ''}"
        return f"{value:g} s"
    if isinstance(value, int) and field.endswith(("_bytes", "_size")):
        for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size and value % size == 0:
                return f"{value // size} {unit}"
        return f"{value} bytes"
    return str(value)


def _metavar(field: str) -> str:
    if field in METAVARS:
        return METAVARS[field]
    kind = KINDS.get(field, str)
    if kind is float:
        return "SECONDS"
    if kind is int:
        return "BYTES" if field.endswith(("_bytes", "_size")) else "N"
    return field.rsplit("_", 1)[-1].upper()


def _parser() -> _Parser:
    parser = _Parser(prog="nanobot", description="OpenAI-compatible server for agents")
    parser.add_argument("--version", action="version", version=f"nanobot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve}")
    serve = commands.add_parser(
        "serve",
        help="run the API server",
        usage="nanobot serve [OPTIONS]",
        description="Serve an agent over the OpenAI Chat Completions API. Every flag has an "
        "environment variable; flags win over the environment.",
    )
    groups = {topic: serve.add_argument_group(topic) for topic in TOPICS}
    for field in fields(Settings):
        default = _readable(field.name, _DEFAULTS[field.name])
        shown = f"; default: {default}" if default is not None else ""
        described = f"{HELP[field.name]} (env {env_name(field.name)}{shown})"
        group = groups[topic_of(field.name)]
        flag = flag_name(field.name)
        if KINDS.get(field.name) is _flag and field.name.startswith("no_"):  # --no-ui: no --no-no-ui
            group.add_argument(flag, action="store_const", const=True, default=None, help=described)
        elif KINDS.get(field.name) is _flag:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=described)
        elif field.name in REPEATABLE:
            group.add_argument(
                flag, action="append", default=None, metavar=_metavar(field.name), help=described
            )
        else:
            group.add_argument(flag, default=None, metavar=_metavar(field.name), help=described)
    return parser


def read_command(
    argv: Sequence[str] | None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, Callable[[str], str]]:
    """``nanobot serve`` flags over ``NANOBOT_*`` variables over defaults: the settings, and how
    to name a field in an error (its flag, or its variable when the value came from there).
    A bad value ends the command with :func:`fail`."""
    args, extra = _parser().parse_known_args(argv)
    if extra:
        unknown = extra[0]
        problem = "no such option" if unknown.startswith("-") else "unexpected argument"
        fail("nanobot serve", f"{unknown}: {problem} (nanobot serve --help lists the options)")
    env = os.environ if environ is None else environ
    flags = {name: value for name in _DEFAULTS if (value := getattr(args, name)) is not None}
    variables = {name: raw for name in _DEFAULTS if name not in flags and (raw := env.get(env_name(name)))}

    def name(field: str) -> str:
        return env_name(field) if field in variables else flag_name(field)

    values = {**variables, **{k: tuple(v) if isinstance(v, list) else v for k, v in flags.items()}}
    try:
        return settings_from(values, name), name
    except ConfigError as exc:
        fail("nanobot serve", str(exc))


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> Settings:
    """``nanobot serve`` flags over ``NANOBOT_*`` variables over defaults."""
    return read_command(argv, environ)[0]


_DEFAULTS = {f.name: f.default for f in fields(Settings)}
