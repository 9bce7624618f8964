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
from collections.abc import Iterator
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
    with running_stack(broker, tmp_path_factory.mktemp("nodes-stack"), only=SPINE, scale={"ingress": NODES},
                       SWITCHBOARD_SOURCE_LIMIT_EXEMPT="127.0.0.1/32") as s:
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


def egress_partitions(log: Path) -> list[int]:
    for line in log.read_text().splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("msg") == "egress started":
            return json.loads(entry["partitions"])
    raise AssertionError(f"no 'egress started' in {log}")


def test_each_node_is_its_own_process_with_its_own_metrics_port(stack):
    workers = nodes(stack)
    assert [w.index for w in workers] == list(range(NODES))
    assert len({w.process.pid for w in workers}) == NODES
    assert all(w.metrics_port for w in workers) and len({w.metrics_port for w in workers}) == NODES
    for w in workers:
        assert metric(f"http://127.0.0.1:{w.metrics_port}/metrics", "switchboard_ingress_ready") == 1.0


def test_the_nodes_split_the_reply_partitions_between_them(stack):
    owned = [egress_partitions(w.log_path) for w in nodes(stack)]
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
