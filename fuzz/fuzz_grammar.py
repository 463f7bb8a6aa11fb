#!/usr/bin/env python3
"""Fuzz constrained generation: arbitrary GBNF text through the grammar parser, and arbitrary JSON Schemas
through edgeformer.json_schema_to_gbnf, then the automaton driven by a sampler over a small vocabulary of
one- to four-byte tokens (ASCII, JSON punctuation, whole and split UTF-8 characters, bytes that are never
UTF-8), with logits from the input.

Input layout (no FuzzedDataProvider, so that replaying needs no atheris):
    byte 0: mode (% 2: GBNF text; JSON Schema text), byte 1: sampling (% 2: greedy; temperature 1)
    the rest: the text, then after the first 0x00 byte the logits (a byte per token per step, cycled)

Findings: any exception but a ValueError (the grammar or schema refused); a schema the converter accepts whose
GBNF the parser refuses as malformed (a syntax error in what the converter wrote); a sampled token the grammar's
mask does not allow; a generation under a schema's grammar that finished and is not JSON.

    python fuzz/fuzz_grammar.py --make-seeds          # writes fuzz/corpus/grammar/
    python fuzz/fuzz_grammar.py fuzz/corpus/grammar -max_total_time=60
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from edgeformer import _core
from edgeformer.grammar import JSON_GBNF, Grammar, json_schema_to_gbnf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "grammar"
EOS = 0
VOCAB = [b""] + [bytes([c]) for c in range(1, 128)] + [
    b'{"', b'":', b'",', b'"}', b"  ", b"\n ", b"true", b"null", b"12", b"-0", b".5", b"e+", b"\\u00", b"\\n",
    "é".encode(), "€".encode(), "🙂".encode(), b"\xc3", b"\xa9", b"\xe2\x82", b"\xf0\x9f", b"\x99\x82", b"\xff",
    b"\xc0\xa2", b"ab", b"abc", b"root"]
_VOCAB = None


def vocab():
    global _VOCAB
    if _VOCAB is None:
        _VOCAB = _core.GrammarVocab(VOCAB, [EOS], False)
    return _VOCAB


def _run(data: bytes) -> None:
    head, rest = (data[:2] + bytes(2))[:2], data[2:]
    mode, sampled = head[0] % 2, head[1] % 2
    text, _, noise = rest.partition(b"\x00")
    src = text.decode("utf-8", "replace")
    if mode == 1:
        try:
            schema = json.loads(src)
        except (json.JSONDecodeError, RecursionError):
            common.feature("schema", "not json")
            return
        try:
            gbnf = json_schema_to_gbnf(schema)
        except ValueError as e:
            common.feature("schema", "refused", str(e)[:30])
            return
        except RecursionError:
            raise common.Finding("json_schema_to_gbnf recursed without bound")
        try:
            g = Grammar(gbnf)
        except ValueError as e:
            if "line " in str(e):
                raise common.Finding(f"the converter wrote GBNF the parser refuses: {e}\n{gbnf[:2000]}")
            common.feature("schema", "grammar refused", str(e)[:30])
            return
    else:
        try:
            g = Grammar(src)
        except ValueError as e:
            common.feature("gbnf", "refused", str(e)[:24])
            return
    bound = _core.Grammar(g._rules, vocab())
    o = _core.SamplerOptions()
    o.temperature = 1.0 if sampled else 0.0
    o.seed = len(data)
    o.grammar = bound
    try:
        s = _core.Sampler(o)
    except ValueError as e:  # rules nesting past the expansion limit
        common.feature(mode, "start refused", str(e)[:24])
        return
    V = len(VOCAB)
    noise = noise or b"\x01"
    toks = []
    for step in range(48):
        logits = np.array([noise[(step * V + i) % len(noise)] for i in range(V)], np.float32) / 16.0
        mask = bound.allowed(toks)
        if mask is None:
            raise common.Finding(f"the grammar refuses the tokens its own sampler drew: {toks}")
        try:
            t = s.sample(logits, np.zeros(0, np.int32))
        except ValueError as e:  # too ambiguous / nesting too deep: refused mid-way is allowed
            common.feature(mode, "step refused", str(e)[:24])
            return
        if t < 0:
            if mask.any():
                raise common.Finding(f"the sampler found no token where the mask allows {np.flatnonzero(mask)[:10]}")
            common.feature(mode, "dead end")
            return
        if not mask[t]:
            raise common.Finding(f"token {t} sampled where the mask refuses it (after {toks})")
        if t == EOS or s.grammar_finished:
            if t != EOS:
                toks.append(t)
            break
        toks.append(t)
    text_out = b"".join(VOCAB[t] for t in toks)
    common.feature(mode, sampled, common.bucket(len(toks)), "eos" if t == EOS else "finished" if s.grammar_finished else "ran")
    if mode == 1 and (t == EOS or s.grammar_finished):
        try:
            json.loads(text_out.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise common.Finding(f"a schema's grammar finished on text that is not JSON: {text_out!r:.300} ({e})")


def check(data: bytes) -> None:
    _run(data)


def make_seeds(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    seeds = {
        "json": (0, 1, JSON_GBNF),
        "classes": (0, 0, 'root ::= [a-c]+ [^x-z\\n]* ( "é" | [\\u00e0-\\u00ff]{2,3} ) "." # end\n'),
        "repeat": (0, 1, 'root ::= item ("," item){0,4}\nitem ::= "ab" | [0-9]+ | "\\"" [^"]* "\\""\n'),
        "schema_object": (1, 1, json.dumps({"type": "object", "properties": {
            "n": {"type": "integer", "minimum": 0}, "s": {"type": "string", "maxLength": 4},
            "l": {"type": "array", "items": {"enum": [1, "x", None]}, "maxItems": 3}}, "required": ["n"]})),
        "schema_refs": (1, 0, json.dumps({"$defs": {"t": {"type": "object", "properties": {
            "k": {"type": "array", "items": {"$ref": "#/$defs/t"}}}}}, "$ref": "#/$defs/t"})),
        "schema_any": (1, 1, json.dumps({"anyOf": [{"type": "number"}, {"type": "boolean"}, {"const": "c"}]})),
    }
    for name, (mode, samp, text) in seeds.items():
        noise = bytes((i * 37 + len(name)) % 251 for i in range(97))
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(bytes([mode, samp]) + text.encode() + b"\x00" + noise)


if __name__ == "__main__":
    if sys.argv[1:] == ["--make-seeds"]:
        make_seeds(os.path.join(common.CORPUS_DIR, NAME))
    else:
        vocab()
        common.fuzz_main(NAME, check)
