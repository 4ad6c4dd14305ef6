"""Prometheus metrics and structured logging; depends on no other layer of the server."""

from observability.metrics import Metrics

__all__ = ["Metrics"]
