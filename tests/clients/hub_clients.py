"""The clients a hub runs, against a live `emberd serve --listen-tcp`: the `openai` package and
`ollama==0.6.2` (the version Home Assistant pins). Usage: hub_clients.py BASE_URL MODEL_NAME
[no-think]; `no-think` switches thinking off in every request (OpenAI's
`chat_template_kwargs.enable_thinking`, Ollama's `think`), for a DeepSeek-R1 model whose prompt
always opens `<think>`: a random-weight model never closes it on its own.

Every tool call ember returns must name a declared tool and validate against its schema
(`jsonschema`), whole and streamed; `response_format` / `format` answers must validate; the Home
Assistant turn (tools with auto, keep_alive -1.0, num_ctx, think false, then the call and a tool
result sent back in Ollama's form) and an OpenAI turn with `tool_call_id` must succeed. The models
are small or random: only ember's constrained decoding makes their output valid.
"""

import json
import sys
import time
import urllib.request

import jsonschema
import ollama
import openai

BASE, MODEL = sys.argv[1], sys.argv[2]
NO_THINK = sys.argv[3:] == ["no-think"]
# Sent with every OpenAI request, and Ollama's `think` for every Ollama one.
EXTRA = {"chat_template_kwargs": {"enable_thinking": False}} if NO_THINK else None
THINK = False if NO_THINK else None
# The tiny R1 model's vocabulary (Qwen 2's) has no DeepSeek markup tokens: each
# `<｜tool▁call…｜>` is spelled out in byte tokens by a random model, ~40 tokens apiece.
MAX = 400 if NO_THINK else 150

from hub_data import ANSWER, SCHEMAS, TOOLS  # beside this script

SYSTEM = "You are a voice assistant for Home Assistant. Exposed entities: Kitchen Light, Fan."


def ollama_view(schema):
    """The schema as `ollama==0.6.2` sends it: its Tool model keeps only type, description, enum,
    items, properties and required (so additionalProperties, bounds and lengths never reach the
    server, and Home Assistant's tools arrive so too)."""
    if isinstance(schema, dict):
        keep = ("type", "description", "enum", "items", "properties", "required")
        out = {k: ollama_view(v) for k, v in schema.items() if k in keep}
        if "properties" in schema:
            out["properties"] = {k: ollama_view(v) for k, v in schema["properties"].items()}
        return out
    return schema


def check_call(name, arguments, ollama_client=False):
    assert name in SCHEMAS, f"undeclared tool {name!r}"
    args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
    schema = SCHEMAS[name]
    jsonschema.validate(args, ollama_view(schema) if ollama_client else schema)
    return args


def wait_healthy():
    t0 = time.time()
    while True:
        try:
            with urllib.request.urlopen(f"{BASE}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert time.time() - t0 < 120, "emberd did not become healthy"
        time.sleep(0.1)


def openai_checks():
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="unused")
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Turn on the kitchen light."}]
    for choice in ["required", {"type": "function", "function": {"name": "HassLightSet"}}]:
        for seed in (1, 2):
            r = client.chat.completions.create(
                model=MODEL, messages=messages, tools=TOOLS, tool_choice=choice,
                parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=MAX,
                extra_body=EXTRA)
            c = r.choices[0]
            assert c.finish_reason == "tool_calls", (choice, c)
            assert c.message.tool_calls, c
            for tc in c.message.tool_calls:
                check_call(tc.function.name, tc.function.arguments)
                if isinstance(choice, dict):
                    assert tc.function.name == "HassLightSet"
            # Streamed: OpenAI's delta.tool_calls, reassembled as the openai package's users do.
            calls, finish = {}, None
            for chunk in client.chat.completions.create(
                    model=MODEL, messages=messages, tools=TOOLS, tool_choice=choice,
                    parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=MAX,
                    stream=True, extra_body=EXTRA):
                if not chunk.choices:
                    continue
                ch = chunk.choices[0]
                finish = ch.finish_reason or finish
                for d in ch.delta.tool_calls or []:
                    entry = calls.setdefault(d.index, {"id": d.id, "name": "", "args": ""})
                    if d.function and d.function.name:
                        entry["name"] = d.function.name
                    if d.function and d.function.arguments:
                        entry["args"] += d.function.arguments
            assert finish == "tool_calls" and calls, (finish, calls)
            for e in calls.values():
                assert e["id"] and e["id"].startswith("call_"), e
                check_call(e["name"], e["args"])
    # Structured output.
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Which rooms have lights?"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "rooms", "schema": ANSWER, "strict": True}},
        temperature=1.0, seed=3, max_tokens=150, extra_body=EXTRA)
    jsonschema.validate(json.loads(r.choices[0].message.content), ANSWER)
    # A turn with tool_call_id: the call, its result, and the model's next answer.
    r = client.chat.completions.create(
        model=MODEL, tools=TOOLS, temperature=0, max_tokens=20,
        messages=messages + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_abc", "type": "function",
                 "function": {"name": "HassTurnOn", "arguments": '{"name": "Kitchen Light"}'}}]},
            {"role": "tool", "tool_call_id": "call_abc", "content": '{"success": true}'}],
        extra_body=EXTRA)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls"), r


def ollama_checks():
    client = ollama.Client(host=BASE)
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Turn on the kitchen light."}]
    # Home Assistant's turn: tools with auto, keep_alive -1.0, num_ctx, think false.
    r = client.chat(model=MODEL, messages=messages, tools=TOOLS, keep_alive=-1.0,
                    options={"num_ctx": 2048, "temperature": 1.0, "seed": 5, "num_predict": 150},
                    think=False, stream=False)
    calls = r.message.tool_calls or []
    for tc in calls:
        check_call(tc.function.name, tc.function.arguments, ollama_client=True)
    # The call and a tool result sent back as Home Assistant does (arguments an object, no id).
    followup = messages + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "HassTurnOn", "arguments": {"name": "Kitchen Light"}}}]},
        {"role": "tool", "content": '{"success": true, "targets": ["light.kitchen"]}'}]
    r = client.chat(model=MODEL, messages=followup, tools=TOOLS, keep_alive=-1.0,
                    options={"num_ctx": 2048, "temperature": 0, "num_predict": 30},
                    think=False, stream=False)
    assert r.done, r
    # Streamed, with tools: a call comes whole in one chunk.
    for part in client.chat(model=MODEL, messages=messages, tools=TOOLS, stream=True, think=THINK,
                            options={"temperature": 1.0, "seed": 6, "num_predict": 150}):
        for tc in part.message.tool_calls or []:
            check_call(tc.function.name, tc.function.arguments, ollama_client=True)
    # AI Task: `format` as a schema.
    r = client.chat(model=MODEL, messages=[{"role": "user", "content": "Which rooms?"}],
                    format=ANSWER, think=THINK,
                    options={"temperature": 1.0, "seed": 7, "num_predict": 150})
    jsonschema.validate(json.loads(r.message.content), ANSWER)


wait_healthy()
openai_checks()
ollama_checks()
print("hub clients: ok")
