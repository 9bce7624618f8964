"""A modest load run on the real stack, as CI runs it: 20 callers saying real speech clips over the
signed Twilio protocol, starts spread over 5 s. Every caller must be answered and no caller frame
lost. No timing assertions here: latency targets belong to ``switchboard load`` runs (README)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from switchboard.cli import main
from switchboard.stack import Stack
from tests.conftest import SHARED_AUDIO
from tests.pipeline import running_stack

pytestmark = pytest.mark.slow
SPINE = ("ingress", "turns", "stt", "agent", "tts")
CALLERS = 20


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory) -> Iterator[Stack]:
    # A load-test stack exempts the generator's address from the per-source limits (20 open calls per address).
    with running_stack(broker, tmp_path_factory.mktemp("load-stack"), only=SPINE,
                       SWITCHBOARD_SOURCE_LIMIT_EXEMPT="127.0.0.1/32") as s:
        yield s


@pytest.fixture(scope="module")
def run(stack, tmp_path_factory) -> tuple[int, dict, object]:
    out = tmp_path_factory.mktemp("load")
    code = main([
        "load", "--url", stack.http_base, "--run-dir", str(stack.run_dir), "--callers", str(CALLERS),
        "--ramp", "5", "--turns", "1", "--barge-in-every", "4", "--clips", str(SHARED_AUDIO),
        # a generous cap and reply timeout: this run checks that nothing is lost, not how fast
        "--duration", "100", "--reply-timeout", "60",
        "--json", str(out / "run.json"), "--png", str(out / "run.png"), "--no-progress",
    ])
    return code, json.loads((out / "run.json").read_text()), out


def test_the_run_completes_and_saves_its_result_and_chart(run):
    code, result, out = run
    assert code == 0
    assert (out / "run.png").read_bytes()[:4] == b"\x89PNG"
    assert result["config"]["signed"], "the callers went in through the signed Twilio handshake"


def test_every_caller_is_answered(run):
    _, result, _ = run
    s = result["summary"]
    unanswered = [(c["index"], c["error"], c["close_code"], c["greeting_s"], c["turns_answered"])
                  for c in result["calls"] if not (c["greeting_s"] is not None and c["turns_answered"] == 1)]
    assert s["answered"] == CALLERS, unanswered
    assert s["turns_answered"] == s["turns_spoken"] == CALLERS
    assert s["latency_s"]["response"]["count"] == CALLERS
    assert s["latency_s"]["greeting"]["count"] == CALLERS


def test_no_caller_frame_is_lost(run):
    _, result, _ = run
    f = result["summary"]["frames"]
    assert f["sent"] > CALLERS * 50 * 5, "each caller sent at least its greeting wait and a clip"
    assert f["consumed"] == f["sent"] and f["lost"] == 0, f
    assert "found in /proc" in f["method"]


def test_barge_in_callers_talked_over_the_greeting_and_were_cleared(run):
    _, result, _ = run
    barged = [c for c in result["calls"] if c["barge_in"]]
    assert len(barged) == CALLERS // 4
    assert all(len(c["barge_ins"]) == 1 for c in barged), [(c["barge_ins"], c["barge_ins_missed"]) for c in barged]


def test_cpu_is_reported_for_each_service_of_the_local_stack(run):
    _, result, _ = run
    cpu = result["summary"]["cpu"]
    for service in (*SPINE, "broker", "load generator"):
        assert cpu[service]["cpu_s"] > 0, service
    assert cpu["turns"]["per_call_second"] > 0
