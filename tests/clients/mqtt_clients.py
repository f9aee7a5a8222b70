"""A hub on MQTT, with paho-mqtt (MQTT v5), against a live `emberd serve --mqtt-url`: tool calls and
structured output through the broker. Usage: mqtt_clients.py HOST PORT NODE.

JSON requests carry OpenAI's `tools`, `tool_choice`, `parallel_tool_calls`, `response_format` and
tool-call history; every call in a final reply must name a declared tool and validate against its
schema (`jsonschema`), a `response_format` answer must validate, streamed chunks must never carry
call markup. A microcontroller's postcard requests are built here byte by byte from the wire
format's specification (ember-proto's crate docs): a version 2 request with a tool, and a version
1 request as a client built before tool calls sends it, which must be answered in version 1.
"""

import json
import os
import struct
import sys
import threading

import jsonschema
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTv5
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub_data import ANSWER, SCHEMAS, TOOLS  # beside this script

HOST, PORT, NODE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
TIMEOUT = 120

MESSAGES = [{"role": "system", "content": "You control a home. Entities: Kitchen Light, Fan."},
            {"role": "user", "content": "Turn on the kitchen light."}]
MARKUP = ("<tool_call>", "</tool_call>", "<|python_tag|>", '"arguments"', '"parameters"',
          '"tool_call"')


class Hub:
    """One MQTT v5 client; `ask` publishes a request and returns (chunks, final) payloads."""

    def __init__(self):
        self.reply_topic = f"hub/{os.getpid()}/reply"
        self.lock = threading.Lock()
        self.waiters = {}  # correlation data -> (event, [payloads])
        self.c = Client(CallbackAPIVersion.VERSION2, client_id=f"hub-{os.getpid()}",
                        protocol=MQTTv5)
        ready = threading.Event()
        self.c.on_connect = lambda *a: ready.set()
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self.on_message
        self.c.connect(HOST, PORT, clean_start=True)
        self.c.loop_start()
        assert ready.wait(10), "no CONNACK"
        ready.clear()
        self.c.subscribe(self.reply_topic, qos=1)
        assert ready.wait(10), "no SUBACK"

    def wait_online(self):
        online = threading.Event()
        status = f"ember/{NODE}/status"

        def on_status(_c, _u, msg):
            if msg.payload == b"online":
                online.set()
        self.c.message_callback_add(status, on_status)
        self.c.subscribe(status, qos=1)
        assert online.wait(TIMEOUT), "the daemon never said online"

    def on_message(self, _c, _u, msg):
        props = msg.properties
        corr = getattr(props, "CorrelationData", None)
        final = ("final", "true") in getattr(props, "UserProperty", [])
        with self.lock:
            w = self.waiters.get(corr)
        if w:
            w[1].append(msg.payload)
            if final:
                w[0].set()

    def ask(self, payload, content_type="application/json"):
        corr = os.urandom(8)
        done = threading.Event()
        with self.lock:
            self.waiters[corr] = (done, [])
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        props.ContentType = content_type
        self.c.publish(f"ember/{NODE}/request", payload, qos=1, properties=props)
        assert done.wait(TIMEOUT), "no final reply"
        with self.lock:
            payloads = self.waiters.pop(corr)[1]
        return payloads[:-1], payloads[-1]

    def ask_json(self, body):
        chunks, final = self.ask(json.dumps(body).encode())
        return [json.loads(c) for c in chunks], json.loads(final)


def check_call(call):
    assert call["type"] == "function" and call["id"].startswith("call_"), call
    name, args = call["function"]["name"], call["function"]["arguments"]
    assert name in SCHEMAS, f"undeclared tool {name!r}"
    assert isinstance(args, str), call  # OpenAI's shape: a string of JSON
    jsonschema.validate(json.loads(args), SCHEMAS[name])
    return name


def check_accounting(final):
    """Usage and timings of a constrained answer add up: every generated token is counted once,
    the prompt is what was evaluated plus what the cache held (the second request of a pair
    reuses the first's prompt)."""
    u, t = final["usage"], final["timings"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], final
    assert t["predicted_n"] == u["completion_tokens"] > 0, final
    assert t["prompt_n"] + u["cached_tokens"] == u["prompt_tokens"], final
    assert t["prompt_n"] >= 1 and t["predicted_ms"] > 0, final


