"""Errors shared by the wire-format serializers of every channel."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message the stream cannot go on after: close the socket with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str, metric_reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.metric_reason = metric_reason


class UnknownMessage(ValueError):
    """A well-formed message of a kind we do not know: counted and ignored (forward compatibility)."""
