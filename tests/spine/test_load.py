"""The load generator's pure parts: scenarios from clips, what counts as answered, percentiles,
the baseline thresholds, the loopback rule and the bounds. No broker, no stack."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from switchboard.audio import mulaw_decode
from switchboard.cli import main
from switchboard.load import frames, procs, report
from switchboard.load.caller import CallRecord
from switchboard.load.plot import write_png
from switchboard.load.run import MAX_CALLERS, LoadConfig, LoadError
from switchboard.load.scenario import FRAME_SAMPLES, ScenarioError, build_plan, clip_from_samples, load_clips
from switchboard.load.target import TargetError, parse_target
from tests.conftest import SHARED_AUDIO


def tone(seconds: float, rate: int = 16_000, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def silence(seconds: float, rate: int = 16_000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


# -- scenario -------------------------------------------------------------------


def test_a_clip_becomes_20_ms_mulaw_frames_with_its_speech_onset_and_end_marked():
    clip = clip_from_samples("t", np.concatenate([silence(0.2), tone(1.0), silence(0.3)]), 16_000)
    assert len(clip.payloads) == 75  # 1.5 s of 20 ms frames
    assert all(len(base64.b64decode(p)) == FRAME_SAMPLES for p in clip.payloads)
    assert clip.first_voiced == 10  # 0.2 s of silence = frames 0..9
    assert clip.last_voiced in (59, 60)  # the tone ends at 1.2 s (frame 59), give or take the resampler's delay
    assert np.abs(mulaw_decode(base64.b64decode(clip.payloads[30]))).max() > 4000


def test_a_silent_clip_is_refused_as_not_speech():
    with pytest.raises(ScenarioError, match="not speech"):
        clip_from_samples("quiet", silence(1.0), 16_000)


def test_the_shared_speech_clips_load_with_speech_inside_each():
    clips = load_clips(SHARED_AUDIO)
    assert [c.name for c in clips] == sorted(p.name for p in SHARED_AUDIO.glob("*.wav"))
    for c in clips:
        assert 0 < c.first_voiced < c.last_voiced < len(c.payloads) - 1, c.name
        assert 2.5 < c.seconds < 8, c.name


def test_a_missing_or_empty_clip_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ScenarioError, match="does not exist"):
        load_clips(tmp_path / "nope")
    with pytest.raises(ScenarioError, match=r"no \.wav clips"):
        load_clips(tmp_path)


def test_plan_spreads_starts_over_the_ramp_and_rotates_clips_between_callers():
    clips = [clip_from_samples(n, tone(0.5), 16_000) for n in "abc"]
    plans = build_plan(4, 2.0, clips, 2, barge_in_every=2)
    assert [p.start_s for p in plans] == [0.0, 0.5, 1.0, 1.5]
    assert [[c.name for c in p.turns] for p in plans] == [["a", "b"], ["b", "c"], ["c", "a"], ["a", "b"]]
    assert [p.barge_in for p in plans] == [False, True, False, True]


def test_a_silent_plan_says_nothing_and_never_barges_in():
    plans = build_plan(3, 0.0, [], 5, silent=True, barge_in_every=1)
    assert all(p.silent and not p.turns and not p.barge_in and p.start_s == 0 for p in plans)


def test_a_talking_plan_needs_clips_and_turns():
    with pytest.raises(ScenarioError):
        build_plan(2, 1.0, [], 1)
    with pytest.raises(ScenarioError):
        build_plan(0, 1.0, [clip_from_samples("a", tone(0.5), 16_000)], 1)


# -- what a call counts as ----------------------------------------------------------


def record(**kw) -> CallRecord:
    base = dict(index=0, call_id="CA1", silent=False, planned_turns=2, started_t=0.0, ended_t=10.0,
                connect_s=0.05, greeting_s=0.2, frames_sent=500)
    return CallRecord(**{**base, **kw})


def test_a_caller_is_answered_when_greeted_and_every_turn_it_said_was_answered():
    assert record(turns_spoken=2, turns_answered=2).answered
    assert not record(turns_spoken=2, turns_answered=1).answered
    assert not record(turns_spoken=2, turns_answered=2, greeting_s=None).answered
    assert not record(turns_spoken=1, turns_answered=1, error="cut_by_duration", ended_by="cap").answered


def test_an_agent_hanging_up_after_answering_still_counts_as_answered():
    # the offline policy hands off (and ends the call) after three misunderstood turns
    assert record(planned_turns=4, turns_spoken=3, turns_answered=3, ended_by="agent", close_code=1000).answered


def test_a_silent_caller_is_answered_by_its_greeting():
    assert record(silent=True, planned_turns=0).answered
    assert not record(silent=True, planned_turns=0, greeting_s=None).answered


def test_a_refused_call_is_not_admitted_and_its_frames_are_not_counted_as_lost():
    refused = record(close_code=1013, error="rejected: over capacity", frames_sent=7, greeting_s=None)
    ok = record(turns_spoken=2, turns_answered=2, frames_sent=100)
    result = report.summarize([refused, ok], {}, frames_consumed=100, frames_method="test", cpu=None, wall_s=10,
                              timeline=[])
    s = result["summary"]
    assert s["frames"] == {"sent": 100, "consumed": 100, "lost": 0, "method": "test"}
    assert s["admitted"] == 1 and s["answered"] == 1 and s["answered_ratio"] == 0.5
    assert s["errors"] == {"rejected": 1}


# -- percentiles, the result and the baseline --------------------------------------------


def test_percentiles_interpolate_between_samples():
    p = report.percentiles([float(i) for i in range(1, 101)])
    assert p == {"count": 100, "p50": 50.5, "p95": 95.05, "p99": 99.01, "max": 100.0}
    assert report.percentiles([]) == {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}


def result_with(response_p95: float | None = 1.0, lost: int | None = 0, answered_ratio: float = 1.0) -> dict:
    lat = {k: report.percentiles([]) for k in (*report.LATENCIES, "connect")}
    lat["response"] = {"count": 10, "p50": 0.8, "p95": response_p95, "p99": response_p95, "max": response_p95}
    return {"format": report.FORMAT, "config": {}, "summary": {
        "latency_s": lat, "frames": {"sent": 1000, "consumed": None if lost is None else 1000 - lost, "lost": lost,
                                     "method": "test"},
        "answered_ratio": answered_ratio}}


def test_baseline_fails_on_p95_more_than_25_percent_slower():
    assert report.compare(result_with(1.30), result_with(1.0)) == [
        "response p95 1300 ms vs baseline 1000 ms (+30 %, limit +25%)"]
    assert report.compare(result_with(1.20), result_with(1.0)) == []


def test_baseline_ignores_a_few_milliseconds_on_a_small_latency():
    assert report.compare(result_with(0.140), result_with(0.100)) == []  # +40 %, but only 40 ms
    assert report.compare(result_with(0.160), result_with(0.100)) != []


def test_any_lost_frame_is_a_regression_whatever_the_baseline():
    assert report.compare(result_with(lost=1), result_with(lost=1)) == ["1 caller frame(s) lost (limit 0)"]
    assert report.compare(result_with(lost=None), result_with(lost=0)) == []  # not measured is not lost


def test_baseline_fails_when_5_points_fewer_callers_are_answered():
    assert report.compare(result_with(answered_ratio=0.94), result_with(answered_ratio=1.0)) != []
    assert report.compare(result_with(answered_ratio=0.96), result_with(answered_ratio=1.0)) == []


def test_a_baseline_that_is_not_a_load_result_is_refused_plainly(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a switchboard load result"):
        report.load_json(bad)
    with pytest.raises(ValueError, match="cannot read baseline"):
        report.load_json(tmp_path / "missing.json")


def test_the_result_round_trips_as_json_and_draws_a_png(tmp_path):
    calls = [record(index=i, call_id=f"CA{i}", started_t=i * 0.5, ended_t=20 + i, turns_spoken=2, turns_answered=2,
                    responses=[(5.0 + i, 1.0 + i / 10), (12.0 + i, 1.2)], barge_ins=[(3.0, 0.3)] if i % 2 else [])
             for i in range(6)]
    timeline = [{"t": float(t), "active": min(6, t * 2)} for t in range(25)]
    cpu = {"turns": {"cpu_s": 3.0, "processes": 1}}
    result = report.summarize(calls, {"silent": False, "turns": 2, "ramp": 3.0, "duration": 60}, frames_consumed=3000,
                              frames_method="test", cpu=cpu, wall_s=25.0, timeline=timeline)
    path = tmp_path / "r.json"
    report.write_json(result, path)
    again = report.load_json(path)
    assert again["summary"]["latency_s"]["response"]["count"] == 12
    assert again["summary"]["cpu"]["turns"]["per_call_second"] == round(3.0 / sum(20 + i - i * 0.5 for i in range(6)),
                                                                        5)
    assert report.compare(again, again) == []
    text = report.text(again)
    assert "response" in text and "frames: sent 3000, consumed 3000, lost 0" in text
    write_png(again, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- where load may go, and how much ------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:9000", "ws://127.0.0.5:1/twilio/media",
                                 "http://[::1]:8080"])
def test_loopback_targets_are_accepted(url):
    t = parse_target(url)
    assert t.media_url.endswith("/twilio/media") and t.http_base.startswith("http://")


@pytest.mark.parametrize("url", ["http://10.0.0.1:8080", "https://example.com", "ws://192.168.1.2/twilio/media"])
def test_other_targets_are_refused_unless_allowed(url):
    with pytest.raises(TargetError, match="--allow-remote"):
        parse_target(url)
    assert parse_target(url, allow_remote=True).host in url


def test_a_target_that_is_not_a_url_is_refused():
    with pytest.raises(TargetError, match="not an http"):
        parse_target("127.0.0.1:8080")


@pytest.mark.parametrize("change", [dict(callers=MAX_CALLERS + 1), dict(callers=0), dict(duration=601.0),
                                    dict(ramp=60.0), dict(turns=0), dict(reply_timeout=0.5)])
def test_runs_stay_within_their_bounds(change):
    cfg = LoadConfig(**{**dict(callers=20, ramp=5.0, duration=60.0, turns=2), **change})
    with pytest.raises(LoadError):
        cfg.check()


def test_the_command_refuses_a_remote_target_with_a_reason_and_no_traceback(capsys):
    assert main(["load", "--url", "http://10.1.2.3:8080", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not a loopback address" in err and "Traceback" not in err


def test_the_command_refuses_too_many_callers(capsys):
    assert main(["load", "--callers", "5000", "--no-progress"]) == 2
    assert "--callers must be 1…1000" in capsys.readouterr().err


def test_the_command_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["load", "--help"])
    out = capsys.readouterr().out
    for flag in ("--callers", "--ramp", "--duration", "--turns", "--clips", "--silent", "--url", "--allow-remote",
                 "--json", "--png", "--baseline", "--channel", "--barge-in-every", "--reply-timeout"):
        assert flag in out
    assert "25%" in out and "any lost frame" in out


# -- frames consumed and CPU ---------------------------------------------------------


def test_frames_consumed_are_read_from_the_turns_counter_of_audio_in_only():
    text = "\n".join([
        '# TYPE switchboard_records_consumed_total counter',
        'switchboard_records_consumed_total{service="turns",topic="audio.in"} 1234.0',
        'switchboard_records_consumed_total{service="turns",topic="calls"} 7.0',
        'switchboard_records_consumed_total{service="stt",topic="audio.in"} 99.0',
    ])
    assert frames.parse_consumed(text) == 1234.0
    assert frames.parse_bad_input('switchboard_bad_input_total{channel="twilio",reason="audio_too_fast"} 3.0') == {
        "audio_too_fast": 3.0}
    dropped = "\n".join([
        'switchboard_audio_send_dropped_seconds_total{channel="twilio"} 1.5',
        'switchboard_audio_send_dropped_seconds_total{channel="acs"} 0.5',
        'switchboard_audio_send_dropped_seconds_created{channel="twilio"} 1.795e+09',
    ])
    assert frames.parse_bad_input(dropped) == {"send_backlog": 100}, "2 s of audio dropped at the backlog: 100 frames"


def test_cpu_seconds_of_a_process_come_from_proc(tmp_path):
    burn = sum(i * i for i in range(2_000_000))  # noqa: F841 - spend some CPU
    assert procs.cpu_seconds(os.getpid()) > 0
    assert procs.cpu_seconds(2**22 + 12345) is None  # no such process


def test_no_stack_is_found_behind_a_port_nobody_serves():
    assert procs.discover(1) == []


def test_default_clip_folder_is_the_shared_audio():
    from switchboard.load.command import DEFAULT_CLIPS

    assert Path(DEFAULT_CLIPS).resolve() == SHARED_AUDIO.resolve()


# -- one caller against a scripted Twilio peer (what it measures, from its own socket) ---------------


class ScriptedIngress:
    """A Twilio media-stream peer that plays a greeting, clears on speech over it (then sends one stale frame,
    as a real playout loop may), and answers each turn a fixed delay after the caller falls silent."""

    def __init__(self, greeting_frames: int, answer_delay_s: float = 0.4, answer_mid_speech: int = 0,
                 filler_frames: int = 0) -> None:
        self.greeting_frames, self.answer_delay_s = greeting_frames, answer_delay_s
        self.filler_frames = filler_frames  # >0: a filler of this many frames (and its mark) before each answer
        self.answer_mid_speech = answer_mid_speech  # >0: answer after this many voiced frames, not after the turn
        self.received = 0
        self.events: list[str] = []

    async def handler(self, ws) -> None:
        import asyncio

        from switchboard.audio import mulaw_encode

        frame = json.dumps({"event": "media", "streamSid": "MZ1", "media": {
            "payload": base64.b64encode(mulaw_encode(tone(0.02, 8000))).decode()}})
        state = {"playing": False, "voiced": 0, "quiet": 0, "replies": 0}

        async def reply(frames: int, mark: str = "") -> None:
            state["playing"] = True
            for _ in range(frames):
                if not state["playing"]:
                    return
                await ws.send(frame)
                await asyncio.sleep(0.02)
            state["playing"] = False
            name = mark or f"reply-{state['replies']}"
            await ws.send(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": name}}))
            state["replies"] += 0 if mark else 1

        async def filler_then_answer() -> None:  # as the ingress does when an answer is late (FILLER_MARK)
            await reply(self.filler_frames, mark="filler")
            await asyncio.sleep(self.answer_delay_s)
            await reply(10)

        tasks = []
        async for raw in ws:
            msg = json.loads(raw)
            self.events.append(msg["event"])
            if msg["event"] == "start":
                tasks.append(asyncio.create_task(reply(self.greeting_frames)))
            elif msg["event"] == "media":
                self.received += 1
                loud = np.abs(mulaw_decode(base64.b64decode(msg["media"]["payload"]))).max() > 1000
                if loud:
                    state["voiced"] += 1
                    state["quiet"] = 0
                    if state["voiced"] == self.answer_mid_speech and not state["playing"]:
                        tasks.append(asyncio.create_task(reply(10)))
                    elif state["playing"] and state["voiced"] == 5:  # barge-in after 100 ms of speech
                        state["playing"] = False
                        await ws.send(json.dumps({"event": "clear", "streamSid": "MZ1"}))
                        await ws.send(frame)  # a frame cut before the clear, sent after it
                elif state["voiced"]:
                    state["quiet"] += 1
                    if state["quiet"] == 15 and not self.answer_mid_speech:  # 300 ms of silence ends the turn
                        state["voiced"] = 0
                        if self.filler_frames:
                            tasks.append(asyncio.create_task(filler_then_answer()))
                            continue
                        await asyncio.sleep(self.answer_delay_s)
                        tasks.append(asyncio.create_task(reply(10)))
            elif msg["event"] == "stop":
                break


async def scripted_call(server: ScriptedIngress, plan, monkeypatch):
    import asyncio

    import websockets

    from switchboard.broker import free_port
    from switchboard.load import caller as caller_mod
    from switchboard.load.caller import LoadCaller

    port = free_port()

    async def open_plain(target, call_sid, number, http):
        return await websockets.connect(target.media_url, max_size=None), {"caller_number": number}

    monkeypatch.setattr(caller_mod, "open_stream", open_plain)
    async with websockets.serve(server.handler, "127.0.0.1", port):
        target = parse_target(f"http://127.0.0.1:{port}")
        c = LoadCaller(plan, target, time.monotonic(), asyncio.Event(), None, reply_timeout_s=5)
        return await c.run()


async def test_a_caller_measures_greeting_and_answer_and_hangs_up_after_its_script(monkeypatch):
    server = ScriptedIngress(greeting_frames=10)
    speech = clip_from_samples("a", np.concatenate([tone(0.4), silence(0.1)]), 16_000)
    [plan] = build_plan(1, 0.0, [speech], 1)
    rec = await scripted_call(server, plan, monkeypatch)
    assert rec.answered and rec.error == "" and rec.ended_by == "caller"
    assert rec.greeting_s is not None and rec.greeting_s < 1.0
    [(_, response)] = rec.responses
    assert response >= 0.3 + 0.4 - 0.1  # at least the turn's silence and the peer's delay: the answer, not the greeting
    assert rec.frames_sent == server.received
    assert server.events[:2] == ["connected", "start"] and server.events[-1] == "stop"
    assert server.events.count("mark") == 2  # both marks echoed, as Twilio does once played
    assert (rec.agent_frames, rec.marks, rec.clears) == (20, 2, 0)


async def test_the_filler_is_not_the_answer_the_answer_after_it_is(monkeypatch):
    server = ScriptedIngress(greeting_frames=10, filler_frames=25)  # "One moment, please.": 0.5 s, then its mark
    speech = clip_from_samples("a", np.concatenate([tone(0.4), silence(0.1)]), 16_000)
    [plan] = build_plan(1, 0.0, [speech], 1)
    rec = await scripted_call(server, plan, monkeypatch)
    assert rec.answered and rec.fillers == 1
    [(_, response)] = rec.responses
    assert response >= 0.3 + 0.5 + 0.4 - 0.1, "the filler was taken for the answer"
    assert (rec.agent_frames, rec.marks) == (45, 2)  # greeting, filler, answer; the filler's mark ends no reply


async def test_a_barge_in_is_timed_to_the_clear_and_a_stale_frame_is_not_the_answer(monkeypatch):
    server = ScriptedIngress(greeting_frames=250)  # a 5 s greeting to talk over
    speech = clip_from_samples("a", tone(0.6), 16_000)
    [plan] = build_plan(1, 0.0, [speech], 1, barge_in_every=1)
    rec = await scripted_call(server, plan, monkeypatch)
    assert plan.barge_in and rec.answered and rec.clears == 1 and rec.marks == 1  # the greeting's mark never came
    [(_, reaction)] = rec.barge_ins
    assert 0.08 <= reaction < 1.0  # 100 ms of speech before the peer cleared
    [(_, response)] = rec.responses
    assert response >= 0.3 + 0.4 - 0.1, "the frame sent after the clear was taken for the answer"


def test_the_command_saves_its_result_and_exits_1_on_a_regression_against_the_baseline(tmp_path, monkeypatch, capsys):
    from switchboard.load import command

    def made(latency: float) -> dict:
        calls = [record(index=i, turns_spoken=1, planned_turns=1, turns_answered=1, responses=[(5.0, latency)])
                 for i in range(4)]
        config = {"callers": 4, "silent": False, "turns": 1, "ramp": 5.0, "duration": 60.0}
        return report.summarize(calls, config, frames_consumed=2000, frames_method="test", cpu=None, wall_s=20.0,
                                timeline=[{"t": 0.0, "active": 4}])

    baseline = tmp_path / "base.json"
    report.write_json(made(1.0), baseline)
    runs = iter([made(1.1), made(2.0)])

    async def fake_run(cfg, plans, target, progress=False):  # the stack is not what is under test here
        return next(runs)

    monkeypatch.setattr(command, "run_load", fake_run)
    args = ["load", "--callers", "4", "--turns", "1", "--no-progress", "--baseline", str(baseline)]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    assert "no regression" in capsys.readouterr().out
    assert (tmp_path / "a.json").is_file() and (tmp_path / "a.png").is_file()
    assert main([*args, "--json", str(tmp_path / "b.json")]) == 1
    assert "response p95 2000 ms vs baseline 1000 ms" in capsys.readouterr().err


async def test_an_answer_that_starts_while_the_caller_still_speaks_counts_as_answered_early(monkeypatch):
    server = ScriptedIngress(greeting_frames=10, answer_mid_speech=10)  # replies 200 ms into a 1 s utterance
    speech = clip_from_samples("a", tone(1.0), 16_000)
    [plan] = build_plan(1, 0.0, [speech], 1)
    rec = await scripted_call(server, plan, monkeypatch)
    assert rec.answered and rec.turns_answered == 1 and rec.early_answers == 1
    assert rec.responses == [], "a reply begun before the end of speech has no response latency"
