"""nanobot-api: any agent behind the OpenAI Chat Completions API, streamed."""

__version__ = "0.1.0"
