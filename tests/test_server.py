"""The OpenAI-compatible server (`edgeformer serve`): on a local port, against the model's own generate() (itself
checked against transformers in test_families.py): the same text and tokens, streamed or not, concurrent
clients batched together, bad requests answered with a 400 that names the field, a client that goes away
cancelling its request. Nothing leaves the machine: the server listens on 127.0.0.1, port chosen by the OS."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

from edgeformer.server import Server

from conftest import prompt_ids
from test_batch import _build


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = _build("llama", str(tmp_path_factory.mktemp("server")))
    srv = Server(model, "tiny", port=0).start()
    yield model, f"http://127.0.0.1:{srv.port}"
    srv.close()


def _post(url, body, raw: bytes = None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _events(text: str):
    """The JSON payloads of a server-sent event stream, and whether it ended with [DONE]."""
    datas = [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]
    return [json.loads(d) for d in datas if d != "[DONE]"], datas[-1:] == ["[DONE]"]


def test_completions(served):
    model, url = served
    want = model.generate("Hello world", max_new_tokens=12, temperature=0, ignore_eos=False)
    code, text = _post(url + "/v1/completions", {"prompt": "Hello world", "max_tokens": 12, "temperature": 0})
    assert code == 200
    r = json.loads(text)
    assert r["object"] == "text_completion" and r["model"] == "tiny"
    assert r["choices"][0]["text"] == want.text
    assert r["choices"][0]["finish_reason"] == {"eos": "stop", "length": "length"}[want.finish_reason]
    assert r["usage"] == {"prompt_tokens": want.prompt_tokens, "completion_tokens": len(want.token_ids),
                          "total_tokens": want.prompt_tokens + len(want.token_ids),
                          "prompt_tokens_details": {"cached_tokens": 0}}
    ids = prompt_ids(9, seed=3)  # token ids, sampling with a seed
    want = model.generate(ids, max_new_tokens=8, temperature=0.9, top_k=20, seed=5)
    _, text = _post(url + "/v1/completions", {"prompt": ids, "max_tokens": 8, "temperature": 0.9, "top_k": 20,
                                              "seed": 5})
    assert json.loads(text)["choices"][0]["text"] == want.text


def test_next_turn_reuses_the_cache(served):
    """A prompt that continues a finished request's tokens (a chat's next turn) prefills only what is new:
    OpenAI's usage.prompt_tokens_details.cached_tokens counts the rest, and the text is the text alone."""
    model, url = served
    first = prompt_ids(40, seed=11)
    kw = dict(max_new_tokens=6, temperature=0, ignore_eos=True)
    reply = model.generate(first, **kw)
    _, text = _post(url + "/v1/completions", {"prompt": first, "max_tokens": 6, "temperature": 0, "ignore_eos": True})
    assert json.loads(text)["choices"][0]["text"] == reply.text
    turn2 = first + reply.token_ids + [5, 6, 7]
    _, text = _post(url + "/v1/completions", {"prompt": turn2, "max_tokens": 6, "temperature": 0, "ignore_eos": True})
    r = json.loads(text)
    assert r["usage"]["prompt_tokens_details"] == {"cached_tokens": len(first) + len(reply.token_ids) - 1}
    assert r["choices"][0]["text"] == model.generate(turn2, **kw).text


