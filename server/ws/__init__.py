"""WebSocket front end: ``/v1/stream`` and its wire protocol."""
