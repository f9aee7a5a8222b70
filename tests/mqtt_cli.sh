#!/usr/bin/env bash
# Drives emberd's MQTT front with the stock mosquitto clients, as a user would from a shell: an MQTT
# v5 request with a Response Topic and Correlation Data published by mosquitto_pub, the reply read
# by mosquitto_sub in the background. Prints the reply (content type|correlation data|payload) and
# exits 0 when it is a final answer carrying the request's correlation data.
#
# Usage: tests/mqtt_cli.sh PORT NODE
#    or: EMBER_MQTT_PORT=1883 EMBER_MQTT_NODE=kitchen tests/mqtt_cli.sh
# EMBER_MQTT_HOST overrides the broker host (default 127.0.0.1); EMBER_MQTT_CLIENT_ARGS adds options
# to every mosquitto client (TLS and credentials: "--cafile ca.pem --cert c.pem --key c.key -u U -P P").
# `tests/mqtt.rs` runs it against its own broker and daemon.
set -euo pipefail

port="${1:-${EMBER_MQTT_PORT:-}}"
node="${2:-${EMBER_MQTT_NODE:-}}"
host="${EMBER_MQTT_HOST:-127.0.0.1}"
if [[ -z "$port" || -z "$node" ]]; then
    echo "usage: $0 PORT NODE (or EMBER_MQTT_PORT and EMBER_MQTT_NODE)" >&2
    exit 2
fi
for tool in mosquitto_pub mosquitto_sub timeout; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$0: $tool not found (apt install mosquitto-clients coreutils)" >&2
        exit 2
    fi
done

tag="ember-cli-$$-${RANDOM}"
reply="test/$tag/reply"
corr="$tag-corr"
work="$(mktemp -d)"
sub_pid=""
cleanup() {
    if [[ -n "$sub_pid" ]]; then
        kill "$sub_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck disable=SC2206 # word splitting of the extra options is the point
common=(-V 5 -h "$host" -p "$port" ${EMBER_MQTT_CLIENT_ARGS:-})
# One persistent session for the reply topic (-c, a fixed client id, a session expiry): a first
# subscriber creates it and exits as soon as the broker acknowledges the subscription (-E), so
# the broker queues the reply for this session from then on and the background subscriber below
# cannot miss it, however late it starts.
timeout 30 mosquitto_sub "${common[@]}" -i "$tag" -c -x 300 -q 1 -t "$reply" -E

# The receiver, in the background: exits after one message (the reply is not streamed).
timeout 150 mosquitto_sub "${common[@]}" -i "$tag" -c -x 300 -q 1 -t "$reply" \
    -C 1 -W 140 -F '%C|%D|%p' >"$work/reply" 2>"$work/sub.err" &
sub_pid=$!

body='{"messages":[{"role":"user","content":"Say hello."}],"max_tokens":8,"temperature":0}'
timeout 30 mosquitto_pub "${common[@]}" -q 1 -t "ember/$node/request" \
    -D publish response-topic "$reply" \
    -D publish correlation-data "$corr" \
    -D publish content-type application/json \
    -m "$body"

status=0
wait "$sub_pid" || status=$?
sub_pid=""
if [[ "$status" -ne 0 ]]; then
    echo "$0: no reply on $reply (mosquitto_sub exit $status)" >&2
    cat "$work/sub.err" >&2
    exit 1
fi

got="$(cat "$work/reply")"
printf '%s\n' "$got"
case "$got" in
application/json\|"$corr"\|*) ;;
*)
    echo "$0: the reply does not carry content type application/json and correlation data $corr" >&2
    exit 1
    ;;
esac
case "$got" in
*'"finish_reason"'*) ;;
*)
    echo "$0: the reply is not a final answer" >&2
    exit 1
    ;;
esac

# Drop the persistent session (a clean start with session expiry 0 ends it).
timeout 30 mosquitto_sub "${common[@]}" -i "$tag" -t "$reply" -E >/dev/null
