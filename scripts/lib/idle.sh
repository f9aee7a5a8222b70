# Shared by the bench scripts (sourced): waiting for an idle machine before a timed run.
# The caller defines `log MESSAGE` and sets `wait_idle` (seconds).

# cpu_busy: percent of all CPU time used (by anything) during one second, from /proc/stat.
cpu_busy() {
    local a b
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    awk -v a="${a[*]}" -v b="${b[*]}" 'BEGIN {
        n = split(a, x, " "); split(b, y, " "); tot = 0
        for (i = 2; i <= n; i++) tot += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (tot > 0) ? 100 * (tot - idle) / tot : 0 }'
}

# before_run: waits (up to $wait_idle seconds) for other processes to leave the CPUs alone;
# sets $busy to the last measurement.
before_run() {
    local deadline=$((SECONDS + wait_idle))
    busy=$(cpu_busy)
    while [[ $busy -gt 10 && $SECONDS -lt $deadline ]]; do
        sleep 4
        busy=$(cpu_busy)
    done
    [[ $busy -le 10 ]] || log "warning: the CPUs are ${busy}% busy with other work; this run is not reliable"
}
