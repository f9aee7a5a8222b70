#!/usr/bin/env bash
# The whole test suite. Fetches the default model first (cached, sha256-checked) because the
# SmolLM2 reference tests need it, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
EMBER_SMOLLM2="$(python3 scripts/fetch_model.py)"
export EMBER_SMOLLM2
exec cargo test --workspace --locked "$@"