def test_n_choices(served):
    """n choices of one request: each a request of the Batcher (decoded together), choice i sampling with seed + i;
    streamed, each chunk names its choice; the usage counts the prompt once."""
    model, url = served
    ids = prompt_ids(9, seed=12)
    body = {"prompt": ids, "max_tokens": 6, "temperature": 0.9, "top_k": 20, "seed": 7, "n": 3, "ignore_eos": True}
    want = [model.generate(ids, max_new_tokens=6, temperature=0.9, top_k=20, seed=7 + i, ignore_eos=True)
            for i in range(3)]
    code, text = _post(url + "/v1/completions", body)
    r = json.loads(text)
    assert code == 200 and [c["index"] for c in r["choices"]] == [0, 1, 2]
    assert [c["text"] for c in r["choices"]] == [w.text for w in want]
    assert r["usage"]["prompt_tokens"] == len(ids) and r["usage"]["completion_tokens"] == 18
    code, text = _post(url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2,
                                                      "max_tokens": 5, "temperature": 0, "stream": True,
                                                      "stream_options": {"include_usage": True}})
    events, done = _events(text)
    assert code == 200 and done
    texts, finished = ["", ""], [None, None]
    for e in events[:-1]:
        (c,) = e["choices"]
        texts[c["index"]] += c["delta"].get("content", "")
        finished[c["index"]] = c["finish_reason"] or finished[c["index"]]
    alone = model.chat([{"role": "user", "content": "hi"}], max_new_tokens=5, temperature=0)
    assert texts == [alone.text] * 2 and finished == ["length"] * 2
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 2 * len(alone.token_ids)


def test_logit_bias_field(served):
    model, url = served
    ids = prompt_ids(9, seed=13)
    want = model.generate(ids, max_new_tokens=4, temperature=0, logit_bias={9: 100}, ignore_eos=True)
    assert want.token_ids == [9] * 4
    _, text = _post(url + "/v1/completions", {"prompt": ids, "max_tokens": 4, "temperature": 0, "ignore_eos": True,
                                              "logit_bias": {"9": 100}})
    assert json.loads(text)["choices"][0]["text"] == want.text
    code, text = _post(url + "/v1/completions", {"prompt": ids, "logit_bias": {"x": 1}})
    assert code == 400 and "logit_bias" in json.loads(text)["error"]["message"]


