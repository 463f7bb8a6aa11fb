"""Constrained generation: the GBNF parser, the automaton's token masks against brute force, the JSON grammar
against Python's json module, JSON Schema, token bytes of both tokenizer kinds, and generate / batches / Batcher
with a grammar against masked reference logits."""

from __future__ import annotations

import itertools
import json
import random
import re

import numpy as np
import pytest

import edgeformer
from edgeformer import Grammar, _core, json_schema_to_gbnf
from edgeformer.grammar import JSON_GBNF, token_bytes

from conftest import make_llama

EOS = 0


def bound(gbnf: str, vocab, strip: bool = False):
    """gbnf bound to a vocabulary of byte strings (id 0 is the end token)."""
    return _core.Grammar(_core.GrammarRules(gbnf), _core.GrammarVocab([b""] + list(vocab), [EOS], strip))


def allowed_set(g, ids):
    a = g.allowed(ids)
    return None if a is None else set(np.flatnonzero(a).tolist())


@pytest.mark.parametrize("text,msg", [
    ('root ::= "a', "line 1, column 10: unterminated string literal"),
    ('root ::= foo', "rule 'foo' is used but never defined"),
    ('root ::= root "a"', "rule 'root' is left-recursive"),
    ('root ::= ("")*', "left-recursive"),
    ('x ::= "a"', "no rule named 'root'"),
    ('root ::= [z-a]', "end is before its start"),
    ('root ::= "a"{3,2}', "n < m"),
    ('root ::= "\\q"', "unknown escape '\\q'"),
    ('root ::= "a"\nroot ::= "b"', "line 2, column 1: rule 'root' is defined twice"),
    ('root ::= ("a" ', "unclosed '('"),
    ('root ::= "a" @', "unexpected character '@'"),
    ('root ::= [ab', "unterminated character class"),
    ('root ::= "a"{20000}', "above 10000"),
    ('', "the grammar is empty"),
])
def test_parse_errors_name_the_place(text, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        Grammar(text)


def test_bad_arguments():
    with pytest.raises(ValueError, match="expected GBNF text"):
        Grammar(3)
    with pytest.raises(ValueError, match="no rule named 'start'"):
        Grammar('root ::= "a"', root="start")


def _sentences(pattern: str, alphabet: str, n: int):
    return {"".join(p) for k in range(n + 1) for p in itertools.product(alphabet, repeat=k)
            if re.fullmatch(pattern, "".join(p))}


@pytest.mark.parametrize("gbnf,pattern", [
    ('root ::= "a" [bc]* "d"', "a[bc]*d"),
    ('root ::= ("ab" | "a" x) "d"?\nx ::= [b-c]{1,2}', "(ab|a[b-c]{1,2})d?"),
    ('root ::= [^a]+ "a"', "[^a]+a"),
    ('root ::= ( "é" | [à-ë] "b" )+ # comment\n', "(é|[à-ë]b)+"),
    ('root ::= . "a"{2,}', ".a{2,}"),
    ('root ::= item ("," item)*\nitem ::= "b" | "cd"', "(b|cd)(,(b|cd))*"),
])
def test_masks_match_brute_force(gbnf, pattern):
    """After every short text, a token is allowed exactly when text + token begins some sentence; the end token
    exactly when the text is one. Tokens of one, two and three characters, and the two bytes of 'é' apart."""
    alphabet = "abcdé,àë"
    chars = list(alphabet)
    vocab = [c.encode() for c in chars] + [(a + b).encode() for a in "abcd" for b in "abcd,"] + [b"ab,", b"\xc3", b"\xa9"]
    g = bound(gbnf, vocab)
    sents = _sentences(pattern, alphabet, 6)
    prefixes = {s[:k] for s in sents for k in range(len(s) + 1)}
    checked = 0
    for k in range(4):
        for p in itertools.product(range(len(chars)), repeat=k):
            text = "".join(chars[i] for i in p)
            ids = [i + 1 for i in p]
            got = allowed_set(g, ids)
            if text not in prefixes:
                assert got is None, text
                continue
            want = set()
            for t, b in enumerate(vocab, start=1):
                full = text.encode() + b
                try:
                    s = full.decode()
                except UnicodeDecodeError:  # a token ending inside a character: allowed if some character fits
                    want |= {t} if any(text + c in prefixes and c.encode().startswith(b) for c in chars) else set()
                    continue
                if len(s) <= 5 and s in prefixes:
                    want.add(t)
            if text in sents:
                want.add(EOS)
            assert got == want, (gbnf, text, sorted(got ^ want))
            checked += 1
    assert checked > 3


def test_partial_characters_carry_over_tokens():
    g = bound('root ::= "é" "x"', [b"\xc3", b"\xa9", b"x", b"\xc3\xa9", b"\xc3\xa8"])
    assert allowed_set(g, []) == {1, 4}  # half of 'é', or all of it; not 'è'
    assert allowed_set(g, [1]) == {2}
    assert allowed_set(g, [1, 2]) == {3}
    assert allowed_set(g, [1, 2, 3]) == {EOS}
    assert g.allowed([5]) is None
    # overlong forms of '"' and a surrogate are not characters
    g = bound('root ::= [^a]', [b"\xc0\xa2", b"\xe0\x80\xa2", b"\xf0\x80\x80\xa2", b"\xed\xa0\x80", b"\xf4\x90", b"\xe2\x82\xac"])
    assert allowed_set(g, []) == {6}


def test_strip_first_space_skips_one_leading_space():
    g = bound('root ::= "a" " b"', [b" a", b"a", b" b", b" ", b"  a"], strip=True)
    assert allowed_set(g, []) == {1, 2, 4}  # the decoder drops the first space: " a" reads "a"
    assert allowed_set(g, [1]) == {3, 4}
    assert g.allowed([5]) is None  # only one space is dropped


def _json_values(rng: random.Random, depth: int = 0):
    kinds = ["int", "float", "str", "bool", "null"] + (["list", "dict"] if depth < 3 else [])
    k = rng.choice(kinds)
    if k == "int":
        return rng.randint(-10**6, 10**6)
    if k == "float":
        return round(rng.uniform(-1e3, 1e3), rng.randint(0, 6)) * (10 ** rng.randint(-8, 8))
    if k == "str":
        return "".join(rng.choice('ab "\\\n\té€😀\u0001/') for _ in range(rng.randint(0, 6)))
    if k == "bool":
        return rng.random() < 0.5
    if k == "null":
        return None
    if k == "list":
        return [_json_values(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}": _json_values(rng, depth + 1) for i in range(rng.randint(0, 3))}


def test_json_grammar_accepts_json_and_refuses_the_rest():
    """Byte tokens: every JSON object Python writes (compact, spaced, indented, escaped or not) is accepted and
    ends complete; broken ones are refused where they break."""
    vocab = [bytes([b]) for b in range(1, 256)]
    g = bound(JSON_GBNF, vocab)
    ids = lambda s: [b for b in s.encode()]  # (byte b is token id b)
    rng = random.Random(0)
    for _ in range(60):
        v = {"a": _json_values(rng), "b": [_json_values(rng)]}
        for text in (json.dumps(v), json.dumps(v, indent=2, ensure_ascii=False), json.dumps(v, separators=(",", ":"))):
            a = g.allowed(ids(text))
            assert a is not None, text
            assert a[EOS] and not a[1:].any(), text  # complete, and nothing may follow the object
    for bad in ['{"a":1,}', '{"a" 1}', "{'a': 1}", '{"a": 01}', '{"a": tru}', '[1]', '{"a": "\x01"}', '{"a": 1.}',
                '{"a": "\\x"}', '{"a": -}', '{"a":  1}']:
        a = g.allowed(ids(bad))
        assert a is None or not a[EOS], bad
    assert g.allowed(ids('{"a": 1')) is not None and not g.allowed(ids('{"a": 1'))[EOS]


SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer", "minimum": 0},
                                      "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 2}},
     "required": ["name", "age"]},
    {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": ["number", "null"]},
                                      "c": {"const": "fixed"}}, "required": []},
    {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                         "kids": {"type": "array", "items": {"$ref": "#/$defs/node"},
                                                                  "maxItems": 2}},
                        "required": ["v"]}},
     "$ref": "#/$defs/node"},
    {"type": "array", "prefixItems": [{"type": "string", "maxLength": 10}, {"type": "integer"}], "items": False},
    {"anyOf": [{"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
               {"type": "array", "items": {"type": "string", "minLength": 2}, "minItems": 1, "maxItems": 2}]},
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {"type": "object", "allOf": [{"properties": {"p": {"type": "string"}}, "required": ["p"]},
                                 {"properties": {"q": {"type": "null"}}, "required": ["q"]}]},
]


