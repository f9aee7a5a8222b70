#!/usr/bin/env bash
# Speed of `emberd bench` next to llama.cpp's `llama-bench` on the same GGUF files, same thread
# count, same prompt/generation lengths; prints both and the ratios ember / llama.cpp.
#
#   scripts/bench-vs-llamacpp.sh [options]
#
# What it does (everything is cached; a rerun only benchmarks):
#   1. llama.cpp: the copy vendored in the PyPI sdist of llama-cpp-python (pinned below) is
#      downloaded with pip, built with cmake (Release, static, CPU only, GGML_NATIVE at its default,
#      i.e. tuned for this CPU as a user's build would be) — targets llama-bench, llama-quantize,
#      llama-server — into $EMBER_LLAMACPP_DIR
#      (default <cache>/llama.cpp-<version>, <cache> = $EMBER_CACHE_DIR, else $XDG_CACHE_HOME/ember,
#      else ~/.cache/ember). A stamp file marks a finished build.
#   2. Synthetic models: random weights with the real shapes of Qwen2.5-0.5B-Instruct and
#      DeepSeek-R1-Distill-Qwen-1.5B (scripts/gen_synthetic_gguf.py, F16), quantized by the
#      llama-quantize built above to Q4_K_M, Q4_0 and Q8_0, in <llama.cpp dir>/models/ (the F16
#      intermediate is deleted afterwards). Each new
#      file is checked with a tiny llama-bench run and a tiny `emberd bench` run.
#   3. `cargo build --release -p emberd --locked`, then per model: llama-bench and emberd bench
#      alternated --rounds times (llama, ember, llama, ember, ...); the best round of each is
#      reported (--pick median for the median), as a Markdown table.
#
# Needs: python3 with pip and venv, a C/C++ compiler, cmake (installed with apt-get when missing
# and running as root), cargo, network access to PyPI (first run only).
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36 # pinned; its vendor/llama.cpp is ggml-org/llama.cpp@0c1e57098

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${EMBER_SHARED_DIR:-$REPO/../shared}"
CACHE="${EMBER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ember}"
LLAMA_DIR="${EMBER_LLAMACPP_DIR:-$CACHE/llama.cpp-$LLAMA_CPP_PYTHON_VERSION}"
SRC_DIR="$LLAMA_DIR/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
LLAMA_SRC="$SRC_DIR/vendor/llama.cpp"
BUILD_DIR="$LLAMA_DIR/build"
BIN_DIR="$LLAMA_DIR/bin"
VENV="$LLAMA_DIR/venv"
MODELS_DIR="$LLAMA_DIR/models"
STAMP="$LLAMA_DIR/.build-complete"
EMBERD="${CARGO_TARGET_DIR:-$REPO/target}/release/emberd"

threads=2
prompt_tokens=128
gen_tokens=64
repeat=3
rounds=1
pick=best
all=0
models_arg=""
json_out=""
setup_only=0
build_ember=1
wait_idle=0
omp_passive=0

