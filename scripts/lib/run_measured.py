#!/usr/bin/env python3
"""Run a command and measure how much CPU other processes used meanwhile.

Usage: run_measured.py STATS_JSON -- COMMAND [ARGS...]

The command inherits stdin/stdout/stderr; its exit status is returned. STATS_JSON receives
{"wall_s", "cpu_s" (the command's user+system time, children included), "other_busy_pct"}:
the CPU time the whole machine spent busy during the run (/proc/stat) minus the command's own,
as a percentage of wall time x CPUs. Used by scripts/bench-vs-llamacpp.sh to flag runs that
shared the cores with something else.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def busy_idle() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v[:8]) - idle, idle  # guest time is already inside user/nice


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    stats_path, cmd = sys.argv[1], sys.argv[3:]
    hz = os.sysconf("SC_CLK_TCK")
    ncpu = os.cpu_count() or 1
    b0, _ = busy_idle()
    t0 = time.monotonic()
    try:
        p = subprocess.Popen(cmd)
    except OSError as e:
        print(f"run_measured: cannot run {cmd[0]}: {e}", file=sys.stderr)
        return 127
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    b1, _ = busy_idle()
    cpu = ru.ru_utime + ru.ru_stime
    other = max(0.0, (b1 - b0) / hz - cpu)
    stats = {"wall_s": wall, "cpu_s": cpu, "other_busy_pct": 100.0 * other / max(wall * ncpu, 1e-9)}
    with open(stats_path, "w") as f:
        json.dump(stats, f)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main())
