"""An OpenAI-compatible HTTP server over continuous batching: `edgeformer serve [MODEL]`.

    POST /v1/completions        {"prompt": "...", "max_tokens": 64, "temperature": 0.7, "stream": true, ...}
    POST /v1/chat/completions   {"messages": [{"role": "user", "content": "..."}], ...} (the chat template)
    POST /v1/embeddings         {"input": "..." or ["...", ...]} (Model.embed: the checkpoint's pooling)
    GET  /v1/models, GET /health

An encoder (BERT, MiniLM) serves embeddings only. Every completion is a request of one Batcher (python/edgeformer/batching.py), so concurrent clients share decode
steps. Streaming answers are server-sent events ending with `data: [DONE]`; a client that goes away cancels
its request. Bad requests get a 400 with an OpenAI-style error naming the field. The standard library's
threading HTTP server: meant for a machine's own clients or a trusted network, behind a proxy otherwise.
A web page may call it from the origins `--cors` names (CORS headers and preflights); by default none."""

from __future__ import annotations

import base64
import json
import math
import queue
import select
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import numpy as np

from .batching import Batcher, BatcherClosed
from .embeddings import token_lists
from .grammar import Grammar
from .tools import check_tools, forced_grammar, parse_tool_calls, template_messages, tool_choice

MAX_BODY = 16 << 20
# OpenAI's finish reasons: ours "eos" and "stop" are its "stop"; the length and context limits its "length"
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length", "cancelled": "length"}


class BadRequest(ValueError):
    pass


def _field(body: Dict[str, Any], name: str, kinds, default=None):
    """body[name] (default when absent or null), which must be of one of kinds (bool is not an int here unless
    asked for)."""
    v = body.get(name)
    if v is None:
        v = default
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if v is not None and (not isinstance(v, kinds) or isinstance(v, bool) and bool not in kinds):
        raise BadRequest(f"field '{name}': expected {' or '.join(k.__name__ for k in kinds)}, got {type(v).__name__}")
    return v


def _content(c, i: int) -> str:
    """A message's content: a string, null (an assistant turn that called tools), or OpenAI's list of parts
    (text parts only here)."""
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                                   for p in c):
        return "".join(p["text"] for p in c)
    raise BadRequest(f"field 'messages[{i}].content': expected a string or a list of text parts")


MAX_N = 16  # the most choices one request may ask for (each is a request of the Batcher)


def _grammar(body: Dict[str, Any]):
    """The grammar a request asks for, if any: OpenAI's response_format ({"type": "json_object"}: any JSON
    object; {"type": "json_schema", "json_schema": {"schema": ...}}: the schema's), or llama.cpp's server fields
    `json_schema` (a schema) and `grammar` (GBNF text)."""
    asked = [k for k in ("response_format", "json_schema", "grammar") if body.get(k) is not None]
    if len(asked) > 1:
        raise BadRequest(f"fields '{asked[0]}' and '{asked[1]}': give one of them")
    try:
        if "grammar" in asked:
            return Grammar(_field(body, "grammar", str))
        if "json_schema" in asked:
            return Grammar.from_json_schema(_field(body, "json_schema", (dict, bool)))
        if not asked:
            return None
        rf = _field(body, "response_format", dict)
        kind = rf.get("type")
        if kind == "text":
            return None
        if kind == "json_object":
            schema = rf.get("schema")  # (llama.cpp's server takes a schema here too)
            return Grammar.json() if schema is None else Grammar.from_json_schema(schema)
        if kind == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict) or "schema" not in js:
                raise BadRequest("field 'response_format.json_schema': expected an object with a 'schema'")
            return Grammar.from_json_schema(js["schema"])
        raise BadRequest(f"field 'response_format.type': expected 'text', 'json_object' or 'json_schema', got {kind!r}")
    except BadRequest:
        raise
    except ValueError as e:
        raise BadRequest(f"field '{asked[0]}': {e}") from None