usage() {
    cat <<EOF
Usage: scripts/bench-vs-llamacpp.sh [options]

Benchmarks llama.cpp (llama-bench) and ember (emberd bench) on the same GGUF files and prints a
Markdown table with both speeds and the ratios ember / llama.cpp (> 1: ember is faster).

Models (default): SmolLM2-135M-Instruct Q4_1 (scripts/fetch_model.py), synthetic
Qwen2.5-0.5B-shaped Q4_K_M and DeepSeek-R1-Distill-Qwen-1.5B-shaped Q4_K_M.

Options:
  --threads N          threads for both tools (default: $threads)
  --prompt-tokens P    prefill test length, both tools (default: $prompt_tokens)
  --gen-tokens G       decode test length, both tools (default: $gen_tokens)
  --repeat R           measured repetitions inside each tool run (default: $repeat)
  --rounds K           alternate llama-bench / emberd bench K times per model (default: $rounds)
  --pick best|median   which round is reported (default: $pick; best = highest tok/s, per test)
  --wait-idle S        before each run wait up to S seconds for the CPUs to be idle (default: 0)
  --omp-passive        run llama-bench with OMP_WAIT_POLICY=passive (not llama.cpp's default: its
                       threads then sleep instead of spinning at barriers, which is far better when
                       other processes compete for the cores, see below)
  --all                also the synthetic Q4_0 and Q8_0 files
  --models F1,F2,...   benchmark these GGUF files instead
  --json FILE          also write the raw results (every round) to FILE
  --setup-only         build llama.cpp and make the synthetic models, then stop
  --no-build           do not run cargo build (use the existing target/release/emberd)
  -h, --help           this help

Machine load: before each run the share of CPU time used by other processes is measured (1 s of
/proc/stat), and again during the run (machine busy time minus the tool's own CPU time), and
reported. llama.cpp's threads spin at every barrier (OpenMP, active wait), so when
another process takes a core its speed collapses (on 2 cores under a parallel build: tg 5-10x
slower), while ember's worker pool degrades gracefully — ratios measured on a busy machine flatter
ember. Use --wait-idle, or compare with --omp-passive.

Environment: EMBER_LLAMACPP_DIR (llama.cpp build + synthetic models; default
<cache>/llama.cpp-$LLAMA_CPP_PYTHON_VERSION), EMBER_CACHE_DIR / XDG_CACHE_HOME (<cache>, default
~/.cache/ember), EMBER_SHARED_DIR (default <repo>/../shared).
Paths now: llama.cpp dir $LLAMA_DIR
EOF
}

die() {
    echo "bench-vs-llamacpp: error: $*" >&2
    exit 1
}
log() { echo "bench-vs-llamacpp: $*" >&2; }

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
need_int() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer, got '$2'"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
    --threads) need_value "$@"; need_int "$1" "$2"; threads=$2; shift 2 ;;
    --prompt-tokens) need_value "$@"; need_int "$1" "$2"; prompt_tokens=$2; shift 2 ;;
    --gen-tokens) need_value "$@"; need_int "$1" "$2"; gen_tokens=$2; shift 2 ;;
    --repeat) need_value "$@"; need_int "$1" "$2"; repeat=$2; shift 2 ;;
    --rounds) need_value "$@"; need_int "$1" "$2"; rounds=$2; shift 2 ;;
    --pick)
        need_value "$@"
        [[ "$2" == best || "$2" == median ]] || die "--pick is best or median"
        pick=$2
        shift 2
        ;;
    --all) all=1; shift ;;
    --wait-idle) need_value "$@"; [[ "$2" =~ ^[0-9]+$ ]] || die "--wait-idle needs seconds"; wait_idle=$2; shift 2 ;;
    --omp-passive) omp_passive=1; shift ;;
    --models) need_value "$@"; models_arg=$2; shift 2 ;;
    --json) need_value "$@"; json_out=$2; shift 2 ;;
    --setup-only) setup_only=1; shift ;;
    --no-build) build_ember=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done
if [[ -n "$json_out" ]]; then
    # Absolute, so that it survives the cd below.
    [[ -d "$(dirname "$json_out")" ]] || die "--json: the directory of '$json_out' does not exist"
    json_out="$(cd "$(dirname "$json_out")" && pwd)/$(basename "$json_out")"
fi

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------

command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv python3-pip)"

apt_install() { # apt_install PKG... — only as root, only when apt-get exists
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing $* with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 ||
            { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; } ||
            die "apt-get install $* failed"
    else
        die "$1 is missing; install it (e.g. apt-get install $*) and run again"
    fi
}

need_build_tools() {
    python3 -m pip --version >/dev/null 2>&1 || die "pip for python3 not found (apt-get install python3-pip)"
    command -v cmake >/dev/null || apt_install cmake
    command -v cmake >/dev/null || die "cmake not found"
    if ! command -v cc >/dev/null || ! { command -v c++ || command -v g++ || command -v clang++; } >/dev/null; then
        apt_install build-essential
    fi
    command -v make >/dev/null || command -v ninja >/dev/null || apt_install make
}

# ---------------------------------------------------------------------------------------------
# 1. llama.cpp, built once
# ---------------------------------------------------------------------------------------------

