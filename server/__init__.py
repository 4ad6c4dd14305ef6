"""aiohttp front end: lifecycle, WebSocket protocol, HTTP routes, settings, CLI."""
