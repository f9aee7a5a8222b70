#!/usr/bin/env python3
"""Serving benchmark: `emberd serve` next to llama.cpp's `llama-server -np N` on the same GGUF file,
same threads, measured by the same client, one server at a time on a quiet machine.

    scripts/bench-serve.py [--model F] [--threads 2] [--clients 1,2,4] [--max-tokens 64]
                           [--rounds 2] [--json out.json] [--no-llama]

Measures, per server:
  * aggregate decode tok/s with 1, 2, 4 concurrent clients: each client streams one chat answer
    of exactly --max-tokens tokens (end-of-generation banned with a logit bias, as llama-server's
    `ignore_eos` does); aggregate = all generated tokens after each request's first token /
    wall time from the first first-token to the last token;
  * TTFT for a chat whose long system prompt (a smart-home hub resending its instructions) was
    already seen, against a cold one: ember with and without prefix reuse (--no-prefix-reuse),
    llama-server with `cache_prompt` on and off.

llama-server comes from scripts/bench-vs-llamacpp.sh's build (run it with --setup-only once);
emberd from `cargo build --release -p emberd`. Standard library only.
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import UnixHTTPConnection, wait_healthy  # scripts/benchlib.py, beside this script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("EMBER_CACHE_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ember")
LLAMA_SERVER = os.path.join(
    os.environ.get("EMBER_LLAMACPP_DIR") or os.path.join(CACHE, "llama.cpp-0.3.36"), "bin",
    "llama-server")
EMBERD = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"),
                      "release", "emberd")

SYSTEM = ("You are the voice assistant of a smart home. You control lights, blinds, heating and "
          "the alarm. Answer in one short sentence. Devices: ") + ", ".join(
              f"{room} {dev}" for room in ["kitchen", "living room", "bedroom", "office", "hall",
                                           "garage", "garden", "bathroom"]
              for dev in ["ceiling light", "lamp", "blinds", "thermostat", "speaker", "sensor"])
QUESTIONS = ["Turn on the kitchen lamp.", "Is the garage door closed?",
             "Set the bedroom to 19 degrees.", "Dim the living room lights to 30%.",
             "What is the temperature in the office?", "Close all blinds."]


class Server:
    def __init__(self, name, argv, connect, env=None):
        self.name, self.argv, self.connect_fn = name, argv, connect
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=env)
        t0 = time.time()

        def on_miss():
            if self.proc.poll() is not None:
                sys.exit(f"{name} exited: {self.proc.stderr.read().decode(errors='replace')}")
            if time.time() - t0 > 300:
                sys.exit(f"{name} did not become healthy")

        wait_healthy(self.connect_fn, on_miss)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def eog_bias(self):
        """Logit biases banning end-of-generation tokens, read from the server's tokenizer."""
        banned = set()
        for text in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>", "<|end_of_text|>",
                     "<｜end▁of▁sentence｜>"]:
            c = self.connect_fn()
            c.request("POST", "/tokenize", json.dumps({"content": text, "parse_special": True,
                                                       "add_special": False}),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            toks = json.loads(r.read() or b"{}").get("tokens", [])
            if len(toks) == 1:
                banned.add(toks[0] if isinstance(toks[0], int) else toks[0].get("id"))
        return {str(t): -1e9 for t in banned if t is not None}

    def chat(self, messages, max_tokens, bias, extra=None):
        """Streams one chat answer; returns (t_start, t_first_token, t_end, n_tokens)."""
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                "logit_bias": bias, "stream_options": {"include_usage": True}}
        body.update(extra or {})
        c = self.connect_fn()
        t0 = time.perf_counter()
        c.request("POST", "/v1/chat/completions", json.dumps(body),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            sys.exit(f"{self.name}: HTTP {r.status}: {r.read()[:300]!r}")
        first, n, usage = None, 0, None
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                break
            ev = json.loads(data)
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices", []):
                d = ch.get("delta", {})
                if d.get("content") or d.get("reasoning_content"):
                    if first is None:
                        first = time.perf_counter()
                    n += 1
        t_end = time.perf_counter()
        if usage and usage.get("completion_tokens"):
            n = usage["completion_tokens"]
        return t0, first or t_end, t_end, n


def concurrent_decode(server, clients, max_tokens, bias):
    results = [None] * clients

    def one(i):
        msgs = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + " Explain in detail."}]
        results[i] = server.chat(msgs, max_tokens, bias)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start = min(r[1] for r in results)
    end = max(r[2] for r in results)
    tokens = sum(r[3] - 1 for r in results)
    return tokens / max(end - start, 1e-9), statistics.mean(r[1] - r[0] for r in results)