llama_commit() { # the upstream commit the pinned llama-cpp-python vendors, from its CHANGELOG
    awk -v v="## [$LLAMA_CPP_PYTHON_VERSION]" '
        $0 == v { on = 1; next }
        on && /^## \[/ { exit }
        on && match($0, /llama\.cpp@[0-9a-f]+/) { print substr($0, RSTART + 10, RLENGTH - 10); exit }
    ' "$SRC_DIR/CHANGELOG.md" 2>/dev/null || true
}

build_llamacpp() {
    if [[ -f "$STAMP" && -x "$BIN_DIR/llama-bench" && -x "$BIN_DIR/llama-quantize" && -x "$BIN_DIR/llama-server" ]]; then
        return
    fi
    need_build_tools
    mkdir -p "$LLAMA_DIR/src" "$BIN_DIR"
    if [[ ! -f "$LLAMA_SRC/CMakeLists.txt" ]]; then
        local dl="$LLAMA_DIR/download"
        mkdir -p "$dl"
        local sdist="$dl/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
        if [[ ! -f "$sdist" ]]; then
            log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist (vendors llama.cpp)"
            # --no-binary for this package only: with ':all:' pip would also build the sdists of
            # its build requirements (cmake, ninja) from source just to read the metadata.
            python3 -m pip download --no-deps --no-binary llama-cpp-python --disable-pip-version-check \
                -d "$dl" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2 ||
                die "pip download llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION failed (is PyPI reachable?)"
        fi
        [[ -f "$sdist" ]] || die "pip did not produce $sdist"
        rm -rf "$SRC_DIR"
        tar -xzf "$sdist" -C "$LLAMA_DIR/src"
        [[ -f "$LLAMA_SRC/CMakeLists.txt" ]] || die "the sdist has no vendor/llama.cpp"
    fi
    local commit
    commit="$(llama_commit)"
    log "building llama.cpp ${commit:-(commit unknown)} from llama-cpp-python $LLAMA_CPP_PYTHON_VERSION in $BUILD_DIR (takes a while)"
    local t0=$SECONDS
    # LLAMA_CURL is a no-op in recent llama.cpp (kept for older pins); OPENSSL and the prebuilt
    # server UI would need network at build time — neither is needed for benchmarking.
    local blog="$LLAMA_DIR/build.log"
    log "compiler output: $blog"
    if ! {
        nice -n 10 cmake -S "$LLAMA_SRC" -B "$BUILD_DIR" \
            -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
            -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
            ${commit:+-DLLAMA_BUILD_COMMIT="$commit"} &&
            nice -n 10 cmake --build "$BUILD_DIR" --config Release -j"$(nproc)" \
                --target llama-bench llama-quantize llama-server
    } >"$blog" 2>&1; then
        grep -iE "error|not found|could not" "$blog" | tail -20 >&2 || tail -30 "$blog" >&2
        die "building llama.cpp failed (full log: $blog)"
    fi
    local t
    for t in llama-bench llama-quantize llama-server; do
        cp -f "$BUILD_DIR/bin/$t" "$BIN_DIR/$t"
    done
    {
        echo "llama_cpp_python=$LLAMA_CPP_PYTHON_VERSION"
        echo "llama_cpp_commit=${commit:-unknown}"
        echo "build_seconds=$((SECONDS - t0))"
        echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >"$STAMP"
    log "llama.cpp built in $((SECONDS - t0)) s"
}

llama_version() {
    local v
    v="$("$BIN_DIR/llama-bench" --version 2>&1 | tr '\n' ' ' | sed 's/  */ /g; s/ $//')" || true
    echo "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION, llama.cpp $(llama_commit) (${v:-llama-bench --version failed})"
}

# ---------------------------------------------------------------------------------------------
# 2. Synthetic models
# ---------------------------------------------------------------------------------------------

setup_venv() {
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import numpy, yaml, tqdm' 2>/dev/null; then
        return
    fi
    log "creating $VENV (numpy for the gguf writer)"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check numpy pyyaml tqdm >&2 ||
        die "pip install numpy into $VENV failed"
}

# check_model FILE: a tiny llama-bench run (must work) and a tiny emberd bench run (reported).
check_model() {
    local f=$1 out
    if ! out="$("$BIN_DIR/llama-bench" -m "$f" -p 8 -n 4 -r 1 -t "$threads" -ngl 0 -dev none -o md 2>&1)"; then
        echo "$out" | tail -20 >&2
        die "llama-bench cannot run $f"
    fi
    if [[ -x "$EMBERD" ]]; then
        if out="$("$EMBERD" bench --model "$f" --threads "$threads" --prompt-tokens 8 --gen-tokens 4 --repeat 1 2>&1)"; then
            log "check ok: $(basename "$f") (llama-bench and emberd bench)"
        else
            log "check: llama-bench ok, but emberd bench fails on $(basename "$f"): $(echo "$out" | tail -1)"
        fi
    else
        log "check ok: $(basename "$f") (llama-bench; emberd not built yet)"
    fi
}

SYNTH_SPECS=(qwen2.5-0.5b deepseek-r1-distill-qwen-1.5b)
SYNTH_NAMES=(synthetic-qwen2.5-0.5b synthetic-deepseek-r1-distill-qwen-1.5b)
SYNTH_QUANTS=(Q4_K_M Q4_0 Q8_0)

make_synthetic() {
    local vocab="$SHARED/reference/vocab/ggml-vocab-qwen2.gguf"
    [[ -f "$vocab" ]] || die "tokenizer source $vocab not found (set EMBER_SHARED_DIR)"
    mkdir -p "$MODELS_DIR"
    local i q base f16 out missing
    for i in "${!SYNTH_SPECS[@]}"; do
        base="$MODELS_DIR/${SYNTH_NAMES[$i]}"
        f16="$base.F16.gguf"
        missing=0
        for q in "${SYNTH_QUANTS[@]}"; do [[ -f "$base.$q.gguf" ]] || missing=1; done
        [[ $missing -eq 1 ]] || continue
        setup_venv
        if [[ ! -f "$f16" ]]; then
            log "writing $f16"
            PYTHONPATH="$LLAMA_SRC/gguf-py" nice -n 10 "$VENV/bin/python" "$REPO/scripts/gen_synthetic_gguf.py" \
                --model "${SYNTH_SPECS[$i]}" --vocab "$vocab" --out "$f16.part" >&2 ||
                die "gen_synthetic_gguf.py failed"
            mv "$f16.part" "$f16"
        fi
        for q in "${SYNTH_QUANTS[@]}"; do
            out="$base.$q.gguf"
            [[ -f "$out" ]] && continue
            log "quantizing to $q"
            nice -n 10 "$BIN_DIR/llama-quantize" "$f16" "$out.part" "$q" "$(nproc)" >"$out.log" 2>&1 ||
                { tail -20 "$out.log" >&2; die "llama-quantize $q failed (log: $out.log)"; }
            mv "$out.part" "$out"
            check_model "$out"
        done
        rm -f "$f16" # 1-3.5 GB, only needed to make missing quants (regenerated in about a minute)
    done
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

models=()
if [[ -n "$models_arg" ]]; then
    IFS=, read -r -a models <<<"$models_arg"
    for i in "${!models[@]}"; do
        [[ "${models[$i]}" == /* ]] || models[$i]="$PWD/${models[$i]}"
        [[ -f "${models[$i]}" ]] || die "model file not found: ${models[$i]}"
    done
fi

cd "$REPO"
build_llamacpp
log "$(llama_version)"
if [[ $build_ember -eq 1 ]]; then
    command -v cargo >/dev/null || die "cargo not found (https://rustup.rs)"
    log "cargo build --release -p emberd --locked"
    nice -n 10 cargo build --release -p emberd --locked >&2 || die "cargo build failed"
fi
[[ -n "$models_arg" && $setup_only -eq 0 ]] || make_synthetic
[[ $setup_only -eq 0 ]] || { log "setup done: llama.cpp in $BIN_DIR, synthetic models in $MODELS_DIR"; exit 0; }
[[ -x "$EMBERD" ]] || die "$EMBERD not found (run without --no-build)"

if [[ ${#models[@]} -eq 0 ]]; then
    smol="$(python3 scripts/fetch_model.py)" || die "scripts/fetch_model.py failed"
    models+=("$smol")
    for n in "${SYNTH_NAMES[@]}"; do models+=("$MODELS_DIR/$n.Q4_K_M.gguf"); done
    if [[ $all -eq 1 ]]; then
        for n in "${SYNTH_NAMES[@]}"; do
            models+=("$MODELS_DIR/$n.Q4_0.gguf" "$MODELS_DIR/$n.Q8_0.gguf")
        done
    fi
fi
for m in "${models[@]}"; do [[ -f "$m" ]] || die "model file not found: $m"; done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
results="$work/results.jsonl"
: >"$results"

# cpu_busy, before_run
source "$REPO/scripts/lib/idle.sh"

# record TOOL MODEL ROUND RC STDOUT_FILE STDERR_FILE BUSY STATS_FILE
record() {
    python3 - "$@" >>"$results" <<'PY'
import json, sys
tool, model, rnd, rc, out_f, err_f, busy, stats_f = sys.argv[1:]
out = open(out_f, errors="replace").read()
err = open(err_f, errors="replace").read()
try:
    stats = json.load(open(stats_f))
except (OSError, ValueError):
    stats = {}
rec = {"tool": tool, "model": model, "round": int(rnd), "ok": rc == "0", "cpu_busy_before_pct": int(busy),
       "other_busy_during_pct": round(stats.get("other_busy_pct", 0.0), 1), "wall_s": stats.get("wall_s")}
try:
    if rc != "0":
        raise ValueError("exit status " + rc)
    if tool == "llama.cpp":
        tests = json.loads(out)
        for t in tests:
            key = "pp" if t["n_prompt"] > 0 and t["n_gen"] == 0 else "tg" if t["n_gen"] > 0 and t["n_prompt"] == 0 else None
            if key:
                rec[key + "_tok_s"] = t["avg_ts"]
                rec[key + "_stddev"] = t["stddev_ts"]
        rec["raw"] = tests
    else:
        last = [l for l in out.splitlines() if l.strip()][-1]
        j = json.loads(last)
        rec["pp_tok_s"] = j["prefill_tok_s"]
        rec["tg_tok_s"] = j["decode_tok_s"]
        rec["raw"] = j
except Exception as e:  # keep the error text for the table
    rec["ok"] = False
    lines = [l for l in err.splitlines() if l.strip()]
    msg = next((l for l in reversed(lines) if "error" in l.lower()), lines[-1] if lines else str(e))
    rec["error"] = msg.strip()[:300]
print(json.dumps(rec))
PY
}

measure="python3 $REPO/scripts/lib/run_measured.py $work/stats --"
llama_env=()
[[ $omp_passive -eq 0 ]] || llama_env=(OMP_WAIT_POLICY=passive)
log "benchmarking ${#models[@]} model(s): threads $threads, pp$prompt_tokens, tg$gen_tokens, $repeat repetitions, $rounds round(s)"
for m in "${models[@]}"; do
    for ((r = 1; r <= rounds; r++)); do
        log "$(basename "$m"): round $r/$rounds: llama-bench"
        before_run
        rm -f "$work/stats"
        rc=0
        $measure env "${llama_env[@]}" "$BIN_DIR/llama-bench" -m "$m" -t "$threads" -p "$prompt_tokens" -n "$gen_tokens" \
            -r "$repeat" -ngl 0 -dev none -o json >"$work/out" 2>"$work/err" || rc=$?
        record llama.cpp "$m" "$r" "$rc" "$work/out" "$work/err" "$busy" "$work/stats"
        log "$(basename "$m"): round $r/$rounds: emberd bench"
        before_run
        rm -f "$work/stats"
        rc=0
        $measure "$EMBERD" bench --model "$m" --threads "$threads" --prompt-tokens "$prompt_tokens" \
            --gen-tokens "$gen_tokens" --repeat "$repeat" --json >"$work/out" 2>"$work/err" || rc=$?
        record ember "$m" "$r" "$rc" "$work/out" "$work/err" "$busy" "$work/stats"
    done
done

python3 - "$results" "$pick" "$threads" "$prompt_tokens" "$gen_tokens" "$repeat" "$rounds" "$(llama_version)" "$json_out" \
    "${llama_env[*]:-}" <<'PY'
import json, os, re, statistics, sys
results_f, pick, threads, pp, tg, repeat, rounds, version, json_out, llama_env = sys.argv[1:]
recs = [json.loads(l) for l in open(results_f)]
models = list(dict.fromkeys(r["model"] for r in recs))

def choose(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return max(vals) if pick == "best" else statistics.median(vals)

def quant_of(path):
    m = re.search(r"[.-](I?Q\d\w*|F16|BF16|F32)\.gguf$", os.path.basename(path), re.I)
    return m.group(1).upper() if m else "?"

def fmt(v, d=1):
    return "-" if v is None else f"{v:.{d}f}"

rows, summary = [], []
for m in models:
    by = {t: [r for r in recs if r["model"] == m and r["tool"] == t] for t in ("llama.cpp", "ember")}
    ok = {t: [r for r in rs if r["ok"]] for t, rs in by.items()}
    l_pp = choose([r.get("pp_tok_s") for r in ok["llama.cpp"]])
    l_tg = choose([r.get("tg_tok_s") for r in ok["llama.cpp"]])
    e_pp = choose([r.get("pp_tok_s") for r in ok["ember"]])
    e_tg = choose([r.get("tg_tok_s") for r in ok["ember"]])
    e_best = max(ok["ember"], key=lambda r: r["tg_tok_s"], default=None)
    roof = e_best["raw"].get("roofline_fraction") if e_best else None
    rss = choose([r["raw"].get("peak_rss_mib") for r in ok["ember"]])
    name = os.path.basename(m)
    name = re.sub(r"\.gguf$", "", name)
    q = quant_of(m)
    if name.upper().endswith("." + q):
        name = name[: -len(q) - 1]
    ratio = lambda a, b: None if a is None or b is None or b == 0 else a / b
    errs = [f"{t}: {r.get('error')}" for t, rs in by.items() for r in rs if not r["ok"]]
    rows.append(
        f"| {name} | {q} | {threads} | {fmt(l_pp)} | {fmt(l_tg)} | {fmt(e_pp)} | {fmt(e_tg)} "
        f"| {fmt(ratio(e_pp, l_pp), 2)} | {fmt(ratio(e_tg, l_tg), 2)} "
        f"| {fmt(None if roof is None else roof * 100, 0)} | {fmt(rss, 0)} |"
    )
    summary.append({"model": m, "quant": q, "threads": int(threads),
                    "llama_pp_tok_s": l_pp, "llama_tg_tok_s": l_tg, "ember_pp_tok_s": e_pp, "ember_tg_tok_s": e_tg,
                    "ratio_pp": ratio(e_pp, l_pp), "ratio_tg": ratio(e_tg, l_tg),
                    "ember_roofline_fraction": roof, "ember_peak_rss_mib": rss, "errors": errs})
    for e in dict.fromkeys(errs):
        rows.append(f"|  | error: {e.replace('|', '/')} |||||||||")

busy = max((max(r["cpu_busy_before_pct"], r["other_busy_during_pct"]) for r in recs if r["ok"]), default=0)
print(f"\n{version}" + (f"; llama-bench run with {llama_env}" if llama_env else ""))
print(f"pp{pp} / tg{tg} tok/s, {repeat} repetitions per run (each tool's mean), {rounds} alternating round(s) per model, "
      f"{'best' if pick == 'best' else 'median'} round reported; ratio = ember / llama.cpp\n")
print("| model | quant | threads | llama.cpp pp tok/s | llama.cpp tg tok/s | ember pp tok/s | ember tg tok/s "
      "| ratio pp | ratio tg | ember roofline % | ember peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
print(f"\nCPU use by other processes just before / during the runs: up to {busy:.0f}%"
      + (" -- WARNING: the machine was busy; llama.cpp's spinning threads suffer far more than ember's"
         " from shared cores, so these ratios flatter ember (see --help: --wait-idle, --omp-passive)" if busy > 10 else ""))
if json_out:
    with open(json_out, "w") as f:
        json.dump({"llama_cpp": version, "threads": int(threads), "prompt_tokens": int(pp), "gen_tokens": int(tg),
                   "repeat": int(repeat), "rounds": int(rounds), "pick": pick, "llama_env": llama_env,
                   "max_cpu_busy_before_pct": busy, "summary": summary, "runs": recs},
                  f, indent=1)
    print(f"\nraw results: {json_out}")
PY
