"""``uvicorn asgi.app:app``: the ASGI app, configured from ``NANOBOT_*`` environment variables.

``uvicorn asgi.app:app --http asgi.app:HttpProtocol`` adds the request head limits and the
header deadline (``NANOBOT_MAX_HEADER_SIZE``, ``NANOBOT_MAX_HEADERS``, ``NANOBOT_HEADER_TIMEOUT``).
nanobot's own lines (the request log, the drain) go to stderr as ``nanobot serve`` writes them
(``NANOBOT_LOG_LEVEL``, ``NANOBOT_LOG_FORMAT``), unless a ``--log-config`` gives the root logger
a handler; ``--no-access-log`` leaves out uvicorn's access lines, which say less. A bad
setting is one line naming its variable and exit status 2, as ``nanobot serve`` reports it.
"""

from __future__ import annotations

from nanobot import heap
from nanobot.agents.loader import load_agent
from nanobot.api.access import log_to_stderr
from nanobot.api.asgi import create_asgi_app
from nanobot.api.uvicorn_http import protocol_class
from nanobot.config import USAGE_ERROR, ConfigError, Settings, env_name, print_error
from nanobot.fdlimit import calm_resource_errors

try:
    settings = Settings.from_env()
    log_to_stderr(settings.log_level, settings.log_format)
    app = create_asgi_app(load_agent(settings.agent, settings), **settings.service_options())
except ConfigError as exc:
    print_error("asgi.app", exc.naming(env_name))
    raise SystemExit(USAGE_ERROR) from None
HttpProtocol = protocol_class(settings.head_limits())
calm_resource_errors()
heap.settle()  # this module is the process's app: freeze it, and collect garbage less often
