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
