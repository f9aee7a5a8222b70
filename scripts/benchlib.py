"""Helpers the benchmark scripts share (bench-serve.py, bench-mqtt.py). Standard library only."""

import http.client
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over emberd's Unix socket."""

    def __init__(self, path, timeout=600):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)