def test_response_format_and_grammars(served):
    """OpenAI's response_format (JSON mode, a JSON schema) and llama.cpp's grammar / json_schema fields give
    generate()'s text under the same grammar."""
    from edgeformer import Grammar

    model, url = served
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"enum": ["x", "y"]}},
              "required": ["a", "b"]}
    msgs = [{"role": "user", "content": "Hello world"}]
    cases = [({"response_format": {"type": "json_object"}}, Grammar.json()),
             ({"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}},
              Grammar.from_json_schema(schema)),
             ({"json_schema": schema}, Grammar.from_json_schema(schema)),
             ({"grammar": 'root ::= "yes" | "no"'}, Grammar('root ::= "yes" | "no"')),
             ({"response_format": {"type": "text"}}, None)]
    for extra, g in cases:
        want = model.chat(msgs, max_new_tokens=40, temperature=0.7, seed=3, grammar=g)
        code, text = _post(url + "/v1/chat/completions", {"messages": msgs, "max_tokens": 40, "temperature": 0.7,
                                                          "seed": 3, **extra})
        assert code == 200, text
        assert json.loads(text)["choices"][0]["message"]["content"] == want.text
    for extra, msg in [({"response_format": {"type": "xml"}}, "response_format.type"),
                       ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
                       ({"grammar": "root ::= nope"}, "field 'grammar': grammar: line 1"),
                       ({"json_schema": {"type": "string", "pattern": "a"}}, "'pattern' is not supported"),
                       ({"grammar": 'root ::= "a"', "json_schema": {}}, "give one of them")]:
        code, text = _post(url + "/v1/completions", {"prompt": "a", **extra})
        assert code == 400 and msg in json.loads(text)["error"]["message"], text


def test_completions_stream(served):
    model, url = served
    want = model.generate("Hello world", max_new_tokens=16, temperature=0, ignore_eos=True)
    code, text = _post(url + "/v1/completions", {"prompt": ["Hello world"], "max_tokens": 16, "temperature": 0,
                                                 "stream": True, "ignore_eos": True})
    assert code == 200
    events, done = _events(text)
    assert done and "".join(e["choices"][0]["text"] for e in events) == want.text
    assert [e["choices"][0]["finish_reason"] for e in events][-1] == "length"
    assert all("usage" not in e for e in events)
    _, text = _post(url + "/v1/completions", {"prompt": "Hello world", "max_tokens": 16, "temperature": 0,
                                              "stream": True, "ignore_eos": True,
                                              "stream_options": {"include_usage": True}})
    events, done = _events(text)
    assert done and events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 16
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == want.text


def test_chat_completions(served):
    model, url = served
    msgs = [{"role": "user", "content": "Hello world"}]
    want = model.chat(msgs, max_new_tokens=10, temperature=0)
    _, text = _post(url + "/v1/chat/completions", {"messages": msgs, "max_tokens": 10, "temperature": 0})
    r = json.loads(text)
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"] == {"role": "assistant", "content": want.text}
    _, text = _post(url + "/v1/chat/completions", {"messages": msgs, "max_completion_tokens": 10, "temperature": 0,
                                                   "stream": True})
    events, done = _events(text)
    assert done and events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == want.text


def test_concurrent_clients_are_batched(served):
    model, url = served
    prompts = [prompt_ids(n, seed=80 + i) for i, n in enumerate([3, 17, 8, 25])]
    want = [model.generate(p, max_new_tokens=20, temperature=0, ignore_eos=True).text for p in prompts]
    got = [None] * len(prompts)

    def client(i):
        _, text = _post(url + "/v1/completions", {"prompt": prompts[i], "max_tokens": 20, "temperature": 0,
                                                  "ignore_eos": True})
        got[i] = json.loads(text)["choices"][0]["text"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == want


@pytest.mark.parametrize("body,field", [
    ({"max_tokens": 4}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": "a", "temperature": "hot"}, "temperature"),
    ({"prompt": "a", "temperature": -1}, "temperature"),
    ({"prompt": "a", "max_tokens": True}, "max_tokens"),
    ({"prompt": "a", "max_tokens": -3}, "max_new_tokens"),
    ({"prompt": "a", "n": 0}, "n"),
    ({"prompt": "a", "n": 17}, "n"),
    ({"prompt": "a", "stop": 7}, "stop"),
    ({"prompt": [1, 99999]}, "token id 99999"),
])
def test_bad_requests_name_the_field(served, body, field):
    _, url = served
    code, text = _post(url + "/v1/completions", body)
    assert code == 400, text
    assert field in json.loads(text)["error"]["message"]


def test_other_errors_and_endpoints(served):
    _, url = served
    code, text = _post(url + "/v1/completions", None, raw=b"{not json")
    assert code == 400 and "not JSON" in json.loads(text)["error"]["message"]
    code, text = _post(url + "/v1/completions", None, raw=b"[1, 2]")
    assert code == 400 and "JSON object" in text
    code, text = _post(url + "/v1/chat/completions", {"messages": "hi"})
    assert code == 400 and "messages" in text
    assert _post(url + "/v1/nothing", {})[0] == 404
    with urllib.request.urlopen(url + "/health", timeout=10) as r:
        assert json.loads(r.read()) == {"status": "ok"}
    with urllib.request.urlopen(url + "/v1/models", timeout=10) as r:
        assert json.loads(r.read())["data"][0]["id"] == "tiny"


def _request(url, method="GET", headers=None, body=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def test_cors(served, tmp_path):
    """Without --cors no response names an origin and preflights are refused; with it, the named origins (or
    any, with '*') get Access-Control-Allow-Origin on every response, streamed and errors included, and a
    preflight answer; other origins get none."""
    model, url = served
    page = {"Origin": "http://localhost:3000"}
    code, h, _ = _request(url + "/health", headers=page)
    assert code == 200 and h.get("Access-Control-Allow-Origin") is None
    code, h, text = _request(url + "/v1/completions", "OPTIONS", page)
    assert code == 403 and "--cors" in json.loads(text)["error"]["message"]
    assert _request(url + "/v1/completions", "OPTIONS")[0] == 405
    with pytest.raises(ValueError, match="argument 'cors': 'localhost:3000' is not an origin"):
        Server(model, "tiny", port=0, cors="localhost:3000")
    with Server(model, "tiny", port=0, cors="http://localhost:3000/, https://app.example").start() as srv:
        base = f"http://127.0.0.1:{srv.port}"
        pre = dict(page, **{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
        code, h, text = _request(base + "/v1/chat/completions", "OPTIONS", pre)
        assert code == 204 and text == ""
        assert h["Access-Control-Allow-Origin"] == "http://localhost:3000" and h["Vary"] == "Origin"
        assert "POST" in h["Access-Control-Allow-Methods"] and h["Access-Control-Allow-Headers"] == "content-type"
        body = json.dumps({"prompt": "Hi", "max_tokens": 2, "stream": True}).encode()
        code, h, text = _request(base + "/v1/completions", "POST", dict(page, **{"Content-Type": "application/json"}), body)
        assert code == 200 and h["Access-Control-Allow-Origin"] == "http://localhost:3000" and _events(text)[1]
        code, h, _ = _request(base + "/v1/nothing", "POST", page, b"{}")
        assert code == 404 and h["Access-Control-Allow-Origin"] == "http://localhost:3000"
        code, h, _ = _request(base + "/health", headers={"Origin": "http://evil.example"})
        assert code == 200 and h.get("Access-Control-Allow-Origin") is None
        assert _request(base + "/health", "OPTIONS", {"Origin": "http://evil.example"})[0] == 403
    with Server(model, "tiny", port=0, cors=["*"]).start() as srv:
        code, h, _ = _request(f"http://127.0.0.1:{srv.port}/v1/models", headers={"Origin": "http://evil.example"})
        assert code == 200 and h["Access-Control-Allow-Origin"] == "*" and h.get("Vary") is None


def test_nulls_content_parts_and_connections(served):
    """Fields sent as null take their defaults; chat content as a list of text parts; after an error the
    connection closes (an unread body must not be taken for the next request); a server never started
    closes without hanging."""
    import http.client

    model, url = served
    code, text = _post(url + "/v1/completions", {"prompt": "Hello", "max_tokens": None, "n": None, "seed": None,
                                                 "temperature": 0, "stop": None})
    assert code == 200, text
    msgs = [{"role": "user", "content": "Hello world"}]
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]}]
    a = json.loads(_post(url + "/v1/chat/completions", {"messages": msgs, "max_tokens": 5, "temperature": 0})[1])
    b = json.loads(_post(url + "/v1/chat/completions", {"messages": parts, "max_tokens": 5, "temperature": 0})[1])
    assert a["choices"][0]["message"] == b["choices"][0]["message"]
    code, text = _post(url + "/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image"}]}]})
    assert code == 400 and "messages[0].content" in text
    c = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
    c.request("POST", "/v1/nothing?x=1", body=b'{"prompt": "a"}', headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 404 and r.getheader("Connection") == "close"
    r.read()
    c.close()
    with urllib.request.urlopen(url + "/health?probe=1", timeout=10) as r:  # a query string is not a path
        assert r.status == 200
    srv = Server(model, "idle", port=0)
    assert srv.batcher.prefill_chunk == 256  # the default chunk of a long prompt between two steps
    srv.close()
    srv = Server(model, "whole", port=0, prefill_chunk=None)  # `serve --prefill-chunk 0`
    assert srv.batcher.prefill_chunk is None
    srv.close()
    from edgeformer.cli import main

    with pytest.raises(SystemExit) as e:  # refused before anything binds a port
        main(["serve", "--prefill-chunk", "-5"])
    assert e.value.code == 2


def test_presence_and_frequency_penalties(served):
    model, url = served
    want = model.generate("Hello world", max_new_tokens=10, temperature=0, ignore_eos=True, presence_penalty=1.2,
                          frequency_penalty=0.5)
    code, text = _post(url + "/v1/completions", {"prompt": "Hello world", "max_tokens": 10, "temperature": 0,
                                                 "ignore_eos": True, "presence_penalty": 1.2, "frequency_penalty": 0.5})
    assert code == 200 and json.loads(text)["choices"][0]["text"] == want.text
    code, text = _post(url + "/v1/completions", {"prompt": "x", "frequency_penalty": 2.5})
    assert code == 400 and "frequency_penalty" in json.loads(text)["error"]["message"]


def test_logprobs(served):
    """OpenAI's logprobs: the completions API's parallel lists (logprobs = how many top tokens), the chat API's
    content entries (logprobs: true, top_logprobs); the values are generate(logprobs=k)'s."""
    model, url = served
    want = model.generate("Hello world", max_new_tokens=6, temperature=0, ignore_eos=True, logprobs=3)
    code, text = _post(url + "/v1/completions", {"prompt": "Hello world", "max_tokens": 6, "temperature": 0,
                                                 "ignore_eos": True, "logprobs": 3})
    assert code == 200, text
    lp = json.loads(text)["choices"][0]["logprobs"]
    assert lp["token_logprobs"] == pytest.approx([t.logprob for t in want.logprobs], abs=1e-6)
    # (a dict by token text: two alternatives with the same text share an entry, as in OpenAI's format)
    assert all(1 <= len(d) <= 3 for d in lp["top_logprobs"]) and len(lp["tokens"]) == 6
    assert all(max(d.values()) == pytest.approx(v) for d, v in zip(lp["top_logprobs"], lp["token_logprobs"]))
    assert lp["text_offset"][0] == 0
    assert [b - a for a, b in zip(lp["text_offset"], lp["text_offset"][1:])] == [len(t) for t in lp["tokens"][:-1]]
    messages = [{"role": "user", "content": "Hi"}]
    want = model.chat(messages, max_new_tokens=5, temperature=0, ignore_eos=True, logprobs=2)
    code, text = _post(url + "/v1/chat/completions", {"messages": messages, "max_tokens": 5, "temperature": 0,
                                                      "ignore_eos": True, "logprobs": True, "top_logprobs": 2})
    assert code == 200, text
    content = json.loads(text)["choices"][0]["logprobs"]["content"]
    assert [c["logprob"] for c in content] == pytest.approx([t.logprob for t in want.logprobs], abs=1e-6)
    assert all(len(c["top_logprobs"]) == 2 and c["bytes"] == list(c["token"].encode()) for c in content)
    code, text = _post(url + "/v1/chat/completions", {"messages": messages, "max_tokens": 2})
    assert json.loads(text)["choices"][0]["logprobs"] is None
    # streamed: each chunk carries the tokens made since the one before; together, the same as not streamed
    code, text = _post(url + "/v1/completions", {"prompt": "Hello world", "max_tokens": 6, "temperature": 0,
                                                 "ignore_eos": True, "logprobs": 3, "stream": True})
    events, done = _events(text)
    assert code == 200 and done
    chunks = [e["choices"][0]["logprobs"] for e in events]
    assert sum((c["token_logprobs"] for c in chunks), []) == pytest.approx(lp["token_logprobs"], abs=1e-6)
    assert sum((c["text_offset"] for c in chunks), []) == lp["text_offset"]
    code, text = _post(url + "/v1/chat/completions", {"messages": messages, "max_tokens": 5, "temperature": 0,
                                                      "ignore_eos": True, "logprobs": True, "top_logprobs": 2,
                                                      "stream": True})
    events, done = _events(text)
    assert all("logprobs" in e["choices"][0] for e in events)  # null in the first chunk (the role), as OpenAI's
    streamed = sum((e["choices"][0]["logprobs"]["content"] for e in events if e["choices"][0]["logprobs"]), [])
    assert [c["logprob"] for c in streamed] == pytest.approx([c["logprob"] for c in content], abs=1e-6)
    for body, field in [({"prompt": "x", "logprobs": 21}, "logprobs"),
                        ({"messages": messages, "top_logprobs": 2}, "top_logprobs")]:
        code, text = _post(url + ("/v1/chat/completions" if "messages" in body else "/v1/completions"), body)
        assert code == 400 and field in json.loads(text)["error"]["message"], text


def test_embeddings(served, tmp_path):
    """POST /v1/embeddings: Model.embed's vectors (float lists or base64 of little-endian f32), one or several
    inputs, texts or token ids; an encoder served alone answers embeddings and refuses completions."""
    import base64

    import numpy as np
    import transformers as tf

    import edgeformer
    from conftest import make_model

    make_model(str(tmp_path), tf.BertModel, tf.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                        intermediate_size=64, vocab_size=320))
    bert = edgeformer.load(str(tmp_path), threads=2)
    with Server(bert, "bert", port=0).start() as srv:
        url = f"http://127.0.0.1:{srv.port}"
        texts = ["Hello world", "a second, longer sentence"]
        want = bert.embed(texts)
        code, text = _post(url + "/v1/embeddings", {"input": texts})
        assert code == 200, text
        r = json.loads(text)
        assert r["object"] == "list" and [d["index"] for d in r["data"]] == [0, 1] and r["model"] == "bert"
        np.testing.assert_allclose(np.array([d["embedding"] for d in r["data"]]), want, rtol=1e-6, atol=1e-7)
        assert r["usage"]["prompt_tokens"] == sum(len(bert._tok.encode(t)) for t in texts)
        code, text = _post(url + "/v1/embeddings", {"input": "Hello world", "encoding_format": "base64"})
        got = np.frombuffer(base64.b64decode(json.loads(text)["data"][0]["embedding"]), "<f4")
        np.testing.assert_array_equal(got, want[0])
        ids = bert._tok.encode("Hello world")
        code, text = _post(url + "/v1/embeddings", {"input": ids})  # one list of token ids
        np.testing.assert_allclose(json.loads(text)["data"][0]["embedding"], want[0], rtol=1e-6, atol=1e-7)
        for body, field in [({"input": []}, "input"), ({"input": 3}, "input"), ({"input": [[999]]}, "input"),
                            ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
                            ({"input": "x", "dimensions": 8}, "dimensions")]:
            code, text = _post(url + "/v1/embeddings", body)
            assert code == 400 and field in json.loads(text)["error"]["message"], (body, text)
        code, text = _post(url + "/v1/completions", {"prompt": "Hello"})
        assert code == 400 and "/v1/embeddings" in json.loads(text)["error"]["message"]
    model, url = served  # a decoder embeds too (its pooling: the checkpoint's, else the mean)
    code, text = _post(url + "/v1/embeddings", {"input": "Hello world"})
    assert code == 200
    np.testing.assert_allclose(json.loads(text)["data"][0]["embedding"], model.embed("Hello world")[0],
                               rtol=1e-5, atol=1e-6)


