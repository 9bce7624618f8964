"""Where one service's CPU goes under load, sampled by py-spy from the running process (no profiler inside it).

Runs `switchboard load` on a fresh load-test stack (bench/load_stack.py) with the arguments given, attaches py-spy
to the chosen service for a window in the middle of the run, and prints each function's share of the samples
(inclusive: the function and what it calls) and the hottest lines. Unlike bench/ingress_profile.py (cProfile on the
standard asyncio loop, in one process) this sees the service as it runs in production, on uvloop, and costs it
little, so the shares are the ones to optimise against. py-spy comes with the test extras (`scripts/setup.sh test`).

    .venv/bin/python bench/stack_profile.py --service ingress --start 20 --seconds 15 -- --callers 100 --ramp 10 \\
        --duration 40 --silent
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from load_stack import load_stack  # bench/ is on the path when this script runs

from switchboard.cli import main


def shares(raw: str) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """py-spy's collapsed stacks ("frame;frame;… count" per line) → (samples, inclusive by function, by line)."""
    total, inclusive, lines = 0, collections.Counter[str](), collections.Counter[str]()
    for row in raw.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        # "func (path/file.py:line)" → "func (file.py)", counted once per sample however deep it recurses
        for name in {_function(f) for f in frames}:
            inclusive[name] += n
        lines[_line(frames[-1])] += n
    return total, inclusive, lines


FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")  # py-spy's "func (path:line)"


def _function(frame: str) -> str:
    m = FRAME.match(frame)
    return f"{m['func']} ({m['path'].rsplit('/', 1)[-1]})" if m else frame


def _line(frame: str) -> str:
    m = FRAME.match(frame)
    return f"{m['func']} ({m['path'].rsplit('/', 1)[-1]}:{m['line']})" if m else frame


def sample(pid: int, start_s: float, seconds: int, rate: int, out: Path, done: threading.Event) -> None:
    time.sleep(start_s)
    spy = subprocess.run([py_spy(), "record", "-p", str(pid), "-d", str(seconds), "-r", str(rate), "-f", "raw",
                          "-o", str(out), "--nonblocking"], check=False, capture_output=True, text=True)
    if spy.returncode:
        print(f"py-spy exited {spy.returncode}: {spy.stderr.strip()[-500:]}", file=sys.stderr)
    done.set()


def py_spy() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Arguments after -- go to `switchboard load`.")
    parser.add_argument("--service", default="ingress", help="ingress, turns, stt, agent or tts (default ingress)")
    parser.add_argument("--start", type=float, default=20.0, help="seconds into the run to start sampling")
    parser.add_argument("--seconds", type=int, default=15, help="how long to sample (whole seconds)")
    parser.add_argument("--rate", type=int, default=200, help="samples a second")
    parser.add_argument("--top", type=int, default=40, help="functions and lines to print")
    args, load_args = parser.parse_known_args(argv)
    load_args = [a for a in load_args if a != "--"]
    if not Path(py_spy()).exists():
        print("py-spy not found: install the test extras (scripts/setup.sh test)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, load_stack() as (stack, run_dir):
        workers = [w for w in stack.workers if w.service.name == args.service]
        if not workers:
            print(f"no {args.service} process in the load-test stack", file=sys.stderr)
            return 2
        out, done = Path(tmp) / "stacks.txt", threading.Event()
        threading.Thread(target=sample, args=(workers[0].process.pid, args.start, args.seconds, args.rate, out, done),
                         daemon=True).start()
        code = main(["load", "--url", stack.http_base, "--run-dir", str(run_dir), *load_args])
        if not done.wait(args.start + args.seconds + 30) or not out.exists():
            print("py-spy took no samples (was the run shorter than --start + --seconds?)", file=sys.stderr)
            return 1
        total, inclusive, lines = shares(out.read_text())
    print(f"\n{args.service}: {total} samples over {args.seconds:g} s from {args.start:g} s into the run")
    print("share of samples, inclusive (the function and what it calls):")
    for name, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f} %  {name}")
    print("hottest lines (self):")
    for name, n in lines.most_common(args.top // 2):
        print(f"  {100 * n / total:5.1f} %  {name}")
    return code


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
