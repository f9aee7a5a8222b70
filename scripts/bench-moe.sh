#!/usr/bin/env bash
# Decode speed and resident memory of ember next to llama.cpp on a synthetic deepseek2 (MLA + MoE)
# model with DeepSeek-V3's real dimensions, one layer deep: the same GGUF file, the same threads.
#
#   scripts/bench-moe.sh [--threads N] [--wgpu] [--small] [--wait-idle S] [options]
#
# What it does:
#   1. The model: scripts/gen_deepseek2_gguf.py writes random Q4_K/Q6_K/Q8_0 blocks straight into
#      <cache>/bench/synthetic-deepseek-v3-<full|small>-L<layers>-seed0-<generator hash>.Q4_K_M.gguf
#      (~6.5 GB full size, ~22 MB with --small; reused while the generator and the options are the
#      same, older versions of the same configuration are deleted). Checked with a tiny llama-bench run.
#   2. `cargo build --release -p emberd --locked` (with `--features emberd/wgpu` for --wgpu).
#   3. llama-bench (-p P -n G -r R -t N, JSON) and `emberd bench` (the same lengths, --json), and with
#      --wgpu also `emberd bench --backend wgpu`, each under /usr/bin/time for its peak RSS and
#      scripts/lib/run_measured.py for the CPU time other processes took meanwhile.
#   4. A Markdown table: engine, backend, pp and tg tok/s, tg ratio ember / llama.cpp, peak RSS, file
#      size. A failing emberd run (e.g. an architecture it does not support yet) is a table row with
#      its error, not a failure of the script; llama-bench failing on the file is.
#
# llama.cpp, its Python venv (numpy) and gguf-py come from scripts/bench-vs-llamacpp.sh, which builds
# them into <cache>/llama.cpp-<version> (run here with --setup-only when llama-bench is missing).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${EMBER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ember}"
# The pinned llama.cpp of bench-vs-llamacpp.sh (one source of truth for the version).
LLAMA_CPP_PYTHON_VERSION="$(sed -n 's/^LLAMA_CPP_PYTHON_VERSION=\([0-9.]*\).*/\1/p' "$REPO/scripts/bench-vs-llamacpp.sh")"
[[ -n "$LLAMA_CPP_PYTHON_VERSION" ]] || { echo "bench-moe: error: no LLAMA_CPP_PYTHON_VERSION in bench-vs-llamacpp.sh" >&2; exit 1; }
LLAMA_DIR="${EMBER_LLAMACPP_DIR:-$CACHE/llama.cpp-$LLAMA_CPP_PYTHON_VERSION}"
LLAMA_SRC="$LLAMA_DIR/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
BIN_DIR="$LLAMA_DIR/bin"
VENV="$LLAMA_DIR/venv"
BENCH_DIR="$CACHE/bench"
EMBERD="${CARGO_TARGET_DIR:-$REPO/target}/release/emberd"
GEN="$REPO/scripts/gen_deepseek2_gguf.py"

threads=2
prompt_tokens=64
gen_tokens=32
repeat=3
layers=1
small=0
wgpu=0
wait_idle=0
build_ember=1
no_repack=0

