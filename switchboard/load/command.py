"""``switchboard load``: the command line of the load generator."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from switchboard.load import report
from switchboard.load.run import MAX_CALLERS, MAX_DURATION_S, LoadConfig, LoadError, default_output, run_load
from switchboard.load.scenario import ScenarioError, build_plan, load_clips
from switchboard.load.target import TargetError, parse_target, with_credentials

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLIPS = ROOT.parent / "shared" / "audio"
EXIT_REGRESSION = 1
EXIT_USAGE = 2


def _event_loop_runner() -> asyncio.Runner:
    """uvloop when installed: the generator's own overhead per frame is what limits it at 500 callers."""
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        return asyncio.Runner()


def cmd_load(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"switchboard load: {message}", file=sys.stderr)
        return EXIT_USAGE

    cfg = LoadConfig(
        callers=args.callers, ramp=args.ramp, duration=args.duration, turns=args.turns, silent=args.silent,
        barge_in_every=0 if args.silent else args.barge_in_every, reply_timeout=args.reply_timeout,
        clips=str(args.clips), url=args.url, turns_metrics=args.turns_metrics or [],
    )
    try:
        cfg.check()
        baseline = report.load_json(args.baseline) if args.baseline else None
        target = with_credentials(parse_target(args.url, allow_remote=args.allow_remote), args.run_dir)
        clips = [] if args.silent else load_clips(args.clips)
        plans = build_plan(cfg.callers, cfg.ramp, clips, cfg.turns, silent=cfg.silent,
                           barge_in_every=cfg.barge_in_every)
    except (LoadError, ScenarioError, TargetError, ValueError) as exc:
        return fail(str(exc))
    with _event_loop_runner() as runner:
        result = runner.run(run_load(cfg, plans, target, progress=not args.no_progress))
    json_path = args.json or default_output(ROOT, "json")
    png_path = args.png or json_path.with_suffix(".png")
    report.write_json(result, json_path)
    from switchboard.load.plot import write_png

    write_png(result, png_path)
    print(report.text(result))
    print(f"result: {json_path}\nchart:  {png_path}")
    if baseline is not None:
        differ = [k for k in ("callers", "silent", "turns", "ramp") if baseline["config"].get(k) != result["config"][k]]
        if differ:
            print(f"warning: the baseline was run with other {', '.join(differ)}: compare like with like",
                  file=sys.stderr)
        regressions = report.compare(result, baseline)
        if regressions:
            print(f"REGRESSION against {args.baseline}:", file=sys.stderr)
            for line in regressions:
                print(f"  {line}", file=sys.stderr)
            return EXIT_REGRESSION
        print(f"no regression against {args.baseline}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "load",
        help="load generator: many simulated Twilio callers against a running stack, with latency percentiles",
        description=(
            "Dial N callers over the real Twilio Media Streams protocol (signed like Twilio when the ingress "
            "checks signatures), started along a ramp, each saying real speech clips in a scripted conversation "
            "(or only silence with --silent), and measure on the caller's side: greeting latency (start sent → "
            "first agent audio), response latency (last voiced frame sent → first audio of the answer) and "
            "barge-in reaction (speech onset over agent audio → clear received), as p50/p95/p99; frames sent "
            "versus consumed by the turns workers; errors; CPU per service of a local stack. Prints a summary, "
            "saves a JSON result and a PNG chart. Bounded: at most "
            f"{MAX_CALLERS} callers and {MAX_DURATION_S:.0f} s, loopback only unless --allow-remote. "
            "Exit status: 0 done, 1 regression against --baseline, 2 bad arguments."
        ),
        epilog=(
            f"--baseline regression thresholds: response, greeting or barge-in p95 more than "
            f"{report.LATENCY_P95_REL:.0%} (and {report.LATENCY_FLOOR_S * 1000:.0f} ms) above the baseline's; "
            f"any lost frame; the share of callers answered more than {report.ANSWERED_DROP * 100:.0f} points "
            "below the baseline's."
        ),
    )
    p.add_argument("--callers", type=int, default=20, metavar="N",
                   help=f"number of calls to make, 1…{MAX_CALLERS} (default 20)")
    p.add_argument("--ramp", type=float, default=5.0, metavar="S",
                   help="spread the call starts evenly over S seconds (default 5; 0: all at once)")
    p.add_argument("--duration", type=float, default=60.0, metavar="S",
                   help=f"hard cap on the run in seconds, at most {MAX_DURATION_S:.0f}: calls still open then are "
                   "hung up (silent callers stay on until then) (default 60)")
    p.add_argument("--turns", type=int, default=2, metavar="K",
                   help="clips each talking caller says, waiting for the agent's answer after each (default 2)")
    p.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, metavar="DIR",
                   help="folder of speech clips (16-bit mono WAV), said in turn by the callers "
                   "(default ../shared/audio)")
    p.add_argument("--silent", action="store_true",
                   help="callers say nothing: they only keep the line open with silence frames until --duration")
    p.add_argument("--barge-in-every", type=int, default=4, metavar="M",
                   help="every M-th talking caller starts its first clip 1 s into the greeting, to measure "
                   "barge-in reaction (default 4; 0: never)")
    p.add_argument("--reply-timeout", type=float, default=20.0, metavar="S",
                   help="how long a caller waits for the greeting or an answer before moving on (default 20)")
    p.add_argument("--url", default="http://127.0.0.1:8080",
                   help="the ingress: http(s)://host:port, or its ws(s)://host:port/twilio/media "
                   "(default http://127.0.0.1:8080)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a target that is not a loopback address (the same bounds still apply)")
    p.add_argument("--channel", choices=["twilio"], default="twilio",
                   help="wire protocol of the callers (twilio, the only one so far)")
    p.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                   help="where `switchboard up` keeps the generated credentials (default .switchboard)")
    p.add_argument("--turns-metrics", action="append", metavar="URL",
                   help="/metrics URL of a turns worker, for frames consumed (repeatable; default: found from the "
                   "local stack's processes)")
    p.add_argument("--json", type=Path, metavar="FILE",
                   help="write the result here (default .switchboard/load/<UTC time>.json)")
    p.add_argument("--png", type=Path, metavar="FILE",
                   help="write the chart here (default: the JSON path with .png)")
    p.add_argument("--baseline", type=Path, metavar="FILE",
                   help="a previous --json result: exit 1 on a regression beyond the thresholds below")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway when not a TTY)")
    p.set_defaults(func=cmd_load)
