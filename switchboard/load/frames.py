"""Caller frames consumed by the pipeline: the turns workers' own counter, before and after a run.

Every Twilio media message is 20 ms of audio (8 kHz → 16 kHz gives 320 samples per 160); the ingress
publishes it in ``audio.in`` records of ``SWITCHBOARD_AUDIO_RECORD_MS`` (one or more 20 ms frames), and
the turns processor counts the 20 ms frames it consumes in
``switchboard_caller_frames_consumed_total{service="turns"}`` (a stack without that counter: its
records, ``switchboard_records_consumed_total{service="turns",topic="audio.in"}``, one frame each). The
difference of that counter (summed over the turns workers) across a run is what the pipeline consumed; frames sent
minus that is what was lost. Why this and not counting the run's call IDs on the bus: it is
what the pipeline actually consumed (not merely what reached the broker), it costs nothing
during the run, and it stays cheap at 500 callers × 50 frames/s, where re-reading the topic
would move a gigabyte through one Python consumer. Its one condition: no other traffic on the
stack during the run (a dedicated load stack, as in tests and ``switchboard up``).
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

from switchboard.load.scenario import FRAME_S  # one Twilio media message

COUNTER = "switchboard_records_consumed_total"
_LINE = re.compile(rf'^{COUNTER}\{{([^}}]*)\}} (\S+)$', re.M)


FRAMES_COUNTER = "switchboard_caller_frames_consumed_total"
_FRAMES_LINE = re.compile(rf'^{FRAMES_COUNTER}\{{([^}}]*)\}} (\S+)$', re.M)


def parse_consumed(text: str, service: str = "turns", topic: str = "audio.in") -> float:
    """20 ms caller frames consumed, in one Prometheus text exposition (0 when absent): the frames counter
    when the worker has it, else its audio.in records (from the days a record was one frame)."""
    frames = [float(v) for labels, v in _FRAMES_LINE.findall(text) if f'service="{service}"' in labels]
    if frames:
        return sum(frames)
    total = 0.0
    for labels, value in _LINE.findall(text):
        if f'service="{service}"' in labels and f'topic="{topic}"' in labels:
            total += float(value)
    return total


BAD_INPUT = "switchboard_bad_input_total"
_BAD = re.compile(rf'^{BAD_INPUT}\{{([^}}]*)\}} (\S+)$', re.M)
# caller audio the ingress read but dropped because the call's backlog to the producer was full (ingress/sendpath.py)
SEND_DROPPED = "switchboard_audio_send_dropped_seconds_total"
_SEND_DROPPED = re.compile(rf'^{SEND_DROPPED}\{{[^}}]*\}} (\S+)$', re.M)


def parse_bad_input(text: str) -> dict[str, float]:
    """The ingress's dropped caller audio by reason, in 20 ms frames: its rejected messages (e.g. audio_too_fast)
    and ``send_backlog``, audio read but dropped at a full send backlog (a stalled broker or an overloaded node)."""
    out: dict[str, float] = {}
    for labels, value in _BAD.findall(text):
        m = re.search(r'reason="([^"]*)"', labels)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(value)
    dropped_s = sum(float(v) for v in _SEND_DROPPED.findall(text))
    if dropped_s:
        out["send_backlog"] = round(dropped_s / FRAME_S)
    return out


def _fetch(url: str, headers: dict[str, str] | None = None) -> str:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=2) as resp:
        return resp.read().decode()


async def ingress_bad_input(sources: list[tuple[str, dict[str, str]]]) -> dict[str, float] | None:
    """The ingress's bad-input counters, summed over its nodes' /metrics (URL and headers each); None when any
    cannot be read (e.g. no metrics token)."""
    total: dict[str, float] = {}
    for url, headers in sources:
        try:
            counts = parse_bad_input(await asyncio.to_thread(_fetch, url, headers))
        except OSError:
            return None
        for reason, n in counts.items():
            total[reason] = total.get(reason, 0.0) + n
    return total


async def consumed(urls: list[str]) -> float | None:
    """Sum over the turns workers' /metrics; None when any of them cannot be read."""
    total = 0.0
    for url in urls:
        try:
            total += parse_consumed(await asyncio.to_thread(_fetch, url))
        except OSError:
            return None
    return total


async def settle(
    urls: list[str], before: float, sent: int, *, quiet_s: float = 5.0, max_s: float = 30.0
) -> float | None:
    """Frames consumed since ``before``, once the workers have caught up: all ``sent`` consumed,
    or the counter still for ``quiet_s``, or ``max_s`` passed (what is missing then is lost)."""
    deadline = time.monotonic() + max_s
    last, since = None, time.monotonic()
    while True:
        now_value = await consumed(urls)
        if now_value is None:
            return None
        delta = now_value - before
        if delta >= sent or time.monotonic() > deadline:
            return delta
        if delta != last:
            last, since = delta, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return delta
        await asyncio.sleep(0.5)