usage() {
    cat <<EOF
Usage: scripts/bench-moe.sh [options]

Benchmarks llama.cpp (llama-bench) and ember (emberd bench) on a synthetic deepseek2 GGUF with
DeepSeek-V3's dimensions (MLA, 256 experts of which 8 used + 1 shared), one layer deep, and prints
pp/tg tok/s and peak RSS of both as a Markdown table.

Options:
  --threads N          threads for both tools (default: $threads)
  --wgpu               also emberd bench --backend wgpu (builds emberd with --features emberd/wgpu)
  --small              the --small model of gen_deepseek2_gguf.py (hidden 1024, 32 experts; ~22 MB)
  --layers N           transformer blocks in the synthetic model (default: $layers)
  --wait-idle S        before each run wait up to S seconds for the CPUs to be idle (default: 0)
  --prompt-tokens P    prefill test length (default: $prompt_tokens)
  --gen-tokens G       decode test length (default: $gen_tokens)
  --repeat R           measured repetitions inside each tool run (default: $repeat)
  --llama-no-repack    also llama-bench --repack 0 (llama.cpp's CPU backend otherwise copies the Q4_K
                       matrices into its interleaved "repack" layout at load: an anonymous copy of
                       almost the whole file, on top of the mapped pages it read them from)
  --no-build           do not run cargo build (use the existing target/release/emberd)
  -h, --help           this help

Peak RSS is the maximum resident set size of the whole process (/usr/bin/time), mapped model pages
included (both tools mmap the file; llama.cpp's repacked copy comes on top, see --llama-no-repack). emberd's figure also includes the 256 MiB buffer of the
bandwidth probe that ends its bench; the footnote gives emberd's own VmHWM from before that probe.

Environment: EMBER_CACHE_DIR / XDG_CACHE_HOME (<cache>, default ~/.cache/ember; models in
<cache>/bench), EMBER_LLAMACPP_DIR (llama.cpp build, default <cache>/llama.cpp-$LLAMA_CPP_PYTHON_VERSION).
EOF
}

die() {
    echo "bench-moe: error: $*" >&2
    exit 1
}
log() { echo "bench-moe: $*" >&2; }

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
need_int() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer, got '$2'"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
    --threads) need_value "$@"; need_int "$1" "$2"; threads=$2; shift 2 ;;
    --wgpu) wgpu=1; shift ;;
    --small) small=1; shift ;;
    --layers) need_value "$@"; need_int "$1" "$2"; layers=$2; shift 2 ;;
    --wait-idle) need_value "$@"; [[ "$2" =~ ^[0-9]+$ ]] || die "--wait-idle needs seconds"; wait_idle=$2; shift 2 ;;
    --prompt-tokens) need_value "$@"; need_int "$1" "$2"; prompt_tokens=$2; shift 2 ;;
    --gen-tokens) need_value "$@"; need_int "$1" "$2"; gen_tokens=$2; shift 2 ;;
    --repeat) need_value "$@"; need_int "$1" "$2"; repeat=$2; shift 2 ;;
    --llama-no-repack) no_repack=1; shift ;;
    --no-build) build_ember=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done

command -v python3 >/dev/null || die "python3 not found"
cd "$REPO"

# ---------------------------------------------------------------------------------------------
# 1. llama.cpp and the Python side (from bench-vs-llamacpp.sh)
# ---------------------------------------------------------------------------------------------

if [[ ! -x "$BIN_DIR/llama-bench" || ! -f "$LLAMA_SRC/gguf-py/gguf/__init__.py" ]]; then
    log "llama.cpp not built yet: running scripts/bench-vs-llamacpp.sh --setup-only --no-build (builds llama.cpp" \
        "into $LLAMA_DIR and makes that script's synthetic models; takes a while, once)"
    "$REPO/scripts/bench-vs-llamacpp.sh" --setup-only --no-build >&2 || die "bench-vs-llamacpp.sh --setup-only failed"
fi
PY=""
for p in "$VENV/bin/python" python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done
[[ -n "$PY" ]] || die "no python with numpy ($VENV/bin/python or python3); run scripts/bench-vs-llamacpp.sh --setup-only"

# ---------------------------------------------------------------------------------------------
# 2. The model, generated once per configuration and generator version
# ---------------------------------------------------------------------------------------------

gen_args=(--layers "$layers" --seed 0 --check)
[[ $small -eq 0 ]] || gen_args+=(--small)
gen_hash="$(sha256sum "$GEN" | cut -c1-10)"
cfg="synthetic-deepseek-v3-$([[ $small -eq 1 ]] && echo small || echo full)-L$layers-seed0"
model="$BENCH_DIR/$cfg-$gen_hash.Q4_K_M.gguf"
mkdir -p "$BENCH_DIR"
if [[ ! -f "$model" ]]; then
    for old in "$BENCH_DIR/$cfg"-*.gguf "$BENCH_DIR/$cfg"-*.gguf.part; do
        [[ -e "$old" ]] || continue
        log "removing $(basename "$old") (another generator version)"
        rm -f "$old"
    done
    need_kib=$((small == 1 ? 64 * 1024 : 7 * 1024 * 1024 * layers))
    avail_kib="$(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }')"
    [[ "$avail_kib" -gt "$need_kib" ]] || die "not enough disk in $BENCH_DIR: $((avail_kib >> 20)) GiB free, ~$((need_kib >> 20)) GiB needed"
    log "generating $model"
    PYTHONPATH="$LLAMA_SRC/gguf-py" nice -n 10 "$PY" "$GEN" "${gen_args[@]}" --out "$model.part" ||
        { rm -f "$model.part"; die "gen_deepseek2_gguf.py failed"; }
    if ! out="$("$BIN_DIR/llama-bench" -m "$model.part" -p 8 -n 4 -r 1 -t "$threads" -ngl 0 -dev none -o md 2>&1)"; then
        echo "$out" | tail -20 >&2
        die "llama-bench cannot run the generated $model.part (kept for inspection)"
    fi
    mv "$model.part" "$model"
    log "check ok: llama-bench runs $(basename "$model")"
