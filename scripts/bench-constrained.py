#!/usr/bin/env python3
"""Cost of constrained decoding: `emberd run` decode speed with a JSON schema against the same run
without one, on the same model, threads and prompt, alternated round by round (free, constrained,
free, ...) so that machine noise hits both alike. Prints the CPU, both speeds per round and the
median and best-of ratios constrained / free.

  scripts/bench-constrained.py MODEL.gguf [--threads 2] [--rounds 8] [--tokens 160] [--schema F]

The default schema is the mask's worst case: `{"items": [40 strings]}`, whose strings leave almost
the whole vocabulary open at most steps (llguidance must check every token), and long enough that
the answer never ends before `--tokens`. Uses target/release/emberd (cargo build --release -p
emberd), or $EMBERD_BIN.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBERD = os.environ.get("EMBERD_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release", "emberd")
WORST = {"type": "object", "properties": {"items": {
    "type": "array", "items": {"type": "string"}, "minItems": 40, "maxItems": 40}},
    "required": ["items"], "additionalProperties": False}
PROMPT = "List forty things found in a kitchen, as JSON."


def cpu():
    model, flags = "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                if line.startswith(("flags", "Features")) and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimd", "asimddp", "i8mm")
            if f in flags]
    return f"{model} ({', '.join(simd) or 'no SIMD flags read'})"


def run(model, threads, tokens, schema):
    cmd = [EMBERD, "run", "--model", model, "--chat", "--prompt", PROMPT, "--temperature", "0",
           "--max-tokens", str(tokens), "--threads", str(threads), "--json"]
    if schema:
        cmd += ["--json-schema", schema]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    r = json.loads(out.stdout)
    n = r["usage"]["completion_tokens"]
    if n < tokens:
        sys.exit(f"only {n} of {tokens} tokens generated ({'constrained' if schema else 'free'}, "
                 f"finish {r['finish_reason']}): the two runs would not compare")
    return r["timings"]["decode_tok_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--schema", help="JSON schema file (default: the worst case above)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        schema = a.schema
        if not schema:
            schema = os.path.join(tmp, "worst.json")
            with open(schema, "w") as f:
                json.dump(WORST, f)
        run(a.model, a.threads, 8, None)  # warm the page cache
        free, con = [], []
        for i in range(a.rounds):
            free.append(run(a.model, a.threads, a.tokens, None))
            con.append(run(a.model, a.threads, a.tokens, schema))
            print(f"round {i + 1}: free {free[-1]:.1f} tok/s, constrained {con[-1]:.1f} tok/s")
    ratios = [c / f for c, f in zip(con, free)]
    print(f"\n{os.path.basename(a.model)}, {a.threads} threads, {a.tokens} tokens, {cpu()}")
    print(f"free {statistics.median(free):.1f} tok/s, constrained {statistics.median(con):.1f} "
          f"tok/s (medians); ratio median {statistics.median(ratios):.3f}x, best-of "
          f"{max(con) / max(free):.3f}x")


if __name__ == "__main__":
    main()
