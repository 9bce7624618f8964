"""Several ingress processes on one box (`switchboard up --scale ingress=N`): they share the one port
(SO_REUSEPORT, the kernel spreads the connections), each is a node of its own that owns the reply partitions
p % N == index, and every caller hears the agent on its own socket whichever node took the call.

The load run is the real stack on the real broker: callers saying real speech over the signed Twilio protocol.
No timing assertions (README "Load testing" has the figures)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from switchboard.cli import main
from switchboard.settings import ServiceSettings
from switchboard.stack import ROOT, Stack
from tests.conftest import SHARED_AUDIO
from tests.pipeline import metric, running_stack

SPINE = ("ingress", "turns", "stt", "agent", "tts")
NODES = 2
CALLERS = 16  # enough that both nodes take calls (each connection lands on one at random: 2 × 2^-16 that one gets all)


# -- what a mistyped --scale or node setting gets: the reason and exit code 2, before anything starts -----------------


@pytest.mark.parametrize("item", ["ingress=abc", "stt=0", "stt=-1", "stt="])
def test_a_scale_that_is_not_a_whole_number_is_a_usage_error(item, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["up", "--scale", item])
    assert exc.value.code == 2
    assert "expected SERVICE=N with N a whole number" in capsys.readouterr().err


def test_a_scale_of_an_unknown_service_names_the_services(tmp_path):
    with pytest.raises(ValueError, match=r"no such service.*ingress.*turns"):
        Stack(ServiceSettings(), run_dir=tmp_path, scale={"sst": 2})


def test_more_ingress_nodes_than_reply_partitions_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"one ingress node per audio.out partition \(SWITCHBOARD_PARTITIONS=4"):
        Stack(ServiceSettings(partitions=4), run_dir=tmp_path, scale={"ingress": 5})
    stack = Stack(ServiceSettings(), run_dir=tmp_path, scale={"ingress": 9})  # 32 partitions: fine on a cluster ...
    with pytest.raises(ValueError, match="SWITCHBOARD_PARTITIONS=8"):
        stack.one_box()  # ... but a one-box stack has 8


def test_an_ingress_node_index_past_the_count_exits_2_naming_both_settings():
    env = {**os.environ, "SWITCHBOARD_INGRESS_NODE_INDEX": "2", "SWITCHBOARD_INGRESS_NODE_COUNT": "2"}
    proc = subprocess.run([sys.executable, "-m", "ingress.main"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "SWITCHBOARD_INGRESS_NODE_INDEX (2) must be below SWITCHBOARD_INGRESS_NODE_COUNT (2)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_port_held_by_a_process_that_does_not_share_it_exits_2_with_the_reason():
    with socket.socket() as held:  # bound without SO_REUSEPORT: the kernel lets no one join it
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**os.environ, "SWITCHBOARD_REUSE_PORT": "true", "SWITCHBOARD_PORT": str(port), "SWITCHBOARD_AUTH": "off"}
        proc = subprocess.run([sys.executable, "-m", "ingress.main"], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
    assert proc.returncode == 2
    assert f"switchboard ingress: cannot share 127.0.0.1:{port}: Address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- two nodes on one port, under load -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory) -> Iterator[Stack]:
    # the draining test's silent callers stay on the line for 45 s: no "Are you still there?" hang-up, and a drain
    # that outlasts them (the default, 25 s, would close them first)
    with running_stack(broker, tmp_path_factory.mktemp("nodes-stack"), only=SPINE, scale={"ingress": NODES},
                       SWITCHBOARD_SOURCE_LIMIT_EXEMPT="127.0.0.1/32", SWITCHBOARD_DRAIN_TIMEOUT_S="120",
                       SWITCHBOARD_SILENCE_PROMPT_S="0", SWITCHBOARD_SILENCE_HANGUP_S="0") as s:
        yield s


@pytest.fixture(scope="module")
def run(stack, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("nodes-load")
    code = main([
        "load", "--url", stack.http_base, "--run-dir", str(stack.run_dir), "--callers", str(CALLERS),
        "--ramp", "4", "--turns", "1", "--clips", str(SHARED_AUDIO),
        "--duration", "90", "--reply-timeout", "60", "--json", str(out / "run.json"), "--no-progress",
    ])
    assert code == 0
    return json.loads((out / "run.json").read_text())


def nodes(stack: Stack) -> list:
    return sorted((w for w in stack.workers if w.service.name == "ingress"), key=lambda w: w.index)


def egress_starts(log: Path) -> list[list[int]]:
    """The reply partitions of every start of the node whose log this is (a restarted node appends to it)."""
    starts = []
    for line in log.read_text().splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("msg") == "egress started":
            starts.append(json.loads(entry["partitions"]))
    assert starts, f"no 'egress started' in {log}"
    return starts


def test_each_node_is_its_own_process_with_its_own_metrics_port(stack):
    workers = nodes(stack)
    assert [w.index for w in workers] == list(range(NODES))
    assert len({w.process.pid for w in workers}) == NODES
    assert all(w.metrics_port for w in workers) and len({w.metrics_port for w in workers}) == NODES
    for w in workers:
        assert metric(f"http://127.0.0.1:{w.metrics_port}/metrics", "switchboard_ingress_ready") == 1.0


def test_the_nodes_split_the_reply_partitions_between_them(stack):
    owned = [egress_starts(w.log_path)[-1] for w in nodes(stack)]
    for index, parts in enumerate(owned):
        assert parts and all(p % NODES == index for p in parts), owned
    assert sorted(p for parts in owned for p in parts) == list(range(stack.settings.partitions))


def test_every_caller_is_answered_and_no_frame_is_lost(run):
    s = run["summary"]
    unanswered = [(c["index"], c["error"], c["close_code"]) for c in run["calls"] if c["turns_answered"] != 1]
    assert s["answered"] == CALLERS and s["turns_answered"] == CALLERS, unanswered
    f = s["frames"]
    assert f["consumed"] == f["sent"] and f["lost"] == 0, f
    assert run["config"]["stack_processes"]["ingress"] == NODES


def test_both_nodes_took_calls_and_the_run_counts_both(stack, run):
    taken = [metric(f"http://127.0.0.1:{w.metrics_port}/metrics", "switchboard_calls_total", channel="twilio")
             for w in nodes(stack)]
    assert all(n > 0 for n in taken), taken
    assert sum(taken) == CALLERS
    assert run["summary"]["cpu"]["ingress"]["cpu_s"] > 0
    assert run["summary"]["ingress_bad_input"] == {}, "read from both nodes' metrics ports, nothing dropped"


# -- a node that dies (runs last: it kills one of the module's nodes) ------------------------------------------------


def active_calls(worker) -> float:
    return metric(f"http://127.0.0.1:{worker.metrics_port}/metrics", "switchboard_active_calls", channel="twilio")


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.2)


def load(stack: Stack, out: Path, callers: int, turns: int) -> list[str]:
    return ["load", "--url", stack.http_base, "--run-dir", str(stack.run_dir), "--callers", str(callers),
            "--ramp", "2", "--turns", str(turns), "--clips", str(SHARED_AUDIO), "--duration", "90",
            "--reply-timeout", "45", "--json", str(out), "--no-progress"]


def test_a_draining_node_keeps_its_calls_and_leaves_new_ones_to_the_others(stack, run, tmp_path):
    draining, other = nodes(stack)
    ready = f"http://127.0.0.1:{draining.metrics_port}/metrics"
    with ThreadPoolExecutor(1) as pool:
        # silent callers that stay on the line for 45 s: the drain lasts as long as they do
        held = pool.submit(main, ["load", "--url", stack.http_base, "--run-dir", str(stack.run_dir), "--callers", "6",
                                  "--ramp", "1", "--silent", "--duration", "45", "--json", str(tmp_path / "held.json"),
                                  "--no-progress"])
        wait_for(lambda: active_calls(draining) + active_calls(other) == 6 and active_calls(draining) > 0, 30,
                 "the silent calls up on both nodes")
        draining.process.terminate()  # SIGTERM, as `kubectl delete pod` or a rolling restart sends
        wait_for(lambda: metric(ready, "switchboard_ingress_ready") == 0, 10, "the node draining")
        assert main(load(stack, tmp_path / "new.json", 8, turns=1)) == 0
        assert draining.process.poll() is None, "the drain was over before the new calls came: nothing was shown"
        assert held.result(timeout=120) == 0
    new = json.loads((tmp_path / "new.json").read_text())
    assert new["summary"]["answered"] == 8 and new["summary"]["turns_answered"] == 8, [
        (c["index"], c["error"]) for c in new["calls"]]  # none refused with 1013 "draining"
    kept = json.loads((tmp_path / "held.json").read_text())["calls"]
    assert all(c["ended_by"] in ("caller", "cap") and not c["error"].startswith("closed") for c in kept), [
        (c["index"], c["ended_by"], c["error"]) for c in kept]  # the draining node's calls ran to their end
    assert draining.process.wait(60) == 0  # then it exits, and comes back in its place
    assert any(r.startswith(f"ingress-{draining.index}") for r in stack.supervise())
    reborn = next(w for w in nodes(stack) if w.index == draining.index)
    wait_for(lambda: stack.worker_ready(reborn), 60, "the restarted node ready")


def test_a_node_that_dies_drops_only_its_own_calls_and_comes_back_in_its_place(stack, run, tmp_path):
    callers = 12
    survivor, victim = nodes(stack)
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(main, load(stack, tmp_path / "kill.json", callers, turns=2))
        wait_for(lambda: active_calls(survivor) + active_calls(victim) == callers, 30, "every call up")
        time.sleep(4)  # into the first turn: each call lasts ~20 s (greeting, two clips of 3-7 s, two answers)
        held = int(active_calls(victim))
        victim.process.kill()
        assert done.result(timeout=240) == 0
    calls = json.loads((tmp_path / "kill.json").read_text())["calls"]
    dropped = [c for c in calls if c["error"].startswith("closed_by_server")]
    kept = [c for c in calls if c not in dropped]
    assert 0 < held < callers
    assert len(dropped) == held, [(c["index"], c["error"]) for c in calls]  # the dead node's calls, no more
    assert all(c["turns_answered"] == 2 and not c["error"] for c in kept), [
        (c["index"], c["error"], c["turns_answered"]) for c in kept]

    # restarted as `switchboard up` does, in its place
    assert any(r.startswith(f"ingress-{victim.index}") for r in stack.supervise())
    reborn = next(w for w in nodes(stack) if w.index == victim.index)
    assert reborn.process.pid != victim.process.pid and reborn.metrics_port == victim.metrics_port
    wait_for(lambda: stack.worker_ready(reborn), 60, "the restarted node ready")
    first, again = egress_starts(reborn.log_path)  # the same log: the node's own reply partitions again
    assert again == first and all(p % NODES == victim.index for p in again)
    assert main(load(stack, tmp_path / "after.json", 8, turns=1)) == 0
    after = json.loads((tmp_path / "after.json").read_text())["summary"]
    assert after["answered"] == 8 and after["turns_answered"] == 8
