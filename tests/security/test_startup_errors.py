"""A misconfigured ingress says what is wrong and exits 2, with no traceback (and no secret in the message)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SWITCHBOARD_API_KEYS": "too-short-key"}, "under 16 characters"),
        ({"SWITCHBOARD_ACS_AUDIENCE": "res", "SWITCHBOARD_ACS_JWKS": "/nonexistent/jwks.json"}, "SWITCHBOARD_ACS_JWKS"),
        ({"SWITCHBOARD_PORT": "eighty"}, "invalid settings"),
    ],
)
def test_a_bad_setting_stops_the_ingress_with_a_clear_message(env, says):
    proc = subprocess.run(
        [sys.executable, "-m", "ingress.main"],
        env={**os.environ, "SWITCHBOARD_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "too-short-key" not in proc.stderr + proc.stdout  # a key is named by its fingerprint only


@pytest.mark.parametrize(
    ("module", "env", "names"),
    [
        ("processors.turns.main", {"SWITCHBOARD_INTERRUPT_MS": "99999", "SWITCHBOARD_PAUSE_MS": "abc"},
         ("SWITCHBOARD_INTERRUPT_MS", "SWITCHBOARD_PAUSE_MS")),
        ("processors.stt.main", {"SWITCHBOARD_PARTITIONS": "none"}, ("SWITCHBOARD_PARTITIONS",)),
        ("processors.agent.main", {"SWITCHBOARD_SPECULATIVE_REPLY": "sometimes"}, ("SWITCHBOARD_SPECULATIVE_REPLY",)),
        ("processors.tts.main", {"SWITCHBOARD_TTS_HOLD_S": "-1"}, ("SWITCHBOARD_TTS_HOLD_S",)),
        ("processors.enrich.main", {"SWITCHBOARD_PARTITIONS": "none"}, ("SWITCHBOARD_PARTITIONS",)),
        ("sinks.main", {"SWITCHBOARD_PARTITIONS": "none"}, ("SWITCHBOARD_PARTITIONS",)),
    ],
)
def test_every_service_names_its_bad_settings_and_exits_2_without_a_traceback(module, env, names):
    proc = subprocess.run([sys.executable, "-m", module], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "invalid settings" in proc.stderr and all(name in proc.stderr for name in names), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_a_call_with_no_broker_to_read_from_says_which_setting_to_point_at_it():
    from switchboard.broker import free_port

    kafka = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "switchboard.cli", "call", "--say", "hello", "--url", f"http://127.0.0.1:{free_port()}"],
        env={**os.environ, "SWITCHBOARD_KAFKA_BOOTSTRAP": kafka},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert f"cannot reach Kafka at {kafka}" in proc.stderr and "SWITCHBOARD_KAFKA_BOOTSTRAP" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Unclosed" not in proc.stderr, "the consumer opened for the call's transcripts was left open"
