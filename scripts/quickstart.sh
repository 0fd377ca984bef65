#!/usr/bin/env bash
# Set up (first run only), build the embedded base model (first run only), then train the quickstart recipe.
# Extra arguments are recipe overrides, e.g. scripts/quickstart.sh run.steps=20
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$REPO"
python scripts/make_base_model.py --out .cache/base_model
exec rlpost train recipes/quickstart.yaml "$@"