def ttft_pair(server, bias, extra=None):
    """TTFT of a first request with a long system prompt never seen before (a fresh session tag
    at its start), then of a second with the same system prompt and another question."""
    out = []
    system = f"Session {os.urandom(6).hex()}. {SYSTEM}"
    for q in QUESTIONS[:2]:
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": q}]
        t0, first, _, _ = server.chat(msgs, 4, bias, extra)
        out.append((first - t0) * 1e3)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=2048, help="context per slot")
    ap.add_argument("--rounds", type=int, default=3,
                    help="decode: best of N; TTFT: median of N")
    ap.add_argument("--json")
    ap.add_argument("--no-llama", action="store_true")
    a = ap.parse_args()
    if not a.model:
        a.model = subprocess.check_output([sys.executable, os.path.join(REPO, "scripts",
                                                                        "fetch_model.py")],
                                          text=True).strip()
    clients = [int(c) for c in a.clients.split(",")]
    slots = max(clients)
    if not os.path.exists(EMBERD):
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "emberd"], cwd=REPO)
    tmp = tempfile.mkdtemp()
    sock = os.path.join(tmp, "ember.sock")
    rows = {}

    def measure(name, server, ttft_variants):
        bias = server.eog_bias()
        server.chat([{"role": "user", "content": "Hello"}], 8, bias)  # warm-up
        row = {}
        for c in clients:
            best = max(concurrent_decode(server, c, a.max_tokens, bias) for _ in range(a.rounds))
            row[f"decode_tok_s_{c}"] = round(best[0], 1)
            row[f"ttft_ms_{c}"] = round(best[1] * 1e3, 1)
        for label, extra in ttft_variants:
            pairs = [ttft_pair(server, bias, extra) for _ in range(a.rounds)]
            row[f"ttft_cold_ms{label}"] = round(statistics.median(p[0] for p in pairs), 1)
            row[f"ttft_warm_ms{label}"] = round(statistics.median(p[1] for p in pairs), 1)
        rows[name] = row
        print(name, json.dumps(row), file=sys.stderr)

    common = ["--threads", str(a.threads)]
    for reuse in [True, False]:
        argv = [EMBERD, "serve", "--model", a.model, "--socket", sock, "--slots", str(slots),
                "--ctx-size", str(a.ctx), "--memory-budget", "64GiB", *common]
        if not reuse:
            argv.append("--no-prefix-reuse")
        s = Server("ember" + ("" if reuse else " (no prefix reuse)"), argv,
                   lambda: UnixHTTPConnection(sock),
                   env={**os.environ, "EMBER_LOG": "warn"})
        try:
            if reuse:
                measure("ember", s, [("", None)])
            else:
                bias = s.eog_bias()
                pairs = [ttft_pair(s, bias) for _ in range(a.rounds)]
                rows["ember"]["ttft_cold_ms_no_reuse"] = round(
                    statistics.median(p[0] for p in pairs), 1)
                rows["ember"]["ttft_warm_ms_no_reuse"] = round(
                    statistics.median(p[1] for p in pairs), 1)
        finally:
            s.stop()
    if not a.no_llama:
        if not os.path.exists(LLAMA_SERVER):
            sys.exit(f"{LLAMA_SERVER} missing: run scripts/bench-vs-llamacpp.sh --setup-only")
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        p = port.getsockname()[1]
        port.close()
        argv = [LLAMA_SERVER, "-m", a.model, "-np", str(slots), "-c", str(a.ctx * slots),
                "-t", str(a.threads), "--host", "127.0.0.1", "--port", str(p), "--no-webui"]
        s = Server("llama-server", argv, lambda: http.client.HTTPConnection("127.0.0.1", p, 600))
        try:
            measure("llama-server", s, [("", None), ("_no_reuse", {"cache_prompt": False})])
        finally:
            s.stop()
    keys = sorted({k for r in rows.values() for k in r})
    print("| metric | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in keys:
        print(f"| {k} | " + " | ".join(str(r.get(k, "")) for r in rows.values()) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "threads": a.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
