"""``uvicorn asgi.app:app``: the ASGI app, configured from ``NANOBOT_*`` environment variables."""

from __future__ import annotations

from nanobot.agents.loader import load_agent
from nanobot.api.asgi import create_asgi_app
from nanobot.config import Settings

settings = Settings.from_env()
app = create_asgi_app(load_agent(settings.agent, settings), **settings.service_options())
