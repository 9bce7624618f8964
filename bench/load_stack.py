"""A load run on a fresh load-test stack, in one command: the README's "Load testing" figures.

Starts its own tansu and the spine services (ingress, turns, stt, agent, tts) on free loopback ports,
with the settings of a load-test stack (``SWITCHBOARD_MAX_CALLS=1000``, the generator's address exempt
from the per-source limits, no silence prompts) and its credentials in a temporary directory, runs ``switchboard load``
against it with the arguments given, and stops everything. Nothing of ``.switchboard/`` is touched.

    .venv/bin/python bench/load_stack.py --callers 20 --ramp 5 --turns 2 --duration 120
    .venv/bin/python bench/load_stack.py --callers 100 --ramp 10 --duration 30 --silent
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from switchboard.cli import main
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


@contextlib.contextmanager
def load_stack() -> Iterator[tuple[Stack, Path]]:
    """A fresh load-test stack: its own tansu, the spine services on free ports, credentials in a temporary
    directory; stopped on exit."""
    with scratch_stack("load", SPINE, LOAD_TEST_ENV) as stack:
        print(f"load-test stack up on {stack.http_base} (tansu {stack.bootstrap})", flush=True)
        yield stack, stack.run_dir


def run(load_args: list[str]) -> int:
    with load_stack() as (stack, run_dir):
        return main(["load", "--url", stack.http_base, "--run-dir", str(run_dir), *load_args])


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
