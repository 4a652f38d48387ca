"""``uvicorn asgi.app:app``: the ASGI app, configured from ``NANOBOT_*`` environment variables.

``uvicorn asgi.app:app --http asgi.app:HttpProtocol`` adds the request head limits and the
header deadline (``NANOBOT_MAX_HEADER_SIZE``, ``NANOBOT_MAX_HEADERS``, ``NANOBOT_HEADER_TIMEOUT``).
"""

from __future__ import annotations

from nanobot import heap
from nanobot.agents.loader import load_agent
from nanobot.api.asgi import create_asgi_app
from nanobot.api.uvicorn_http import protocol_class
from nanobot.config import Settings
from nanobot.fdlimit import calm_resource_errors

settings = Settings.from_env()
app = create_asgi_app(load_agent(settings.agent, settings), **settings.service_options())
HttpProtocol = protocol_class(settings.head_limits())
calm_resource_errors()
heap.settle()  # this module is the process's app: freeze it, and collect garbage less often
