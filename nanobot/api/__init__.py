"""The OpenAI-compatible API: a framework-free core and two thin adapters.

Core modules (no aiohttp, no Starlette): ``errors``, ``request``, ``sse``, ``stream``,
``completion``, ``sessions``, ``driver``, ``service``. Adapters: ``server`` (aiohttp) and
``asgi`` (Starlette).
"""