def _tools(body: Dict[str, Any]) -> Tuple[Optional[List[Dict[str, Any]]], str, Optional[str]]:
    """(the request's checked tools, or None; tool_choice's mode; the forced function's name)."""
    tools = body.get("tools")
    if tools is None:
        if body.get("tool_choice") not in (None, "none"):
            raise BadRequest("field 'tool_choice': needs 'tools'")
        return None, "none", None
    try:
        tools = check_tools(tools)
        mode, only = tool_choice(body.get("tool_choice"), tools)
    except ValueError as e:
        raise BadRequest(str(e).replace("argument '", "field '")) from None
    return tools, mode, only


def generation_args(model, body: Dict[str, Any], chat: bool):
    """(prompt for Batcher.submit, the keyword arguments of each choice (`n` of them: with a seed s, choice i
    samples with s + i), stream, a usage chunk at the stream's end, the tools whose calls the replies may hold
    (None: no tools in play)) from an OpenAI request body."""
    tools, mode = None, "none"
    forced = None
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("field 'messages': expected a non-empty list of {'role', 'content'} objects")
        messages = [dict(m, content=_content(m.get("content"), i)) for i, m in enumerate(messages)]
        tools, mode, only = _tools(body)
        if mode == "required":
            if any(body.get(k) is not None for k in ("response_format", "json_schema", "grammar")):
                raise BadRequest("field 'tool_choice': a required tool call does not combine with response_format, "
                                 "json_schema or grammar")
            forced = forced_grammar(tools, only)
        try:
            text = model._tok.apply_chat_template(template_messages(messages), add_generation_prompt=True,
                                                  tools=tools if mode != "none" else None)
        except ValueError as e:
            raise BadRequest(f"field 'messages': {e}") from None
        except Exception as e:  # a template error (jinja2): the request's doing or the checkpoint's
            raise BadRequest(f"field 'messages': the chat template failed: {e}") from None
        prompt: Any = model._tok.encode(text, add_special_tokens=False)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            if len(prompt) != 1:
                raise BadRequest("field 'prompt': one prompt per request (send several requests: they are batched)")
            prompt = prompt[0]
        if not (isinstance(prompt, str) or isinstance(prompt, list) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in prompt)):
            raise BadRequest("field 'prompt': expected a string or a list of token ids")
    max_new = _field(body, "max_completion_tokens", int)
    kw: Dict[str, Any] = {
        "max_new_tokens": max_new if max_new is not None else _field(body, "max_tokens", int, 128),
        "temperature": _field(body, "temperature", (int, float)),
        "top_p": _field(body, "top_p", (int, float)),
        "top_k": _field(body, "top_k", int),
        "min_p": _field(body, "min_p", (int, float)),
        "repetition_penalty": _field(body, "repetition_penalty", (int, float)),
        "presence_penalty": _field(body, "presence_penalty", (int, float)),
        "frequency_penalty": _field(body, "frequency_penalty", (int, float)),
        "logit_bias": _field(body, "logit_bias", dict),
        "seed": _field(body, "seed", int),
        "stop": _field(body, "stop", (str, list)),
        "ignore_eos": _field(body, "ignore_eos", bool, False),  # as llama.cpp's server takes it
        "grammar": forced or _grammar(body),
    }
    n = _field(body, "n", int, 1)
    if not 1 <= n <= MAX_N:
        raise BadRequest(f"field 'n': expected 1..{MAX_N}, got {n}")
    stream = _field(body, "stream", bool, False)
    # log-probabilities: the completions API's logprobs (how many top tokens), the chat API's logprobs (whether)
    # with top_logprobs (how many)
    if chat:
        top = _field(body, "top_logprobs", int)
        want = _field(body, "logprobs", bool, False)
        if top is not None and not want:
            raise BadRequest("field 'top_logprobs': needs 'logprobs': true")
        k = (top or 0) if want else None
    else:
        k = _field(body, "logprobs", int)
    if k is not None:
        if not 0 <= k <= 20:
            raise BadRequest(f"field '{'top_logprobs' if chat else 'logprobs'}': expected 0..20, got {k}")
        kw["logprobs"] = k
    options = _field(body, "stream_options", dict, {})
    include_usage = _field(options, "include_usage", bool, False)
    seed = kw["seed"]
    return (prompt, [dict(kw, seed=None if seed is None else seed + i) for i in range(n)], stream, include_usage,
            tools if mode != "none" else None)


