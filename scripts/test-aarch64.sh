#!/usr/bin/env bash
# Cross-builds ember for 64-bit Arm boards (aarch64-unknown-linux-gnu, release profile) and runs it
# under qemu-user twice, as two different CPUs:
#   QEMU_CPU=cortex-a72  Raspberry Pi 4: NEON, no dotprod  -> kernel set Neon
#   QEMU_CPU=max         dotprod + i8mm                    -> kernel set NeonI8mm
# Each time: every ember-quant test (kernels_simd checks every kernel set the emulated CPU has, row
# and tile kernels, against the scalar reference), the ember-model greedy parity test on the tiny
# models (EMBER_SMOLLM2 is left unset), and an emberd smoke test (--version, info, a tiny bench
# whose JSON names the kernel set in use). The kernel set detected under each CPU is printed and
# checked, and so is the time of each step.
#
# Needs (Debian): gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static, and
# `rustup target add aarch64-unknown-linux-gnu`; linker and runner come from .cargo/config.toml.
# Everything is built once, in the release profile (the tests need it under emulation anyway). Every
# cargo command selects the same packages (`-p ember-quant -p ember-model -p emberd`, choosing
# targets with --lib/--test): cargo unifies dependency features per selection, and `-p ember-quant`
# or `-p ember-model` alone would compile burn and half the dependency tree a second time with other
# features. Timings under qemu say nothing about speed on a board.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
model=tests/data/models/tiny-qwen2-tied-q4_k_m.gguf
# CPU model and the kernel set its features must give (a name `Kernels::from_name` accepts).
cpus=("cortex-a72:neon" "max:neon-i8mm")

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The reference tests would otherwise also run SmolLM2 (minutes under qemu), and EMBER_KERNELS would
# override the detected kernel set this script checks.
unset EMBER_SMOLLM2 EMBER_KERNELS

for tool in aarch64-linux-gnu-gcc qemu-aarch64-static; do
    if ! command -v "$tool" >/dev/null; then
        echo "missing $tool (apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)" >&2
        exit 1
    fi
done
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target"
fi

pkgs=(-p ember-quant -p ember-model -p emberd)
# ember-quant's unit tests (`--lib` also takes ember-model's) and every integration test file.
quant_tests=(--lib)
for f in crates/ember-quant/tests/*.rs; do
    quant_tests+=(--test "$(basename "$f" .rs)")
done

cargo_a64() { nice -n 10 cargo "$1" --release --locked --target "$target" "${pkgs[@]}" "${@:2}"; }

t_start=$SECONDS
summary=()
step() {
    local name=$1 t=$SECONDS
    shift
    echo "== $name"
    "$@"
    local dt=$((SECONDS - t))
    echo "== $name: ${dt} s"
    summary+=("$(printf '%5d s  %s' "$dt" "$name")")
}

# The release binary, run the way .cargo/config.toml's runner runs it.
emberd() {
    QEMU_CPU=$cpu qemu-aarch64-static -L /usr/aarch64-linux-gnu \
        "${CARGO_TARGET_DIR:-target}/$target/release/emberd" "$@"
}

smoke() {
    local cpu=$1 want=$2
    emberd --version
    emberd info --model "$model"
    local json
    json=$(emberd bench --model "$model" --threads 2 --prompt-tokens 8 --gen-tokens 4 --repeat 1 \
        --json | tail -n 1)
    echo "$json"
    local got
    got=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["kernels"])' "$json")
    # `NeonI8mm` vs `neon-i8mm`: compare without case and dashes.
    local norm_got norm_want
    norm_got=$(tr -d -- '-_' <<<"${got,,}")
    norm_want=$(tr -d -- '-_' <<<"${want,,}")
    if [[ "$norm_got" != "$norm_want" ]]; then
        echo "emberd under QEMU_CPU=$cpu uses kernels $got, expected $want" >&2
        return 1
    fi
}

step "build emberd and libraries (release, $target)" cargo_a64 build
step "build tests" cargo_a64 test --no-run "${quant_tests[@]}" --test greedy

for entry in "${cpus[@]}"; do
    cpu=${entry%%:*}
    want=${entry#*:}
    export QEMU_CPU=$cpu EMBER_EXPECT_KERNELS=$want
    echo "== QEMU_CPU=$cpu: kernel sets"
    cargo_a64 test -q --test kernels_simd -- --exact simd_sets_match_the_architecture \
        --nocapture 2>&1 | grep -E "kernel sets|test result"
    step "[$cpu] ember-quant tests (and ember-model unit tests)" cargo_a64 test "${quant_tests[@]}"
    # The Pi 4 pass runs the greedy test on the repository's models only (f16, q2_k, q4_0, q4_k_m,
    # q8_0 over llama, qwen2 and tied qwen2): every type's NEON kernel is checked by kernels_simd,
    # and the `max` pass runs all reference models. Keeps CI's cold run under its hour.
    if [[ $cpu == cortex-a72 ]]; then export EMBER_TEST_SHARED_MODELS=0; fi
    step "[$cpu] ember-model greedy parity" cargo_a64 test --test greedy
    unset EMBER_TEST_SHARED_MODELS
    step "[$cpu] emberd smoke test" smoke "$cpu" "$want"
    unset QEMU_CPU EMBER_EXPECT_KERNELS
done

echo "== summary ($target under qemu-user)"
printf '%s\n' "${summary[@]}"
printf '%5d s  total\n' "$((SECONDS - t_start))"
