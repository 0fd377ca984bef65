#!/usr/bin/env bash
# Set up (first run only) and run the test suite. Extra arguments go to pytest, e.g.
#   scripts/test.sh tests/unit            # the fast layer only (seconds, no Ray)
#   scripts/test.sh -m "not e2e"          # skip the end-to-end layer
# With no arguments (the full suite, as CI runs it) the type checker runs too, after pytest: `python -m mypy`
# (settings in pyproject.toml; about 40 s of CPU from a clean clone, seconds once .mypy_cache is warm). The script
# fails if either fails. RLPOST_MYPY=1 adds mypy to a partial run, RLPOST_MYPY=0 leaves it out of a full one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$REPO"
if [ $# -eq 0 ]; then
  set -- tests
  RLPOST_MYPY="${RLPOST_MYPY:-1}"
fi
pytest_status=0
python -m pytest "$@" || pytest_status=$?
if [ "${RLPOST_MYPY:-0}" != 1 ]; then exit "$pytest_status"; fi
echo "[test] mypy: type-checking rlpost, actors, rewards"
mypy_status=0
python -m mypy || mypy_status=$?
if [ "$pytest_status" -ne 0 ]; then exit "$pytest_status"; fi
exit "$mypy_status"