def _reply(text: str, tools: Optional[List[Dict[str, Any]]]) -> Tuple[Dict[str, Any], bool]:
    """(a chat reply's message, whether it calls tools): with tools in play, the calls read from its text."""
    if tools:
        content, calls = parse_tool_calls(text, tools)
        if calls:
            return {"role": "assistant", "content": content, "tool_calls": calls}, True
    return {"role": "assistant", "content": text}, False


def _logprobs(model, lps, chat: bool, offset: int = 0, context: Sequence[int] = ()) -> Optional[Dict[str, Any]]:
    """OpenAI's logprobs object of TokenLogprobs (None for None): the chat API's {"content": [{token, logprob,
    bytes, top_logprobs}]}, or the completions API's parallel lists, text offsets counted from `offset`.
    context: the generated tokens before lps[0] (a stream's earlier chunks).

    A token's text is what it adds after the few tokens before it (so SentencePiece's leading spaces are kept,
    as in the text), special tokens included; an alternative's, what it would have added there. A token that
    ends inside a multi-byte character reads U+FFFD, and `bytes` are those of the text as decoded. Log-
    probabilities that are not finite (a logit of -inf) read -9999.0, as OpenAI's: JSON has no infinity."""
    if lps is None:
        return None
    tk = model._tok.tokenizer
    seq = list(context) + [t.token_id for t in lps]
    base = len(context)

    def text_after(prev: List[int], tok: int) -> str:
        if tk is None:
            return str(tok)
        head = tk.decode(prev, skip_special_tokens=False) if prev else ""
        return tk.decode(prev + [tok], skip_special_tokens=False)[len(head):]

    def finite(x: float) -> float:
        return x if math.isfinite(x) else -9999.0

    entries = []
    for n, t in enumerate(lps):
        prev = seq[max(0, base + n - 4) : base + n]  # a few tokens of context
        entries.append((text_after(prev, t.token_id), finite(t.logprob),
                        [(text_after(prev, i), finite(lp)) for i, lp in t.top]))
    if chat:
        def entry(text: str, lp: float) -> Dict[str, Any]:
            return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

        return {"content": [dict(entry(text, lp), top_logprobs=[entry(a, b) for a, b in top])
                            for text, lp, top in entries]}
    offsets, at = [], offset
    for text, _, _ in entries:
        offsets.append(at)
        at += len(text)
    return {"tokens": [e[0] for e in entries], "token_logprobs": [e[1] for e in entries],
            "top_logprobs": [_first_of_each(e[2]) for e in entries], "text_offset": offsets}


def _first_of_each(pairs: List[Tuple[str, float]]) -> Dict[str, float]:
    """{text: log-probability}, most likely first; of two tokens with the same text, the more likely one."""
    d: Dict[str, float] = {}
    for text, lp in pairs:
        d.setdefault(text, lp)
    return d


def _usage(rs) -> Dict[str, Any]:
    """OpenAI's usage of a request's choices (their GenerationResults): the prompt counted once."""
    done = sum(len(r.token_ids) for r in rs)
    return {"prompt_tokens": rs[0].prompt_tokens, "completion_tokens": done, "total_tokens": rs[0].prompt_tokens + done,
            "prompt_tokens_details": {"cached_tokens": rs[0].cached_tokens}}


class Server:
    """Serves one model. start() runs it on a thread (tests, embedding); serve_forever() in the caller's."""

    def __init__(self, model, name: str, host: str = "127.0.0.1", port: int = 8080, max_batch: int = 16,
                 prefill_chunk: Optional[int] = 256, cors: Optional[Sequence[str]] = None, prefix_cache: int = 4):
        self.model = model
        self.name = name
        # origins whose browser pages may call the API ("*": any); none: no CORS headers, preflights refused
        self.cors = _cors_origins(cors)
        server = self

        class Handler(_Handler):
            srv = server

        self.httpd = ThreadingHTTPServer((host, port), Handler)  # first: a port in use leaves nothing running
        self.httpd.daemon_threads = True
        # (an encoder serves embeddings alone: no generation, no batch)
        self.batcher = None if model.is_encoder else Batcher(model, max_batch=max_batch, prefill_chunk=prefill_chunk,
                                                             prefix_cache=prefix_cache)
        self._thread: Optional[threading.Thread] = None
        self._serving = False

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def serve_forever(self) -> None:
        self._serving = True
        self.httpd.serve_forever()

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self.serve_forever, name="edgeformer-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._serving:  # shutdown() waits for serve_forever() to notice: only if it ever ran
            self.httpd.shutdown()
            self._serving = False
        self.httpd.server_close()
        if self.batcher is not None:
            self.batcher.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cors_origins(cors) -> Tuple[str, ...]:
    if cors is None:
        return ()
    if isinstance(cors, str):
        cors = cors.split(",")
    origins = tuple(o.strip().rstrip("/") for o in cors if o.strip())
    for o in origins:
        if o != "*" and not (o.startswith("http://") or o.startswith("https://")):
            raise ValueError(f"argument 'cors': {o!r} is not an origin (expected '*' or scheme://host[:port])")
    return origins


