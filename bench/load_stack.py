"""A load run on a fresh load-test stack, in one command: the README's "Load testing" figures.

Starts its own tansu and the spine services (ingress, turns, stt, agent, tts) on free loopback ports,
with the settings of a load-test stack (``SWITCHBOARD_MAX_CALLS=1000``, the generator's address exempt
from the per-source limits, no silence prompts) and its credentials in a temporary directory, runs ``switchboard load``
against it with the arguments given, and stops everything. Nothing of ``.switchboard/`` is touched.

    .venv/bin/python bench/load_stack.py --callers 20 --ramp 5 --turns 2 --duration 120
    .venv/bin/python bench/load_stack.py --callers 100 --ramp 10 --duration 30 --silent
    .venv/bin/python bench/load_stack.py --ingress-nodes 2 --callers 200 --ramp 10 --duration 30 --silent

``--ingress-nodes N`` (taken here, not passed on) runs N ingress processes on the one port, as
``switchboard up --scale ingress=N`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from switchboard.cli import main
from switchboard.load.run import ingress_metrics as run_ingress_metrics
from switchboard.stack import Stack, scratch_stack

SPINE = ("ingress", "turns", "stt", "agent", "tts")
# The silence timers are off: a --silent run measures the bus path, and its callers must stay on the line
# (with the defaults they would be asked "Are you still there?" at 8 s and let go at 30 s).
LOAD_TEST_ENV = {
    "SWITCHBOARD_MAX_CALLS": "1000",
    "SWITCHBOARD_SOURCE_LIMIT_EXEMPT": "127.0.0.1/32",
    "SWITCHBOARD_SILENCE_PROMPT_S": "0",
    "SWITCHBOARD_SILENCE_HANGUP_S": "0",
}


def take_ingress_nodes(args: list[str]) -> tuple[int, list[str]]:
    """``--ingress-nodes N`` out of the arguments (default 1), and the rest for ``switchboard load``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--ingress-nodes", type=int, default=1)
    known, rest = parser.parse_known_args(args)
    if known.ingress_nodes < 1:
        parser.error("--ingress-nodes must be at least 1")
    return known.ingress_nodes, rest


@contextlib.contextmanager
def load_stack(ingress_nodes: int = 1) -> Iterator[tuple[Stack, Path]]:
    """A fresh load-test stack: its own tansu, the spine services on free ports (``ingress_nodes`` ingress
    processes on one port), credentials in a temporary directory; stopped on exit."""
    with scratch_stack("load", SPINE, LOAD_TEST_ENV, scale={"ingress": ingress_nodes}) as stack:
        print(f"load-test stack up on {stack.http_base} (tansu {stack.bootstrap}; {ingress_nodes} ingress "
              f"process(es))", flush=True)
        yield stack, stack.run_dir


def ingress_metrics(stack: Stack) -> list[tuple[str, dict[str, str]]]:
    """Each ingress process's /metrics (URL, headers), as `switchboard load` reads them."""
    ports: list[int | None] = [w.metrics_port or None for w in stack.workers if w.service.name == "ingress"]
    return run_ingress_metrics(ports, stack.http_base, stack.client_credentials.metrics_headers())


def run(args: list[str]) -> int:
    nodes, load_args = take_ingress_nodes(args)
    with load_stack(nodes) as (stack, run_dir):
        return main(["load", "--url", stack.http_base, "--run-dir", str(run_dir), *load_args])


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
