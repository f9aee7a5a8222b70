"""Helpers the benchmark scripts share (bench-serve.py, bench-mqtt.py). Standard library only."""

import http.client
import socket
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over emberd's Unix socket."""

    def __init__(self, path, timeout=600):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def wait_healthy(connect, on_miss):
    """Polls GET /health over `connect()` until it answers 200; calls `on_miss()` after every
    failed poll (it exits when the server died or took too long)."""
    while True:
        try:
            c = connect()
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return
        except OSError:
            pass
        on_miss()
        time.sleep(0.05)