def _conforms(v, s, root) -> bool:
    """A small validator for the keywords SCHEMAS use."""
    if "$ref" in s:
        node = root
        for part in s["$ref"][2:].split("/"):
            node = node[part]
        return _conforms(v, node, root)
    if "const" in s:
        return v == s["const"]
    if "enum" in s:
        return v in s["enum"]
    if "anyOf" in s:
        return any(_conforms(v, a, root) for a in s["anyOf"])
    if "allOf" in s:
        return all(_conforms(v, {**{k: x for k, x in s.items() if k != "allOf"}, **a, "additionalProperties": True}, root)
                   for a in s["allOf"])
    t = s.get("type")
    if isinstance(t, list):
        return any(_conforms(v, {**s, "type": x}, root) for x in t)
    if t == "object":
        if not isinstance(v, dict):
            return False
        props = s.get("properties", {})
        if not all(r in v for r in s.get("required", [])):
            return False
        extra = s.get("additionalProperties", None if props else True)
        for k, x in v.items():
            sub = props.get(k, extra)
            if sub in (None, False) or (isinstance(sub, dict) and not _conforms(x, sub, root)):
                return False
        return True
    if t == "array":
        if not isinstance(v, list) or len(v) < s.get("minItems", 0) or len(v) > s.get("maxItems", 1 << 30):
            return False
        pre = s.get("prefixItems", [])
        if len(v) < len(pre) or (s.get("items") is False and len(v) > len(pre)):
            return False
        return all(_conforms(x, pre[i] if i < len(pre) else s.get("items", {}), root) for i, x in enumerate(v))
    if t == "string":
        return isinstance(v, str) and s.get("minLength", 0) <= len(v) <= s.get("maxLength", 1 << 30)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool) and v >= s.get("minimum", -float("inf"))
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "null":
        return v is None
    return True