def test_a_client_that_goes_away_cancels_its_request(served):
    model, url = served
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"prompt": "Hello", "max_tokens": 60, "temperature": 0, "stream": True,
                       "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert s.recv(64).startswith(b"HTTP/1.1 200")
    s.close()  # mid-stream
    # the server goes on serving, with the same answers
    want = model.generate("Hello world", max_new_tokens=5, temperature=0, ignore_eos=True)
    _, text = _post(url + "/v1/completions", {"prompt": "Hello world", "max_tokens": 5, "temperature": 0,
                                              "ignore_eos": True})
    assert json.loads(text)["choices"][0]["text"] == want.text


def test_command_line_serve(tmp_path):
    """`edgeformer serve MODEL --port N` answers, and Ctrl-C stops it cleanly."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import make_llama

    make_llama(str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "edgeformer", "serve", str(tmp_path), "--port", str(port),
                          "--threads", "1", "--max-context", "64", "--cors", "*", "--prefix-cache", "2", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        line = p.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, (line, p.stderr.read() if p.poll() is not None else "")
        code, h, text = _request(f"http://127.0.0.1:{port}/health", headers={"Origin": "https://app.example"})
        assert code == 200 and json.loads(text) == {"status": "ok"} and h["Access-Control-Allow-Origin"] == "*"
        code, text = _post(f"http://127.0.0.1:{port}/v1/completions", {"prompt": "Hello", "max_tokens": 3})
        assert code == 200 and json.loads(text)["usage"]["completion_tokens"] <= 3
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 0
