"""Helpers for tests that run the real pipeline (separate processes on the real broker)."""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from switchboard.broker import EmbeddedBroker, free_port
from switchboard.settings import ServiceSettings
from switchboard.stack import Stack


@contextmanager
def running_stack(broker: EmbeddedBroker, tmp_dir, only: tuple[str, ...] = (), **env: str) -> Iterator[Stack]:
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"p{uuid.uuid4().hex[:8]}.")
    stack = Stack(settings, ingress_port=free_port(), run_dir=tmp_dir, only=only, extra_env=env)
    stack._next_metrics_port = free_port()
    try:
        stack.start(embedded=False)
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus metric at ``url`` (0 if absent)."""
    with urllib.request.urlopen(url, timeout=2) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            return float(m.group(2))
    return 0.0