@pytest.fixture(scope="module")
def demo():
    return edgeformer.load(edgeformer.demo_model_path(), threads=2)


@pytest.mark.parametrize("k", range(len(SCHEMAS)))
def test_json_schema_outputs_conform(demo, k):
    """The bundled model, sampled freely under each schema's grammar: every text that ends is valid JSON that
    the schema accepts."""
    schema = SCHEMAS[k]
    g = Grammar.from_json_schema(schema)
    ended = 0
    for seed in range(16):
        if ended >= 3:
            break
        r = demo.generate("The record:", grammar=g, max_new_tokens=120, temperature=1.0, seed=seed)
        if r.finish_reason == "length":
            continue
        assert r.finish_reason in ("stop", "eos")
        v = json.loads(r.text)
        assert _conforms(v, schema, schema), (r.text, schema)
        ended += 1
    assert ended >= 2


def test_json_schema_refusals():
    for s, msg in [({"type": "string", "pattern": "a+"}, "'pattern' is not supported"),
                   ({"$ref": "#/$defs/none"}, "names nothing"),
                   ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "'b' is not among"),
                   ({"type": "wat"}, "unknown type 'wat'"),
                   ({"$ref": "http://x/y"}, "only references within the schema"),
                   (False, "accepts no value"),
                   ({"type": "array", "minItems": 3, "maxItems": 1}, "below 'minItems'"),
                   ({"type": "array", "minItems": 10**14}, "'minItems' 100000000000000 is more than 1000000"),
                   ({"type": "string", "minLength": 10**7}, "'minLength' 10000000 is more than 1000000")]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            json_schema_to_gbnf(s)
    with pytest.raises(ValueError, match="json_schema: not valid JSON"):
        Grammar.from_json_schema("{nope")
    # a maximum past the grammar's largest count is no bound (the fuzzer's schema: the parser refused the GBNF)
    huge = {"type": "object", "properties": {"l": {"type": "array", "maxItems": 33333333333333},
                                             "s": {"type": "string", "maxLength": 10**12}}}
    Grammar.from_json_schema(huge)  # (the parser takes it)
    assert json_schema_to_gbnf(huge) == json_schema_to_gbnf(
        {"type": "object", "properties": {"l": {"type": "array"}, "s": {"type": "string"}}})
    deep = {"type": "array"}
    for _ in range(5000):
        deep = {"type": "array", "items": deep}
    with pytest.raises(ValueError, match="nested too deeply"):
        json_schema_to_gbnf(deep)


