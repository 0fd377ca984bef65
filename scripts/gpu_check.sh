#!/usr/bin/env bash
# GPU check (issue 16): on a box with an NVIDIA GPU, install the staged wheels its image lacks, then check every
# GPU-only path of rlpost, each a named check with its own timeout; one table at the end, JSON and a log per check
# beside it ($OUT when set, else runs/gpu_check-<time>). Exit status 1 when any check failed.
#   scripts/gpu_check.sh                       install (when staged) and every check, within --budget (560 s)
#   scripts/gpu_check.sh run --only env,sync-ipc   some checks, no install; `list` names them all
#   scripts/gpu_check.sh stage                 on a machine with network: the wheels, split into parts
# On a box without network (torch preinstalled, nothing else), one part per call, back to back:
#   here:     scripts/gpu_check.sh stage       # prints which paths each call carries
#   call 1:   carry .cache/gpu_wheels/manifest.json .cache/base_model .cache/gpu_wheels/wheels.tar.000;  run: true
#   call k:   carry .cache/gpu_wheels/wheels.tar.<k-1>;                                            run: true
#   last:     carry the last part;  run: scripts/gpu_check.sh install
#   then:     run: scripts/gpu_check.sh run     (its own call: the checks take up to 560 s)
# Needs only the image's python3 (PYTHON overrides it); `stage` uses the repo's .venv when there is one.
# Options and the logic: scripts/gpu_check.py (python3 scripts/gpu_check.py run --help).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
if [ "${1:-}" = stage ] && [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
case "${1:-}" in
  stage|install|run|list|all|probe) exec "$PY" scripts/gpu_check.py "$@" ;;
  *) exec "$PY" scripts/gpu_check.py all "$@" ;;
esac
