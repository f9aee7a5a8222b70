#!/usr/bin/env bash
# The whole test suite. Fetches the default model first (cached, sha256-checked) because the
# SmolLM2 reference tests need it, then runs every test of the workspace (CPU build), then the GPU
# tests (`wgpu` feature) on whatever Vulkan driver is installed — Mesa's software one (lavapipe,
# `apt install mesa-vulkan-drivers`) is enough. EMBER_TEST_WGPU=0 skips them, =1 requires them.
set -euo pipefail
cd "$(dirname "$0")/.."
EMBER_SMOLLM2="$(python3 scripts/fetch_model.py)"
export EMBER_SMOLLM2
cargo test --workspace --locked "$@"

wgpu="${EMBER_TEST_WGPU:-auto}"
if [[ "$wgpu" == auto ]]; then
    if compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
        wgpu=1
    else
        echo "SKIP wgpu tests: no Vulkan driver found (apt install mesa-vulkan-drivers)" >&2
        wgpu=0
    fi
fi
if [[ "$wgpu" == 1 ]]; then
    cargo test --locked -p ember-model -p emberd --features ember-model/wgpu,emberd/wgpu "$@" -- wgpu
fi
