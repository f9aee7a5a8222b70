#!/usr/bin/env python3
"""MQTT benchmark: what `emberd serve --mqtt-url` adds over the engine's own time, next to HTTP on
the Unix socket, and how many short requests a minute it sustains for 1 and 4 hubs.

    scripts/bench-mqtt.py [--model F] [--threads 2] [--requests 30] [--hubs 1,4]
                          [--seconds 30] [--broker mqtt://HOST:PORT] [--node bench]
                          [--emberd PATH] [--json out.json]

Measures:
  * round-trip overhead for a short reply: --requests sequential chats (smart-home questions,
    max_tokens 8, temperature 0) after 3 warm-up ones, each with a fresh correlation id; round
    trip = publish -> final reply received (client clock), engine time = the final's
    timings.queued_ms + prompt_ms + predicted_ms, overhead = round trip - engine time (median and
    p90). The same bodies go to POST /v1/chat/completions (non-streaming, one kept-alive
    connection, as the MQTT client keeps one) for the HTTP overhead; its llama-server-style
    timings have no queued_ms (counted as 0);
  * sustained requests/min: per --hubs entry, that many MQTT clients (own connection, own reply
    topic) each send the next chat (max_tokens 16) as soon as the previous final arrives, for
    --seconds; completed requests / (time until the last hub's last reply), and each hub's median
    latency.

The broker is a mosquitto started on a free loopback port (unless --broker), with
set_tcp_nodelay: with its default, Nagle's algorithm holds replies for a delayed ACK (~35 ms per
round trip on loopback); the client sets TCP_NODELAY too. emberd (`cargo build --release -p
emberd`) serves with --slots 4 on a temporary Unix socket as node --node. Needs paho-mqtt 2.x
(`pip install paho-mqtt==2.1.0`).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from benchlib import UnixHTTPConnection, wait_healthy  # scripts/benchlib.py, beside this script

try:
    from paho.mqtt.client import CallbackAPIVersion, Client, MQTTv5
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError:
    print("bench-mqtt.py needs paho-mqtt 2.x: pip install paho-mqtt==2.1.0", file=sys.stderr)
    sys.exit(2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBERD = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"),
                      "release", "emberd")
QUESTIONS = ["Turn on the kitchen lamp.", "Is the garage door closed?",
             "Set the bedroom to 19 degrees.", "Dim the living room lights to 30%.",
             "What is the temperature in the office?", "Close all blinds."]
WARM_UP = 3
SLOTS = 4
REQUEST_TIMEOUT_S = 120


class BenchError(Exception):
    pass


def chat(i, max_tokens):
    return {"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            "max_tokens": max_tokens, "temperature": 0, "stream": False}


def engine_ms(reply):
    t = reply["timings"]
    return t.get("queued_ms", 0) + t["prompt_ms"] + t["predicted_ms"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def mqtt_client(host, port, client_id, topic, on_message):
    """A connected MQTT v5 client, its network loop running, subscribed (QoS 1) to topic."""
    c = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTv5)
    connected, subscribed = threading.Event(), threading.Event()
    failure = []

    def on_connect(client, _u, _flags, reason, _props):
        # paho leaves Nagle on: a small PUBLISH would wait behind an unacknowledged PUBACK.
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if reason.is_failure:
            failure.append(f"connect: {reason}")
        connected.set()

    def on_subscribe(_c, _u, _mid, reasons, _props):
        failure.extend(f"subscribe {topic}: {r}" for r in reasons if r.is_failure)
        subscribed.set()

    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect(host, port, clean_start=True)
    c.loop_start()
    if not connected.wait(10) or failure:
        c.loop_stop()
        raise BenchError(f"{client_id}: {failure or 'no CONNACK'}")
    c.subscribe(topic, qos=1)
    if not subscribed.wait(10) or failure:
        c.loop_stop()
        raise BenchError(f"{client_id}: {failure or 'no SUBACK'}")
    return c


class Hub:
    """One MQTT client with its own connection and reply topic, sending one request at a time."""

    def __init__(self, host, port, node, name):
        client_id = f"bench-{os.getpid()}-{name}"
        self.request_topic = f"ember/{node}/request"
        self.reply_topic = f"bench/{client_id}/reply"
        self.pending = {}  # correlation data -> [event, receive time, payload]
        self.lock = threading.Lock()
        self.client = mqtt_client(host, port, client_id, self.reply_topic, self.on_message)

    def on_message(self, _client, _userdata, msg):
        t = time.perf_counter()
        props = msg.properties
        if ("final", "true") not in getattr(props, "UserProperty", []):
            return
        with self.lock:
            waiter = self.pending.pop(getattr(props, "CorrelationData", None), None)
        if waiter:
            waiter[1:] = [t, msg.payload]
            waiter[0].set()

    def request(self, body):
        """Publishes one request; returns (round trip in s, final reply)."""
        payload = json.dumps(body)
        corr = os.urandom(8).hex().encode()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        waiter = [threading.Event(), None, None]
        with self.lock:
            self.pending[corr] = waiter
        t0 = time.perf_counter()
        self.client.publish(self.request_topic, payload, qos=1, properties=props)
        if not waiter[0].wait(REQUEST_TIMEOUT_S):
            with self.lock:
                self.pending.pop(corr, None)
            raise BenchError(f"no final reply within {REQUEST_TIMEOUT_S} s")
        reply = json.loads(waiter[2])
        if "error" in reply:
            raise BenchError(f"error reply: {reply['error']}")
        return waiter[1] - t0, reply

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


class HttpFront:
    """POST /v1/chat/completions on the daemon's Unix socket over one kept-alive connection."""

    def __init__(self, sock):
        self.conn = UnixHTTPConnection(sock)

    def request(self, body):
        payload = json.dumps(body)
        t0 = time.perf_counter()
        self.conn.request("POST", "/v1/chat/completions", payload,
                          {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        t1 = time.perf_counter()
        if r.status != 200:
            raise BenchError(f"HTTP {r.status}: {data[:300]!r}")
        return t1 - t0, json.loads(data)

    def close(self):
        self.conn.close()


def start_broker(tmp):
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        sys.exit("mosquitto not found (apt install mosquitto), or pass --broker mqtt://HOST:PORT")
    port = free_port()
    conf = os.path.join(tmp, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "set_tcp_nodelay true\n")
    log_path = os.path.join(tmp, "mosquitto.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([exe, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    t0 = time.time()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.time() - t0 > 10:
            proc.kill()
            with open(log_path) as f:
                sys.exit(f"mosquitto did not start: {f.read()}")
        time.sleep(0.05)


def wait_ready(daemon, log_path, sock, host, port, node):
    """Returns once emberd answers /health with 200 and ember/<node>/status is `online`."""
    def check(t0, what):
        if daemon.poll() is not None:
            with open(log_path) as f:
                sys.exit(f"emberd exited: {f.read()}")
        if time.time() - t0 > 300:
            sys.exit(f"emberd: {what}")

    t0 = time.time()
    wait_healthy(lambda: UnixHTTPConnection(sock), lambda: check(t0, "not healthy"))
    online = threading.Event()

    def on_status(_client, _userdata, msg):
        if msg.payload == b"online":
            online.set()

    status = mqtt_client(host, port, f"bench-{os.getpid()}-status", f"ember/{node}/status",
                         on_status)
    try:
        while not online.wait(0.1):
            check(t0, f"ember/{node}/status not online")
    finally:
        status.disconnect()
        status.loop_stop()


def round_trips(front, n):
    for i in range(WARM_UP):
        front.request(chat(i, 8))
    samples = []
    for i in range(n):
        rtt, reply = front.request(chat(i, 8))
        samples.append((rtt * 1e3, engine_ms(reply)))
    overhead = [rtt - eng for rtt, eng in samples]
    return {"round_trip_ms": round(statistics.median(s[0] for s in samples), 2),
            "engine_ms": round(statistics.median(s[1] for s in samples), 2),
            "overhead_ms": round(statistics.median(overhead), 2),
            "overhead_p90_ms": round(statistics.quantiles(overhead, n=10,
                                                          method="inclusive")[8], 2),
            "samples_ms": [[round(r, 3), round(e, 3)] for r, e in samples]}


def sustained(host, port, node, n_hubs, seconds):
    hubs = [Hub(host, port, node, f"hub{i}") for i in range(n_hubs)]
    latencies = [[] for _ in hubs]
    failures = []
    start = time.perf_counter()
    deadline = start + seconds

    def loop(i):
        k = i
        try:
            while time.perf_counter() < deadline:
                rtt, _ = hubs[i].request(chat(k, 16))
                latencies[i].append(rtt * 1e3)
                k += 1
        except BenchError as e:
            failures.append(f"hub {i}: {e}")

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(n_hubs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for h in hubs:
        h.close()
    if failures:
        raise BenchError("; ".join(failures))
    done = sum(len(lat) for lat in latencies)
    return {"hubs": n_hubs, "completed": done, "seconds": round(elapsed, 2),
            "requests_per_min": round(done * 60 / elapsed, 1),
            "median_latency_ms": [round(statistics.median(lat), 1) for lat in latencies]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=30, help="sequential round trips per front")
    ap.add_argument("--hubs", default="1,4")
    ap.add_argument("--seconds", type=float, default=30, help="closed loop per --hubs entry")
    ap.add_argument("--broker", help="mqtt://HOST:PORT (default: a mosquitto started here)")
    ap.add_argument("--node", default="bench")
    ap.add_argument("--emberd", default=EMBERD)
    ap.add_argument("--json")
    a = ap.parse_args()
    hub_counts = [int(h) for h in a.hubs.split(",")]
    if max(hub_counts) > SLOTS:
        sys.exit(f"--hubs: at most {SLOTS} (emberd runs with --slots {SLOTS})")
    if not os.path.exists(a.emberd):
        sys.exit(f"{a.emberd} missing: cargo build --release -p emberd")
    if not a.model:
        a.model = subprocess.check_output([sys.executable, os.path.join(REPO, "scripts",
                                                                        "fetch_model.py")],
                                          text=True).strip()
    tmp = tempfile.mkdtemp()
    sock = os.path.join(tmp, "s.sock")
    broker = None
    if a.broker:
        url = urllib.parse.urlsplit(a.broker)
        host, port = url.hostname, url.port or 1883
    else:
        broker, port = start_broker(tmp)
        host = "127.0.0.1"
    argv = [a.emberd, "serve", "--model", a.model, "--socket", sock,
            "--mqtt-url", f"mqtt://{host}:{port}", "--node", a.node, "--slots", str(SLOTS),
            "--ctx-size", "2048", "--threads", str(a.threads)]
    log_path = os.path.join(tmp, "emberd.log")
    with open(log_path, "w") as log:
        daemon = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log,
                                  env={**os.environ, "EMBER_LOG": "warn"})
    try:
        wait_ready(daemon, log_path, sock, host, port, a.node)
        fronts = {}
        for name, front in [("mqtt", Hub(host, port, a.node, "rtt")), ("http", HttpFront(sock))]:
            try:
                fronts[name] = round_trips(front, a.requests)
            finally:
                front.close()
            print(name, json.dumps({k: v for k, v in fronts[name].items() if k != "samples_ms"}),
                  file=sys.stderr)
        loads = []
        for n in hub_counts:
            loads.append(sustained(host, port, a.node, n, a.seconds))
            print(json.dumps(loads[-1]), file=sys.stderr)
    except BenchError as e:
        sys.exit(f"bench-mqtt: {e} (emberd log: {log_path})")
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        if broker:
            broker.kill()
            broker.wait()

    print(f"Round trip, {a.requests} sequential short chats (max_tokens 8), ms:")
    print("| front | round trip (median) | engine (median) | overhead (median) | overhead (p90) |")
    print("|---|---|---|---|---|")
    for name, r in fronts.items():
        print(f"| {name} | {r['round_trip_ms']} | {r['engine_ms']} | {r['overhead_ms']} | "
              f"{r['overhead_p90_ms']} |")
    print(f"\nSustained, closed loop for {a.seconds:g} s per row (max_tokens 16, --slots {SLOTS}):")
    print("| hubs | requests/min | completed | median latency per hub, ms |")
    print("|---|---|---|---|")
    for r in loads:
        print(f"| {r['hubs']} | {r['requests_per_min']} | {r['completed']} | "
              + ", ".join(str(x) for x in r["median_latency_ms"]) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "threads": a.threads, "slots": SLOTS,
                       "broker": a.broker or "mosquitto (local)", "round_trip": fronts,
                       "sustained": loads}, f, indent=1)


if __name__ == "__main__":
    main()