def json_checks(hub):
    for choice in ["required", {"type": "function", "function": {"name": "HassLightSet"}}]:
        for stream in (False, True):
            chunks, final = hub.ask_json({
                "messages": MESSAGES, "tools": TOOLS, "tool_choice": choice,
                "parallel_tool_calls": False, "temperature": 1.0, "seed": 11,
                "max_tokens": 150, "stream": stream})
            assert "error" not in final, final
            assert final["finish_reason"] == "tool_calls", final
            assert len(final["tool_calls"]) == 1, final
            name = check_call(final["tool_calls"][0])
            if isinstance(choice, dict):
                assert name == "HassLightSet", final
            # The chunks carry the answer's text and never the call markup (blanks before a
            # call are no answer: the final text drops them, as OpenAI's `content: null`).
            streamed = "".join(c["delta"] for c in chunks)
            assert streamed.strip() == final["text"].strip(), (streamed, final)
            for m in MARKUP:
                assert m not in streamed and m not in final["text"], (streamed, final)
            check_accounting(final)
    # Structured output, whole and streamed (the chunks add up to the validating text).
    for stream in (False, True):
        chunks, final = hub.ask_json({
            "messages": [{"role": "user", "content": "Which rooms have lights?"}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "rooms", "schema": ANSWER}},
            "temperature": 1.0, "seed": 12, "max_tokens": 150, "stream": stream})
        assert final["finish_reason"] == "stop", final
        jsonschema.validate(json.loads(final["text"]), ANSWER)
        check_accounting(final)
        if stream:
            assert "".join(c["delta"] for c in chunks) == final["text"]
    _, final = hub.ask_json({"prompt": "Rooms:", "response_format": {"type": "json_object"},
                             "temperature": 1.0, "seed": 13, "max_tokens": 100})
    if final["finish_reason"] == "stop":
        assert isinstance(json.loads(final["text"]), dict), final
    # A turn with the call and its result in the history (OpenAI's form, then Ollama's).
    for call in [{"id": "call_abc", "type": "function",
                  "function": {"name": "HassTurnOn", "arguments": '{"name": "Kitchen Light"}'}},
                 {"function": {"name": "HassTurnOn", "arguments": {"name": "Kitchen Light"}}}]:
        result = {"role": "tool", "content": '{"success": true}'}
        if "id" in call:
            result["tool_call_id"] = call["id"]
        _, final = hub.ask_json({
            "messages": MESSAGES + [{"role": "assistant", "content": None, "tool_calls": [call]},
                                    result],
            "tools": TOOLS, "temperature": 0, "max_tokens": 20})
        assert final.get("finish_reason") in ("stop", "length", "tool_calls"), final
    # Refused, with a reason: a field of another dialect, both tools and a format, a bad schema.
    for body, word in [
            ({"messages": MESSAGES, "format": "json"}, "response_format"),
            ({"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required",
              "response_format": {"type": "json_object"}}, "response_format"),
            ({"messages": MESSAGES, "tool_choice": "required"}, "tool"),
            ({"messages": MESSAGES, "response_format": {"type": "json_schema", "json_schema": {
                "schema": {"type": "object", "properties": {"a": {"type": "strnig"}}}}}},
             "strnig")]:
        _, final = hub.ask_json(body)
        assert final.get("error", {}).get("code") == "bad_request", (body, final)
        assert word in final["error"]["message"], (word, final)


# postcard, written and read by hand as a microcontroller does.

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pstr(s):
    b = s.encode()
    return varint(len(b)) + b


def some(b):
    return b"\x01" + b


NONE = b"\x00"


def request_bytes(version, user, max_tokens, v2_tail=b""):
    """A chat request: one user message, `max_tokens`, temperature 0, everything else absent."""
    message = pstr("user") + pstr(user) + (NONE + NONE if version == 2 else b"")
    return (bytes([version]) + NONE + NONE + NONE  # v, id, reply_to, model
            + varint(1) + message + NONE  # messages, prompt
            + some(varint(max_tokens)) + some(struct.pack("<f", 0.0))  # max_tokens, temperature
            + NONE * 4 + varint(0) + NONE * 3  # top_k, top_p, min_p, seed, stop, penalties
            + b"\x00" + NONE + v2_tail)  # stream, reasoning_format, version 2 fields


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def byte(self):
        self.at += 1
        return self.data[self.at - 1]

    def varint(self):
        n, shift = 0, 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    def str(self):
        n = self.varint()
        self.at += n
        return self.data[self.at - n:self.at].decode()

    def opt(self, read):
        return read() if self.byte() else None

    def f32(self):
        self.at += 4
        return struct.unpack("<f", self.data[self.at - 4:self.at])[0]


def read_final(payload, version):
    """A final reply: (text, tool calls, finish reason index); the whole payload must be read."""
    r = Reader(payload)
    assert r.byte() == version, payload
    variant = r.varint()
    if variant == 2:  # an error: id, code, message
        r.opt(r.str)
        raise AssertionError(f"error reply: code {r.varint()}: {r.str()}")
    assert variant == 1, payload
    r.opt(r.str)  # id
    text = r.str()
    r.opt(r.str)  # reasoning
    calls = ([(r.str(), r.str(), r.str()) for _ in range(r.varint())] if version == 2 else [])
    finish = r.varint()
    for _ in range(4):
        r.varint()  # usage
    r.f32(), r.varint(), r.f32(), r.varint(), r.f32()  # timings
    assert r.at == len(payload), "trailing bytes"
    return text, calls, finish


def postcard_checks(hub):
    tool = TOOLS[0]["function"]
    tail = (NONE  # response_format
            + varint(1) + pstr(tool["name"]) + some(pstr(tool["description"]))
            + some(pstr(json.dumps(tool["parameters"])))  # tools
            + some(varint(2))  # tool_choice: Required
            + some(b"\x00"))  # parallel_tool_calls: false
    _, final = hub.ask(request_bytes(2, "Turn on the kitchen light.", 100, tail),
                       "application/x-postcard")
    _, calls, finish = read_final(final, 2)
    assert finish == 2 and len(calls) == 1, (finish, calls)  # ToolCalls
    call_id, name, arguments = calls[0]
    assert call_id.startswith("call_") and name == "HassTurnOn", calls
    jsonschema.validate(json.loads(arguments), tool["parameters"])
    # Structured output: response_format JsonSchema (variant 1) with the schema as text.
    tail = some(varint(1) + pstr(json.dumps(ANSWER))) + varint(0) + NONE + NONE
    _, final = hub.ask(request_bytes(2, "Which rooms?", 150, tail), "application/x-postcard")
    text, calls, finish = read_final(final, 2)
    assert finish == 0 and not calls, (finish, calls)
    jsonschema.validate(json.loads(text), ANSWER)
    # A client built for wire version 1: read, and answered in version 1.
    _, final = hub.ask(request_bytes(1, "Hello", 8), "application/x-postcard")
    text, _, finish = read_final(final, 1)
    assert finish in (0, 1), finish


hub = Hub()
hub.wait_online()
json_checks(hub)
postcard_checks(hub)
print("mqtt clients: ok")
