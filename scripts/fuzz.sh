#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) from its seed corpus; fails on any crash.
# cargo-fuzz needs nightly compiler flags: a nightly toolchain is used when installed, otherwise the
# stable compiler with RUSTC_BOOTSTRAP=1 (same flags, no download).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.1
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then tc=(+nightly); else tc=(); export RUSTC_BOOTSTRAP=1; fi
for target in $(cargo "${tc[@]}" fuzz list); do
  mkdir -p "corpus/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  echo "fuzz: $target for ${secs}s"
  log="$(mktemp)"
  if ! cargo "${tc[@]}" fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
      -max_total_time="$secs" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $target FAILED (crash input, if any, in fuzz/artifacts/$target)"
    exit 1
  fi
  tail -n 12 "$log"
  rm -f "$log"
done
