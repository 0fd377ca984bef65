#!/usr/bin/env bash
# Set up (first run only) and run the test suite. Extra arguments go to pytest, e.g.
#   scripts/test.sh tests/unit            # the fast layer only (seconds, no Ray)
#   scripts/test.sh -m "not e2e"          # skip the end-to-end layer
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$REPO"
if [ $# -eq 0 ]; then set -- tests; fi
exec python -m pytest "$@"