fi
file_mib="$(($(stat -c %s "$model") >> 20))"

# ---------------------------------------------------------------------------------------------
# 3. emberd
# ---------------------------------------------------------------------------------------------

if [[ $build_ember -eq 1 ]]; then
    command -v cargo >/dev/null || die "cargo not found (https://rustup.rs)"
    features=()
    [[ $wgpu -eq 0 ]] || features=(--features emberd/wgpu)
    log "cargo build --release -p emberd --locked ${features[*]}"
    nice -n 10 cargo build --release -p emberd --locked "${features[@]}" >&2 || die "cargo build failed"
fi
[[ -x "$EMBERD" ]] || die "$EMBERD not found (run without --no-build)"

# ---------------------------------------------------------------------------------------------
# 4. The runs
# ---------------------------------------------------------------------------------------------

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
results="$work/results.jsonl"
: >"$results"

# cpu_busy, before_run
source "$REPO/scripts/lib/idle.sh"

# peak_rss_wrap: a command prefix that writes the peak RSS in KiB of what follows to $work/rss.
if [[ -x /usr/bin/time ]]; then
    peak_rss_wrap=(/usr/bin/time -f %M -o "$work/rss")
else # the same number from wait4's rusage
    peak_rss_wrap=("$PY" -c 'import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:]); _, st, ru = os.wait4(p.pid, 0)
open(sys.argv[1], "w").write(str(ru.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(st))' "$work/rss")
fi

# run ENGINE BACKEND CMD...: runs CMD measured and appends a JSON record to $results.
run() {
    local engine=$1 backend=$2 rc=0
    shift 2
    log "$engine ($backend): $*"
    before_run
    rm -f "$work/stats" "$work/rss"
    python3 "$REPO/scripts/lib/run_measured.py" "$work/stats" -- "${peak_rss_wrap[@]}" "$@" \
        >"$work/out" 2>"$work/err" || rc=$?
    python3 - "$engine" "$backend" "$rc" "$busy" "$work" >>"$results" <<'PY'
import json, sys
engine, backend, rc, busy, work = sys.argv[1:]
read = lambda n: open(f"{work}/{n}", errors="replace").read() if __import__("os").path.exists(f"{work}/{n}") else ""
out, err = read("out"), read("err")
try:
    stats = json.loads(read("stats") or "{}")
except ValueError:
    stats = {}
rss = read("rss").strip().splitlines()
rec = {"engine": engine, "backend": backend, "ok": rc == "0", "rc": int(rc), "cpu_busy_before_pct": int(busy),
       "other_busy_during_pct": round(stats.get("other_busy_pct", 0.0), 1), "wall_s": stats.get("wall_s"),
       "peak_rss_mib": int(rss[-1]) / 1024 if rss and rss[-1].isdigit() else None}
try:
    if rc != "0":
        raise ValueError("exit status " + rc)
    if engine == "llama.cpp":
        for t in json.loads(out):
            key = "pp" if t["n_prompt"] > 0 and t["n_gen"] == 0 else "tg" if t["n_gen"] > 0 and t["n_prompt"] == 0 else None
            if key:
                rec[key + "_tok_s"] = t["avg_ts"]
                rec[key + "_stddev"] = t["stddev_ts"]
    else:
        j = json.loads([l for l in out.splitlines() if l.strip()][-1])
        rec["pp_tok_s"], rec["tg_tok_s"] = j["prefill_tok_s"], j["decode_tok_s"]
        rec["self_peak_rss_mib"] = j.get("peak_rss_mib")
        rec["raw"] = j
except Exception as e:  # keep the error text for the table
    rec["ok"] = False
    lines = [l.strip() for l in err.splitlines() if l.strip() and not l.startswith("Command exited with")]
    msg = next((l for l in reversed(lines) if "error" in l.lower()), lines[-1] if lines else str(e))
    rec["error"] = msg[:300]
print(json.dumps(rec))
PY
}

log "model $(basename "$model") (${file_mib} MiB); threads $threads, pp$prompt_tokens, tg$gen_tokens, $repeat repetitions"
run llama.cpp cpu "$BIN_DIR/llama-bench" -m "$model" -t "$threads" -p "$prompt_tokens" -n "$gen_tokens" \
    -r "$repeat" -ngl 0 -dev none -o json
[[ $no_repack -eq 0 ]] || run llama.cpp "cpu, --repack 0" "$BIN_DIR/llama-bench" -m "$model" -t "$threads" \
    -p "$prompt_tokens" -n "$gen_tokens" -r "$repeat" -ngl 0 -dev none --repack 0 -o json
ember_args=(bench --model "$model" --threads "$threads" --prompt-tokens "$prompt_tokens"
    --gen-tokens "$gen_tokens" --repeat "$repeat" --json)
run ember flex "$EMBERD" "${ember_args[@]}"
[[ $wgpu -eq 0 ]] || run ember wgpu "$EMBERD" "${ember_args[@]}" --backend wgpu

llama_version="$("$BIN_DIR/llama-bench" --version 2>&1 | tr '\n' ' ' | sed 's/  */ /g; s/ $//')" || true
if python3 - "$results" "$model" "$file_mib" "$threads" "$prompt_tokens" "$gen_tokens" "$repeat" \
    "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (${llama_version:-llama-bench --version failed})" <<'PY'
import json, os, sys
results_f, model, file_mib, threads, pp, tg, repeat, version = sys.argv[1:]
recs = [json.loads(l) for l in open(results_f)]
fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
llama = next((r for r in recs if r["engine"] == "llama.cpp" and r["ok"]), None)
l_tg = llama.get("tg_tok_s") if llama else None
print(f"\n{os.path.basename(model)} ({file_mib} MiB); {threads} thread{'s' if threads != '1' else ''}; pp{pp} / tg{tg} tok/s, "
      f"mean of {repeat} repetitions; {version}\n")
print("| engine | backend | pp tok/s | tg tok/s | tg ember / llama.cpp | peak RSS MiB | file MiB |")
print("|---|---|---|---|---|---|---|")
for r in recs:
    if r["ok"]:
        ratio = fmt(r["tg_tok_s"] / l_tg, 2) if r["engine"] == "ember" and l_tg else "-"
        print(f"| {r['engine']} | {r['backend']} | {fmt(r.get('pp_tok_s'))} | {fmt(r.get('tg_tok_s'))} | {ratio} "
              f"| {fmt(r['peak_rss_mib'], 0)} | {file_mib} |")
    else:
        err = r.get("error", "failed").replace("|", "/")
        print(f"| {r['engine']} | {r['backend']} | error: {err} | | | {fmt(r['peak_rss_mib'], 0)} | {file_mib} |")
notes = [f"{r['backend']}: {r['self_peak_rss_mib']:.0f} MiB" for r in recs
         if r["ok"] and r.get("self_peak_rss_mib") is not None]
if notes:
    print(f"\nemberd's own peak RSS before its 256 MiB bandwidth probe: {', '.join(notes)}")
busy = min(100, max((max(r["cpu_busy_before_pct"], r["other_busy_during_pct"]) for r in recs), default=0))
print(f"CPU use by other processes just before / during the runs: up to {busy:.0f}%"
      + (" -- WARNING: the machine was busy; llama.cpp's spinning threads suffer more than ember's" if busy > 10 else ""))
sys.exit(0 if llama else 3)
PY
then
    :
elif [[ $? -eq 3 ]]; then
    die "llama-bench failed on $model (see the table)"
else
    die "making the table failed"
fi
