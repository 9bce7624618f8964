#!/usr/bin/env python3
"""Container health check for every Switchboard image (Docker ``HEALTHCHECK``,
Kubernetes exec probes). Exit 0 when healthy, 1 otherwise.

- A service with ``SWITCHBOARD_METRICS_PORT`` set (the processors and sinks):
  ``GET http://127.0.0.1:<port>/metrics`` must answer 200.
- Otherwise (the ingress): ``GET http://127.0.0.1:<SWITCHBOARD_PORT or 8080>/health``.

Pass ``ready`` as the first argument to ask the ingress's ``/ready`` instead
(503 while draining). Standard library only: the images carry no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def health_url(env: dict[str, str], ready: bool = False) -> str:
    metrics_port = int(env.get("SWITCHBOARD_METRICS_PORT") or 0)
    if metrics_port and not ready:
        return f"http://127.0.0.1:{metrics_port}/metrics"
    port = int(env.get("SWITCHBOARD_PORT") or 8080)
    return f"http://127.0.0.1:{port}/{'ready' if ready else 'health'}"


def check(url: str, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    url = health_url(dict(os.environ), ready=bool(argv) and argv[0] == "ready")
    if check(url):
        return 0
    print(f"unhealthy: {url}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
