#!/usr/bin/env bash
# The whole test suite. Fetches the default model first (cached, sha256-checked) because the
# SmolLM2 reference tests need it, then runs every test of the workspace. When a Vulkan driver is
# installed — Mesa's software one (lavapipe, `apt install mesa-vulkan-drivers`) is enough — the
# suite is built once with the GPU backend (`wgpu` feature) compiled in: the CPU tests run as
# always (the backend is chosen at run time) and the GPU tests run too. One feature set means one
# build of the Burn stack instead of two. EMBER_TEST_WGPU=0 builds without it, =1 requires it.
# The tiny models of ../shared/models (beside the checkout, or EMBER_SHARED_DIR) are tested too when
# present; the suite is green without them, as on a user's fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
EMBER_SMOLLM2="$(python3 scripts/fetch_model.py)"
export EMBER_SMOLLM2

wgpu="${EMBER_TEST_WGPU:-auto}"
if [[ "$wgpu" == auto ]]; then
    if compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
        wgpu=1
    else
        echo "SKIP wgpu tests: no Vulkan driver found (apt install mesa-vulkan-drivers)" >&2
        wgpu=0
    fi
fi
features=()
export EMBERD_FEATURES=""
if [[ "$wgpu" == 1 ]]; then
    features=(--features ember-model/wgpu,emberd/wgpu)
    EMBERD_FEATURES="wgpu"
fi

# The end-to-end tests run the emberd binary that this same `cargo test` builds (cargo builds a
# package's binaries for its integration tests), so they test exactly this feature set and no
# second build is started from inside a test.
profile=debug
for a in "$@"; do [[ "$a" == --release ]] && profile=release; done
export EMBERD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/$profile/emberd"
# --no-fail-fast: one red test binary must not hide the verdict of the others.
cargo test --workspace --locked --no-fail-fast "${features[@]}" "$@"
