"""Barge-in reaction and false interruptions, over Twilio on the embedded stack (README "Interruptions").

Starts its own tansu and the spine services (ingress, turns, stt, agent, tts) on free loopback ports (credentials in
a temporary directory; the filler is off, so the first agent audio after the question is the answer), then, one call
at a time: the caller (Piper's voice) asks for the opening hours and, ``--into`` seconds into the answer, says one of
the interjections below: real interruptions, backchannels, or a cough (a 150 ms burst of shaped noise).

Prints, per kind, the barge-in reaction (caller speech onset → the clear on the socket, the pause's clear when the
reply was paused first): measured at the caller (the interjection's first loud sample sent → the ``clear`` received)
and at the ingress (PLAYBACK_PAUSED / PLAYBACK_CLEARED, from the onset frame's arrival), p50/p95; and what became of
each interjection: an interruption should be cleared and answered; a backchannel or cough resumed (or never paused),
heard to the end and not answered.

    .venv/bin/python bench/barge_in.py                 # 24 calls: 12 interruptions, 12 backchannels/coughs
    .venv/bin/python bench/barge_in.py --calls 8 --json /tmp/barge_in.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's tests/ holds the caller's speech

from switchboard.audio import BUS_RATE
from switchboard.caller import TwilioCaller, Utterance
from switchboard.records import AgentReply, CallEvent, CallEventKind, PlaybackCommand, ReplyKind
from switchboard.stack import Stack, scratch_stack
from switchboard.topics import CALLS, PLAYBACK, REPLIES
from switchboard.watch import CallRecords
from tests.spine.pauses import cough

SPINE = ("ingress", "turns", "stt", "agent", "tts")
INTERRUPTIONS = ("Wait, I need to book Saturday instead.", "Sorry, can I cancel my appointment?",
                 "Hold on, I want to book Monday.")
BACKCHANNELS = ("Uh-huh.", "Mm-hmm.", "Yeah.", "Okay.", "Right.", "cough")
REACTION = re.compile(r"reaction (\d+) ms")


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    with scratch_stack("barge-in", SPINE, {"SWITCHBOARD_FILLER_AFTER_MS": "0"}) as s:
        yield s


def onset_s(samples: np.ndarray) -> float:
    """Where the sound starts: the first 10 ms window louder than speech's quietest (mean |x| > 300)."""
    w = BUS_RATE // 100
    energy = np.abs(samples[: len(samples) // w * w].astype(np.float64)).reshape(-1, w).mean(axis=1)
    loud = np.nonzero(energy > 300)[0]
    return float(loud[0]) * w / BUS_RATE if len(loud) else 0.0


async def one_call(s: Stack, piper: Any, question: np.ndarray, label: str, audio: np.ndarray,
                   into_s: float) -> dict[str, Any]:
    settings = s.settings.model_copy(update={"kafka_bootstrap": s.bootstrap})
    caller = TwilioCaller(f"ws://127.0.0.1:{s.ingress_port}/twilio/media", settings, credentials=s.client_credentials)
    async with CallRecords(settings, caller.call_id, (CALLS, REPLIES, PLAYBACK)) as w:
        await caller.run([Utterance(question, "hours"), Utterance(audio, label, over_reply_s=into_s)], timeout_s=30)
    replies: dict[int, list[str]] = {}
    for r in w.records:
        if isinstance(r, AgentReply) and r.kind is ReplyKind.SENTENCE and r.turn_seq > 0:
            replies.setdefault(r.turn_seq, []).append(r.text)
    hours = min((t for t, texts in replies.items() if any("open" in x for x in texts)), default=None)
    events = [r for r in w.records if isinstance(r, CallEvent) and r.turn_seq == hours]
    kinds = {e.kind for e in events}
    first_stop = next((e for e in events if e.kind in (CallEventKind.PLAYBACK_PAUSED, CallEventKind.PLAYBACK_CLEARED)),
                      None)
    # the first command: its ts_us is when turns produced it, speech_onset_us the onset frame's arrival at the ingress
    command = next((r for r in w.records if isinstance(r, PlaybackCommand) and r.through_turn_seq >= (hours or 0)),
                   None)
    spoke = caller.result.spoke_at[-1] + onset_s(audio)
    clears = [t - spoke for t in caller.result.clear_times if t >= spoke - 0.05]
    cleared = next((e for e in events if e.kind is CallEventKind.PLAYBACK_CLEARED), None)
    return {
        "label": label,
        "paused": CallEventKind.PLAYBACK_PAUSED in kinds,
        "resumed": CallEventKind.PLAYBACK_RESUMED in kinds,
        "cleared": cleared is not None,
        "finished": CallEventKind.PLAYBACK_FINISHED in kinds,
        "answered": any(t > hours for t in replies) if hours is not None else None,
        "reply_mark_echoed": f"reply-{hours}" in caller.result.marks,
        "reaction_caller_ms": round(clears[0] * 1000) if clears else None,
        "reaction_ingress_ms": int(m.group(1)) if (m := REACTION.search(first_stop.reason or "" if first_stop else ""))
        else None,
        "in_turns_ms": round((command.ts_us - command.speech_onset_us) / 1000) if command else None,
        "heard": dict(cleared.attributes) if cleared else None,
    }


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def report(rows: list[dict[str, Any]]) -> None:
    for kind, want in (("interruption", True), ("backchannel", False)):
        group = [r for r in rows if (r["label"] in INTERRUPTIONS) == want]
        if not group:
            continue
        print(f"\n{kind}s: {len(group)}")
        for key, what in (("reaction_caller_ms", "reaction at the caller "), ("reaction_ingress_ms",
                          "reaction at the ingress"), ("in_turns_ms", "  of which onset → command produced")):
            vals = [r[key] for r in group if r[key] is not None]
            if vals:
                print(f"  {what}: n={len(vals)} p50={pct(vals, 50):.0f} ms "
                      f"p95={pct(vals, 95):.0f} ms max={max(vals):.0f} ms")
        if want:
            ok = sum(r["cleared"] and r["answered"] for r in group)
            print(f"  cleared and answered: {ok}/{len(group)}")
            for r in group:
                if r["heard"]:
                    print(f"    {r['label']!r}: heard {r['heard']}")
        else:
            for label in BACKCHANNELS:
                sub = [r for r in group if r["label"] == label]
                if sub:
                    paused = sum(r["paused"] for r in sub)
                    ok = sum((not r["cleared"]) and r["reply_mark_echoed"] and not r["answered"] for r in sub)
                    resumed = sum(r["resumed"] for r in sub)
                    print(f"  {label!r}: {len(sub)} said, paused {paused}, resumed {resumed}, "
                          f"heard to the end and not answered {ok}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=24, help="calls, half interruptions, half backchannels/coughs")
    ap.add_argument("--into", type=float, default=1.5, help="seconds into the answer the caller speaks")
    ap.add_argument("--json", type=Path, help="write every call's outcome here")
    args = ap.parse_args()
    from processors.tts.piper import PiperEngine

    piper = PiperEngine()
    say = piper._synthesize  # text → bus-rate audio in the agent's voice (the caller's here)
    question = say("What are your opening hours?")
    script = []
    for i in range(args.calls):
        kinds = INTERRUPTIONS if i % 2 == 0 else BACKCHANNELS
        label = kinds[(i // 2) % len(kinds)]
        script.append((label, cough() if label == "cough" else say(label)))
    rows = []
    with stack() as s:
        started = time.monotonic()
        for i, (label, audio) in enumerate(script):
            row = await one_call(s, piper, question, label, audio, args.into)
            rows.append(row)
            print(f"[{i + 1}/{len(script)}] {label!r}: paused={row['paused']} resumed={row['resumed']} "
                  f"cleared={row['cleared']} answered={row['answered']} reaction caller/ingress "
                  f"{row['reaction_caller_ms']}/{row['reaction_ingress_ms']} ms", flush=True)
        print(f"\n{len(rows)} calls in {time.monotonic() - started:.0f} s")
    report(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