def _spm_tokenizer():
    """A SentencePiece-style BPE (Llama's form): "▁" for spaces, <0xHH> byte tokens, and a decoder that drops
    the first space."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for w in ["▁", "a", "b", "c", "▁a", "▁b", "ab", "▁ab", "é", "▁é", "{", "▁{", "\"", "}"]:
        vocab[w] = len(vocab)
    merges = [("▁", "a"), ("▁", "b"), ("a", "b"), ("▁a", "b"), ("▁", "é"), ("▁", "{")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<s>", "</s>"])
    return tok


@pytest.mark.parametrize("kind", ["byte-level", "sentencepiece"])
def test_token_bytes_decode_as_the_tokenizer_does(kind, demo):
    tok = demo.tokenizer if kind == "byte-level" else _spm_tokenizer()
    V = tok.get_vocab_size()
    tb, strip = token_bytes(tok, V + 3)  # (ids beyond the tokenizer's: none)
    assert strip == (kind == "sentencepiece")
    assert tb[-1] == b"" and tb[tok.token_to_id("</s>")] == b""
    rng = random.Random(1)
    checked = 0
    for _ in range(1500):
        seq = [rng.randrange(V) for _ in range(rng.randint(1, 6))]
        raw = b"".join(tb[i] for i in seq)
        if strip and raw[:1] == b" ":
            raw = raw[1:]
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            continue
        assert text == tok.decode(seq, skip_special_tokens=True), seq
        checked += 1
    assert checked > 100


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("grammar")
    make_llama(str(d), eos_token_id=1)
    return edgeformer.load(str(d), threads=2, max_context=128)


def _masked_greedy(model, prompt_ids, gbnf, n):
    """Reference: the full-sequence logits each step, tokens the grammar refuses set to -inf, argmax; it ends on
    an end token, or once the grammar allows nothing but one."""
    g = model._bound_grammar(Grammar(gbnf))
    eos = model.eos_token_ids
    ids, new = list(prompt_ids), []
    for _ in range(n):
        row = model.logits(ids)[-1].copy()
        row[~g.allowed(new)] = -np.inf
        t = int(np.argmax(row))
        if t in eos:
            break
        new.append(t)
        ids.append(t)
        if not np.delete(g.allowed(new), eos).any():
            break
    return new


GBNF = 'root ::= "the " word (" " word){1,6} "."\nword ::= [a-z]+'
SENTENCE = r"the [a-z]+( [a-z]+){1,6}\."
PREFIX = r"the [a-z]*( [a-z]*){0,6}"


def test_generate_follows_masked_greedy(model):
    prompt = model._tok.encode("the quick brown")
    want = _masked_greedy(model, prompt, GBNF, 24)
    r = model.generate(prompt, grammar=GBNF, max_new_tokens=24, temperature=0)
    assert r.token_ids == want and len(want) > 3
    assert re.fullmatch(SENTENCE if r.finish_reason == "stop" else PREFIX, r.text), r.text
    for seed in range(4):  # sampled: every text is within the grammar
        r = model.generate(prompt, grammar=Grammar(GBNF), max_new_tokens=40, temperature=1.5, seed=seed, top_k=50)
        assert re.fullmatch(SENTENCE if r.finish_reason in ("stop", "eos") else PREFIX, r.text), r.text


def test_grammar_finishes_generation_without_an_end_token(model):
    r = model.generate("x", grammar='root ::= "yes"', max_new_tokens=30, temperature=0)
    assert r.text == "yes" and r.finish_reason == "stop"
    r = model.generate("x", grammar='root ::= "ab" | "abc"', max_new_tokens=30, temperature=0)
    assert r.text in ("ab", "abc") and r.finish_reason in ("stop", "eos")


def test_batch_batcher_and_lookup_give_the_single_results(model):
    prompts = ["the quick brown", "a b c d", "on the"]
    single = [model.generate(p, grammar=GBNF, max_new_tokens=20, temperature=0.8, seed=5) for p in prompts]
    batch = model.generate(prompts, grammar=GBNF, max_new_tokens=20, temperature=0.8, seed=5)
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]
    with edgeformer.Batcher(model) as b:
        reqs = [b.submit(p, grammar=GBNF, max_new_tokens=20, temperature=0.8, seed=5) for p in prompts]
        assert [r.wait().token_ids for r in reqs] == [r.token_ids for r in single]
    look = model.generate(prompts[0], grammar=GBNF, max_new_tokens=20, temperature=0, prompt_lookup=4)
    assert look.token_ids == model.generate(prompts[0], grammar=GBNF, max_new_tokens=20, temperature=0).token_ids


def test_grammar_is_bound_once_per_model_and_checked(model):
    g = Grammar(GBNF)
    assert model._bound_grammar(g) is model._bound_grammar(Grammar(GBNF))
    with pytest.raises(ValueError, match="must be a Grammar or GBNF text"):
        model.generate("x", grammar=42)
    with pytest.raises(ValueError, match="left-recursive"):
        model.generate("x", grammar="root ::= root")


def test_sampler_returns_minus_one_when_no_token_fits():
    s = _core.SamplerOptions()
    s.temperature = 0.0
    s.grammar = bound('root ::= "a" "z"', [b"a", b"b"])  # no token spells "z"
    smp = _core.Sampler(s)
    logits = np.zeros(3, np.float32)
    assert smp.sample(logits, np.array([], np.int32)) == 1  # "a"
    assert smp.sample(logits, np.array([], np.int32)) == -1
    assert not smp.grammar_finished


def test_caches_past_their_bounds_stay_correct():
    """5000 distinct states (a literal of 5000 characters): the transition cache is dropped on the way (it keeps
    4096) and the masks (256) too; what is allowed does not change."""
    g = bound('root ::= "a"{5000}', [b"a", b"aa", b"b"])
    assert allowed_set(g, [1] * 4500) == {1, 2}
    assert allowed_set(g, [2] * 2499) == {1, 2}
    assert allowed_set(g, [2] * 2499 + [1]) == {1}
    assert allowed_set(g, [1] * 5000) == {EOS}
    assert g.allowed([1] * 5001) is None and g.cached_states <= 256


def test_command_line_grammars(tmp_path):
    import subprocess
    import sys

    def run(*a):
        return subprocess.run([sys.executable, "-m", "edgeformer", "run", *a], capture_output=True, text=True)

    r = run("The answer:", "-n", "8", "--grammar", 'root ::= " yes" | " no"', "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("The answer: yes", "The answer: no")
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}))
    r = run("Data:", "-n", "40", "--json-schema", f"@{schema}", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    if "decode: 40 tokens" not in r.stderr:  # it ended: the whole object
        assert isinstance(json.loads(r.stdout[len("Data:"):])["n"], int)
    g = tmp_path / "g.gbnf"
    g.write_text('root ::= "x"\n')
    assert run("a", "-n", "3", "--grammar-file", str(g)).stdout.strip() == "ax"
    bad = run("a", "--grammar", "root ::= (", "--temperature", "0")
    assert bad.returncode == 2 and "grammar: line 1" in bad.stderr
    assert "give one of them" in run("a", "--json", "--grammar", 'root ::= "x"').stderr


def test_logprobs_with_a_grammar_count_the_tokens(model):
    """With logprobs, a grammar that ends the generation leaves one logprob per token, alone and in a batch; a
    dead end (no token fits: a vocabulary without the byte) gives -1 from a step, with no logprobs read."""
    for r in [model.generate("x", grammar='root ::= "the"', logprobs=2, max_new_tokens=10, temperature=0)] + \
            model.generate(["x", "y"], grammar='root ::= "the"', logprobs=2, max_new_tokens=10, temperature=0):
        assert r.text == "the" and r.finish_reason == "stop"
        assert len(r.logprobs) == len(r.token_ids) > 0
    V = model.spec.vocab_size
    dead = _core.Grammar(_core.GrammarRules('root ::= "z"'), _core.GrammarVocab([b"a"] * V, [1], False))
    o = _core.SamplerOptions()
    o.temperature = 0.0
    o.grammar = dead
    forks = [model._core.fork(), model._core.fork()]
    for f in forks:
        f.prefill(np.asarray([5, 6], np.int32))
    out = _core.decode_batch(forks, np.asarray([7, 8], np.int32), [_core.Sampler(o), _core.Sampler(o)],
                             [np.zeros(0, np.int32)] * 2, [2, -1])
    assert out[0][0] == -1 and out[0][2] == [] and out[1] == -1
    assert forks[0].step(np.asarray([9], np.int32), _core.Sampler(o), np.zeros(0, np.int32), 3)[0] == -1


def test_review_findings_stay_fixed():
    """(1) items that can match nothing in several ways, many in a row, expand in linear time; (2) two $refs
    with the same last segment keep their own rules; (3) a character begun in the surrogate range (ED A0..BF)
    is refused at its second byte, not left to dead-end."""
    import time

    vocab = [bytes([b]) for b in range(1, 256)]
    t = time.perf_counter()
    g = bound("root ::= " + "n " * 40 + '"z"\nn ::= ("a"?)?', vocab)
    assert allowed_set(g, []) == {ord("a"), ord("z")} and time.perf_counter() - t < 2
    schema = {"$ref": "#/$defs/node", "$defs": {
        "node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/sub/node"}}, "required": ["child"]},
        "sub": {"node": {"type": "integer"}}}}
    g = bound(json_schema_to_gbnf(schema), vocab)
    ids = lambda s: list(s.encode())
    assert g.allowed(ids('{"child": 5}'))[EOS]
    assert g.allowed(ids('{"child": {')) is None
    g = bound("root ::= .*", vocab)
    assert 0xA0 not in allowed_set(g, [0xED]) and 0x9F in allowed_set(g, [0xED])
    assert EOS in allowed_set(g, [0xED, 0x9F, 0x80])  # U+D7C0, a real character