class _Handler(BaseHTTPRequestHandler):
    srv: Server
    protocol_version = "HTTP/1.1"
    timeout = 120  # a connection that sends nothing for this long is dropped (a thread each)

    def log_message(self, fmt, *args):  # quiet: a server's access log is its caller's business
        pass

    def _allowed_origin(self) -> Optional[str]:
        """The Access-Control-Allow-Origin value for this request: None unless its Origin is allowed."""
        headers = getattr(self, "headers", None)  # absent when the request line itself was bad
        origin = headers.get("Origin") if headers is not None else None
        if not origin or not self.srv.cors:
            return None
        if "*" in self.srv.cors:
            return "*"
        return origin if origin.rstrip("/") in self.srv.cors else None

    def end_headers(self) -> None:  # every response, streamed or not, errors included
        allow = self._allowed_origin()
        if allow is not None:
            self.send_header("Access-Control-Allow-Origin", allow)
            if allow != "*":
                self.send_header("Vary", "Origin")
        super().end_headers()

    def do_OPTIONS(self) -> None:
        """A browser's CORS preflight: allowed where serve(cors=...) names the page's origin."""
        if self._allowed_origin() is None:
            origin = self.headers.get("Origin")
            why = ("this server sends no CORS headers (start it with --cors ORIGINS)" if not self.srv.cors else
                   f"origin {origin!r} is not among --cors {','.join(self.srv.cors)}")
            self._error(403 if origin else 405, f"OPTIONS {self.path}: {why}", "permission_error")
            return
        self.send_response(204)
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers",
                         self.headers.get("Access-Control-Request-Headers") or "Content-Type, Authorization")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, code: int, obj: Any, close: bool = False) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str, kind: str = "invalid_request_error") -> None:
        # the connection closes after an error: a body the request sent may not have been read, and would be
        # taken for the next request
        self._json(code, {"error": {"message": message, "type": kind, "code": code}}, close=True)

    def _client_gone(self) -> bool:
        """Whether the client closed its side (a readable socket with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _body(self) -> Optional[Dict[str, Any]]:
        """The request's JSON object, or None once an error has been answered."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "a Content-Length header is required")
            return None
        if length < 0 or length > MAX_BODY:
            self._error(413, f"request body of {length} bytes (at most {MAX_BODY})")
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except json.JSONDecodeError as e:
            self._error(400, f"the body is not JSON: {e}")
            return None
        if not isinstance(body, dict):
            self._error(400, "the body must be a JSON object")
            return None
        return body

    def _embeddings(self) -> None:
        """OpenAI's embeddings API over Model.embed (pooling and normalization as the checkpoint declares)."""
        body = self._body()
        if body is None:
            return
        model = self.srv.model
        try:
            fmt = _field(body, "encoding_format", str, "float")
            if fmt not in ("float", "base64"):
                raise BadRequest(f"field 'encoding_format': expected 'float' or 'base64', got {fmt!r}")
            dims = _field(body, "dimensions", int)
            if dims is not None and dims != model.spec.hidden_size:
                raise BadRequest(f"field 'dimensions': this model's embeddings have {model.spec.hidden_size}, "
                                 f"not {dims}")
            inp = body.get("input")
            if isinstance(inp, list) and inp and all(isinstance(t, int) and not isinstance(t, bool) for t in inp):
                inp = [inp]  # one list of token ids
            if not (isinstance(inp, str) or isinstance(inp, list) and all(
                    isinstance(x, str) or isinstance(x, list) for x in inp)):
                raise BadRequest("field 'input': expected a string, a list of strings, or lists of token ids")
            try:
                seqs = token_lists(model, inp, what="input")
                vecs = model.embed(seqs)
            except ValueError as e:
                raise BadRequest(f"field 'input': {e}" if not str(e).startswith("input") else str(e)) from None
        except BadRequest as e:
            self._error(400, str(e))
            return
        except Exception as e:
            self._error(500, f"{type(e).__name__}: {e}", "server_error")
            return
        data = []
        for i, v in enumerate(vecs):
            emb: Any = (base64.b64encode(np.asarray(v, "<f4").tobytes()).decode() if fmt == "base64"
                        else [float(x) for x in v])
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = sum(len(q) for q in seqs)
        self._json(200, {"object": "list", "data": data, "model": self.srv.name,
                         "usage": {"prompt_tokens": n, "total_tokens": n}})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": self.srv.name, "object": "model", "created": 0,
                                                         "owned_by": "edgeformer"}]})
        else:
            self._error(404, f"no such endpoint: GET {self.path}", "not_found_error")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        chat = path == "/v1/chat/completions"
        if path == "/v1/embeddings":
            self._embeddings()
            return
        if not chat and path != "/v1/completions":
            self._error(404, f"no such endpoint: POST {self.path}", "not_found_error")
            return
        if self.srv.batcher is None:
            self._error(400, f"{self.srv.name} is an encoder: it serves POST /v1/embeddings, not {path}")
            return
        body = self._body()
        if body is None:
            return
        reqs = []
        try:
            prompt, kws, stream, include_usage, tools = generation_args(self.srv.model, body, chat)
            for kw in kws:
                reqs.append(self.srv.batcher.submit(prompt, **kw))
        except ValueError as e:  # BadRequest, and submit()'s checks, which name the argument
            for r in reqs:
                r.cancel()
            self._error(400, str(e))
            return
        except BatcherClosed as e:  # shutting down
            self._error(503, str(e), "server_error")
            return
        except Exception as e:
            self._error(500, f"{type(e).__name__}: {e}", "server_error")
            return
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        if stream:
            self._stream(reqs, rid, created, chat, include_usage, tools)
            return
        results = []
        try:
            for req in reqs:
                r = None
                while r is None:  # a client that goes away cancels its requests
                    r = req.wait(timeout=0.25)
                    if r is None and self._client_gone():
                        for q in reqs:
                            q.cancel()
                        return
                results.append(r)
        except Exception as e:  # a request failed (its KV cache could not be allocated, say)
            for q in reqs:
                q.cancel()
            self._error(500, f"{type(e).__name__}: {e}", "server_error")
            return
        choices = []
        for i, r in enumerate(results):
            choice: Dict[str, Any] = {"index": i, "finish_reason": FINISH.get(r.finish_reason, "stop"),
                                      "logprobs": _logprobs(self.srv.model, r.logprobs, chat)}
            if chat:
                choice["message"], called = _reply(r.text, tools)
                if called:
                    choice["finish_reason"] = "tool_calls"
            else:
                choice["text"] = r.text
            choices.append(choice)
        self._json(200, {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                         "model": self.srv.name, "choices": choices, "usage": _usage(results)})

    def _stream(self, reqs, rid: str, created: int, chat: bool, include_usage: bool,
                tools: Optional[List[Dict[str, Any]]] = None) -> None:
        """Server-sent events of a request's choices, each chunk one choice's piece as the steps make them. With
        tools in play, a choice's text is held to its end: then its content, or its tool calls, in one chunk."""
        obj = "chat.completion.chunk" if chat else "text_completion"
        sent = [[0, 0] for _ in reqs]  # with logprobs, per choice: tokens whose log-probabilities went out, and
        # their text's length

        def new_logprobs(i: int) -> Optional[Dict[str, Any]]:
            """Choice i's log-probabilities of the tokens made since its last chunk. The worker records a token's
            before its text piece reaches the queue, and the decoder holds text back (a stop string's start, a
            character's first bytes), so a chunk's tokens need not be its text's; all chunks together are."""
            seq, done = reqs[i]._seq, sent[i]
            if seq.lps is None:
                return None
            lps = seq.lps[done[0]:]
            out = _logprobs(self.srv.model, lps, chat, done[1], [t.token_id for t in seq.lps[: done[0]]])
            done[0] += len(lps)
            if not chat and lps:
                done[1] = out["text_offset"][-1] + len(out["tokens"][-1])
            return out

        def chunk(i: int, piece: Optional[str], finish: Optional[str], first: bool = False) -> bytes:
            if chat:
                delta: Dict[str, Any] = {"role": "assistant"} if first else {}
                if piece is not None:
                    delta["content"] = piece
                choice: Dict[str, Any] = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
                if reqs[i]._seq.lps is not None and not first:
                    choice["logprobs"] = new_logprobs(i)
            else:
                choice = {"index": i, "text": piece or "", "logprobs": new_logprobs(i), "finish_reason": finish}
            data = {"id": rid, "object": obj, "created": created, "model": self.srv.name, "choices": [choice]}
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        # each choice's pieces, from a thread of its own, into one queue: (choice, piece, None) while it runs,
        # (choice, None, None) at its end, (choice, None, exception) if it fails
        events: "queue.Queue[Tuple[int, Optional[str], Optional[BaseException]]]" = queue.Queue()

        def pump(i: int) -> None:
            try:
                for piece in reqs[i]:
                    events.put((i, piece, None))
                events.put((i, None, None))
            except BaseException as e:
                events.put((i, None, e))

        for i in range(len(reqs)):
            threading.Thread(target=pump, args=(i,), name="edgeformer-stream", daemon=True).start()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if chat:
                for i in range(len(reqs)):
                    self.wfile.write(chunk(i, None, None, first=True))
            running = len(reqs)
            while running:
                try:
                    i, piece, err = events.get(timeout=0.25)
                except queue.Empty:  # nothing new (a long prompt, text held back): is the client still there?
                    if self._client_gone():
                        raise BrokenPipeError("the client went away") from None
                    continue
                if err is not None:
                    raise err
                if piece is not None:
                    if not tools:
                        self.wfile.write(chunk(i, piece, None))
                elif tools:  # the whole reply: its calls, or its text
                    msg, called = _reply(reqs[i].result.text, tools)
                    delta = {k: v for k, v in msg.items() if k != "role" and v is not None}
                    if called:
                        delta["tool_calls"] = [dict(c, index=j) for j, c in enumerate(delta["tool_calls"])]
                    data = {"id": rid, "object": obj, "created": created, "model": self.srv.name,
                            "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}]}
                    self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
                    finish = "tool_calls" if called else FINISH.get(reqs[i].result.finish_reason, "stop")
                    self.wfile.write(chunk(i, None, finish))
                    running -= 1
                else:
                    self.wfile.write(chunk(i, None, FINISH.get(reqs[i].result.finish_reason, "stop")))
                    running -= 1
                self.wfile.flush()
            if include_usage:  # OpenAI's stream_options: one more chunk, no choices, the usage
                data = {"id": rid, "object": obj, "created": created, "model": self.srv.name, "choices": [],
                        "usage": _usage([r.result for r in reqs])}
                self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client went away: its requests end at the next step
            for r in reqs:
                r.cancel()
        except Exception as e:  # a request failed mid-stream: an error event (OpenAI's clients raise on it)
            for r in reqs:
                r.cancel()
            err = {"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error", "code": 500}}
            try:
                self.wfile.write(b"data: " + json.dumps(err).encode() + b"\n\n")
                self.wfile.flush()
            except OSError:
                pass


def serve(model, name: str, host: str, port: int, max_batch: int, prefill_chunk: Optional[int] = 256,
          cors: Optional[Sequence[str]] = None, prefix_cache: int = 4) -> int:
    srv = Server(model, name, host, port, max_batch, prefill_chunk, cors, prefix_cache)
    api = "/v1/embeddings" if model.is_encoder else "/v1/completions, /v1/chat/completions, /v1/embeddings"
    print(f"edgeformer: serving {name} on http://{host}:{srv.port} (OpenAI API: {api}; Ctrl-C stops)", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()
    return 0
