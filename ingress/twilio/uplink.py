"""A Twilio caller's μ-law media, decoded and resampled a record at a time.

Twilio sends one 20 ms frame per message. Decoding and resampling each on its own cost the ingress about a fifth
of its CPU at 100 silent callers (py-spy, README "Load testing"): numpy's fixed cost per call, not the arithmetic.
The bus carries records of ``record_ms`` anyway, so the frames are gathered here as bytes and converted once a
record's worth has arrived; the record leaves the ingress no later than before, and carries the arrival time of
its first frame.
"""

from __future__ import annotations

import numpy as np

from ingress.twilio.serializer import MULAW_RATE
from switchboard.audio import BUS_RATE, Resampler, mulaw_decode


class Uplink:
    """``push`` a media payload; a record's worth comes back as (bus-rate samples, first frame's arrival µs)."""

    def __init__(self, record_ms: int) -> None:
        self._want = max(1, record_ms * MULAW_RATE // 1000)  # μ-law bytes of one record (1 byte a sample)
        self._parts: list[bytes] = []
        self._size = 0
        self._first_us = 0
        self._up = Resampler(MULAW_RATE, BUS_RATE)  # one stream: its filter history spans the records

    @property
    def waiting_bytes(self) -> int:
        return self._size

    def push(self, payload: bytes, arrived_us: int) -> tuple[np.ndarray, int] | None:
        if not payload:
            return None
        if not self._parts:
            self._first_us = arrived_us
        self._parts.append(payload)
        self._size += len(payload)
        return self.flush() if self._size >= self._want else None

    def flush(self) -> tuple[np.ndarray, int] | None:
        """Whatever has gathered, converted now: before any other event of the call, and at its end."""
        if not self._parts:
            return None
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return self._up.process(mulaw_decode(data)), self._first_us
