"""Function calling: tools rendered by the chat template, calls forced by a grammar (tool_choice "required" or a
named function) and read back from replies in the forms chat models write them, through Model.chat and the
server (streamed or not)."""

from __future__ import annotations

import json
import os

import pytest

import edgeformer
from edgeformer.server import Server
from edgeformer.tools import check_tools, parse_tool_calls, template_messages, tool_choice

from conftest import make_llama
from test_server import _post

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                      "parameters": {"type": "object", "properties": {
                                          "city": {"type": "string", "maxLength": 12},
                                          "unit": {"enum": ["C", "F"]}}, "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}},
]
TEMPLATE = ("{% if tools %}<|tools|>{{ tools | tojson }}</s>{% endif %}"
            "{% for m in messages %}<|{{ m['role'] }}|>"
            "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>"
            "{% endfor %}{% else %}{{ m['content'] }}{% endif %}</s>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tools"))
    make_llama(d, max_position_embeddings=1024)  # (the tools' JSON is some 450 tokens of this small vocabulary)
    with open(os.path.join(d, "tokenizer_config.json")) as f:
        cfg = json.load(f)
    cfg["chat_template"] = TEMPLATE
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)
    return edgeformer.load(d, threads=2, max_context=1024)


def _args_ok(call):
    args = json.loads(call["function"]["arguments"])
    if call["function"]["name"] == "get_weather":
        return isinstance(args["city"], str) and len(args["city"]) <= 12 and args["unit"] in ("C", "F")
    return isinstance(args["a"], int) and isinstance(args["b"], int)


def test_parse_tool_calls_in_the_forms_models_write():
    names = TOOLS
    content, calls = parse_tool_calls('Sure.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
                                      '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}'
                                      '</tool_call>', names)
    assert content == "Sure." and [c["function"]["name"] for c in calls] == ["add", "get_weather"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 1, "b": 2} and calls[0]["id"].startswith("call_")
    assert parse_tool_calls('<|python_tag|>{"name": "add", "parameters": {"a": 1, "b": 2}}', names)[1]  # Llama 3.1
    _, calls = parse_tool_calls('[TOOL_CALLS] [{"name": "add", "arguments": {"a": 1, "b": 2}}, '
                                '{"name": "add", "arguments": "{\\"a\\": 3, \\"b\\": 4}"}]', names)  # Mistral
    assert [json.loads(c["function"]["arguments"])["a"] for c in calls] == [1, 3]
    for text in ['{"name": "nope", "arguments": {}}', "plain words", '{"name": "add"}', "<tool_call>{oops</tool_call>",
                 '{"name": "add", "arguments": [1]}', "[" * 100000, "<tool_call>" + "[" * 100000 + "</tool_call>"]:
        assert parse_tool_calls(text, names) == (text, [])


def test_checks_name_the_field():
    for bad, msg in [([], "non-empty list"), ([{"type": "function"}], "tools[0]"),
                     ([{"type": "function", "function": {"name": "a b"}}], "tools[0].function.name"),
                     ([TOOLS[1], TOOLS[1]], "'add' twice"),
                     ([{"type": "function", "function": {"name": "f", "parameters": 3}}], "parameters")]:
        with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            check_tools(bad)
    with pytest.raises(ValueError, match="no tool named 'x'"):
        tool_choice({"type": "function", "function": {"name": "x"}}, check_tools(TOOLS))
    with pytest.raises(ValueError, match="tool_choice"):
        tool_choice("sometimes", check_tools(TOOLS))
    msgs = template_messages([{"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {
        "name": "add", "arguments": '{"a": 1, "b": 2}'}}]}])
    assert msgs[0]["tool_calls"][0]["function"]["arguments"] == {"a": 1, "b": 2}


def test_chat_renders_tools_and_forces_calls(model):
    msgs = [{"role": "user", "content": "What is the weather in Oslo?"}]
    text = model._tok.apply_chat_template(template_messages(msgs), tools=check_tools(TOOLS))
    assert text.startswith("<|tools|>") and '"get_weather"' in text
    called = 0
    for seed in range(3):
        r = model.chat(msgs, tools=TOOLS, tool_choice="required", max_new_tokens=120, temperature=1.0, seed=seed)
        if r.finish_reason == "length":
            continue
        assert r.tool_calls and len(r.tool_calls) == 1 and _args_ok(r.tool_calls[0]), r.text
        called += 1
    assert called >= 2
    r = model.chat(msgs, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}},
                   max_new_tokens=120, temperature=0)
    assert r.finish_reason == "length" or r.tool_calls[0]["function"]["name"] == "add"
    r = model.chat(msgs, tools=TOOLS, tool_choice="none", max_new_tokens=8, temperature=0)
    assert r.tool_calls is None
    with pytest.raises(ValueError, match="tool_choice': needs tools"):
        model.chat(msgs, tool_choice="required")
    # a conversation that went through a call: the assistant's call and the tool's answer, rendered
    history = msgs + [{"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                          "function": {"name": "add",
                                                                                       "arguments": '{"a": 1, "b": 2}'}}]},
                      {"role": "tool", "tool_call_id": "call_1", "content": "3"}]
    text = model._tok.apply_chat_template(template_messages(history), tools=check_tools(TOOLS))
    assert '<tool_call>{"arguments": {"a": 1, "b": 2}, "name": "add"}</tool_call>' in text and "<|tool|>3" in text


def test_server_tool_calls(model):
    srv = Server(model, "tiny", port=0).start()
    url = f"http://127.0.0.1:{srv.port}/v1/chat/completions"
    try:
        body = {"messages": [{"role": "user", "content": "Add 1 and 2."}], "tools": TOOLS, "tool_choice": "required",
                "max_tokens": 120, "temperature": 0.8, "seed": 4}
        want = model.chat(body["messages"], tools=TOOLS, tool_choice="required", max_new_tokens=120, temperature=0.8,
                          seed=4)
        code, text = _post(url, body)
        assert code == 200, text
        choice = json.loads(text)["choices"][0]
        assert want.tool_calls  # (this seed's reply ends within max_tokens)
        if want.tool_calls:
            assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
            call = choice["message"]["tool_calls"][0]
            assert call["function"] == want.tool_calls[0]["function"] and _args_ok(call)
        code, text = _post(url, {**body, "stream": True})
        events = [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: {")]
        assert text.rstrip().endswith("data: [DONE]")
        deltas = [e["choices"][0]["delta"] for e in events]
        if want.tool_calls:
            calls = [c for d in deltas for c in d.get("tool_calls", [])]
            assert calls[0]["index"] == 0 and calls[0]["function"] == want.tool_calls[0]["function"]
            assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
        for extra, msg in [({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "field 'tools[0]"),
                           ({"tool_choice": "required"}, "needs 'tools'"),
                           ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
                            "does not combine")]:
            code, text = _post(url, {"messages": body["messages"], **extra})
            assert code == 400 and msg in json.loads(text)["error"]["message"], text
    finally:
        srv.close()


def test_names_that_are_not_strings_are_no_calls():
    for text in ['{"name": ["add"], "arguments": {}}', '<tool_call>{"name": {}, "arguments": {}}</tool_call>']:
        assert parse_tool_calls(text, TOOLS) == (text, [])
