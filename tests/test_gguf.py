"""GGUF out and back in: `edgeformer quantize` writes llama.cpp's format; loading the file gives logits
bit-identical to quantize-at-load; transformers' own GGUF reader (built to read llama.cpp's files) reads
our files and agrees; tokenizers survive the trip; an interrupted conversion leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import edgeformer
from edgeformer.model import BLOCK_TYPES

from conftest import ISAS, hf_logits, make_llama, make_model, prompt_ids, random_grid_blocks

PROMPT = prompt_ids(32)
# file size / the f16 checkpoint's, at most (the tiny Llama's embeddings and head are a large share)
SIZE = {"q8_0": 0.6, "q6_k": 0.45, "q5_k": 0.39, "q5_1": 0.41, "q5_0": 0.39, "q4_k": 0.35, "q4_1": 0.36,
        "q4_0": 0.35, "iq4_nl": 0.35, "iq4_xs": 0.35, "q3_k": 0.28, "q2_k": 0.23}


def _quantize_and_load_back(src, out, qtype: str):
    """`edgeformer quantize src out --type qtype`; the file loaded back gives the logits of quantize-at-load.
    Returns (loaded with dtype=qtype, loaded from the file)."""
    edgeformer.quantize(str(src), str(out), qtype)
    direct = edgeformer.load(str(src), dtype=qtype, threads=2, max_context=64)
    back = edgeformer.load(str(out), threads=2, max_context=64)
    np.testing.assert_array_equal(back.logits(PROMPT), direct.logits(PROMPT))
    return direct, back


def _transformers_agrees(out, bound: float) -> None:
    """transformers' GGUF reader (gguf-py's dequantization, llama.cpp's conventions undone) on our file gives
    our logits: relative NMSE below bound. Both activation levels on our side, so the product carries the
    weights' error alone, as transformers' does, and an f32 KV cache: this compares layouts, not rounding."""
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out.parent), gguf_file=out.name).eval()
    theirs = hf_logits(hf, PROMPT)
    ours = edgeformer.load(str(out), threads=2, max_context=64, exact_q8_prompts=True, kv_dtype="f32").logits(PROMPT)
    rel = float(((theirs - ours) ** 2).sum() / (theirs**2).sum())
    assert rel < bound, rel


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf_llama")
    ref = make_llama(str(d), hidden_size=256, intermediate_size=512, num_attention_heads=8, num_key_value_heads=2)
    return str(d), ref


@pytest.mark.parametrize("qtype", BLOCK_TYPES)
def test_roundtrip_bit_identical(llama, qtype, tmp_path):
    path, _ = llama
    out = str(tmp_path / f"m-{qtype}.gguf")
    direct, from_file = _quantize_and_load_back(path, out, qtype)
    # the tokenizer rebuilt from the file's metadata encodes and decodes alike
    text = "Hello world, café 日本語 🙂 123"
    assert from_file.tokenizer.encode(text).ids == direct.tokenizer.encode(text).ids
    assert from_file.generate(text, max_new_tokens=6, temperature=0, ignore_eos=True).text == \
        direct.generate(text, max_new_tokens=6, temperature=0, ignore_eos=True).text
    # quantized tensors keep their type in the file: a 4-bit file is about a third of the f16 size (the
    # embeddings and head keep 8 and 6 bits)
    f16_bytes = os.path.getsize(os.path.join(path, "model.safetensors")) / 2  # the checkpoint is f32
    assert os.path.getsize(out) < SIZE[qtype] * f16_bytes


@pytest.mark.parametrize("qtype", ["q8_0", "q5_k", "q5_1", "q4_0", "iq4_xs", "q3_k", "q2_k", "f16"])
def test_transformers_reads_our_gguf(llama, qtype, tmp_path):
    """transformers dequantizes GGUF with gguf-py and undoes llama.cpp's q/k permutation: if our layout
    were not llama.cpp's, its logits would be garbage."""
    path, ref = llama
    out = tmp_path / f"m-{qtype}.gguf"
    edgeformer.quantize(path, str(out), qtype)
    _transformers_agrees(out, {"q8_0": 1e-6, "f16": 1e-9}.get(qtype, 5e-3))


def _write_gguf_replacing(monkeypatch, src, out, replace):
    """`edgeformer quantize src out --type f32`, each 2-D f32 matrix of whole 256-blocks (tensor i, name g) written
    as replace(g, a, i) -> (blocks, DType) instead: the types llama.cpp's files hold that our writer does not make."""
    from edgeformer import gguf_io

    write = gguf_io._write_file

    def patched(out_path, arch, meta, tensors):
        for i, (g, (a, dt)) in enumerate(list(tensors.items())):
            if a.ndim == 2 and str(dt) == "DType.f32" and a.shape[1] % 256 == 0:
                tensors[g] = replace(g, a, i)
        meta.pop("general.file_type", None)
        return write(out_path, arch, meta, tensors)

    monkeypatch.setattr(gguf_io, "_write_file", patched)
    try:
        edgeformer.quantize(src, str(out), "f32")
    finally:
        monkeypatch.setattr(gguf_io, "_write_file", write)


def test_mixed_types_as_llama_cpp_writes_them(llama, tmp_path, monkeypatch):
    """llama.cpp's files mix types (Q4_K_M: q4_k with q6_k for some matrices and the head; Q3_K_M and Q2_K
    put 3- and 2-bit token embeddings beside 4- and 5-bit layers; q5_0 / q5_1 stand in for K-quants whose rows
    are not whole super-blocks). Every block type in one file, the embedding 2-bit: transformers' reader
    dequantizes the same file, and our logits agree."""
    import transformers

    from edgeformer import _core

    path, _ = llama
    kinds = list(BLOCK_TYPES)
    used = {}
    ends = ("token_embd.weight", "output.weight")

    def mixed(g, a, i):
        layers = sum(1 for n in used if n not in ends)
        kind = "q2_k" if g == ends[0] else "q6_k" if g == ends[1] else kinds[layers % len(kinds)]
        used[g] = kind
        return _core.ops.quantize(np.ascontiguousarray(a), getattr(_core.DType, kind)), getattr(_core.DType, kind)

    out = tmp_path / "mixed.gguf"
    _write_gguf_replacing(monkeypatch, path, out, mixed)
    assert set(used.values()) == set(BLOCK_TYPES) and used["token_embd.weight"] == "q2_k"
    model = edgeformer.load(str(out), threads=2, max_context=64, exact_q8_prompts=True, kv_dtype="f32")
    stored = {n: str(t.dtype).split(".")[1] for n, t in model._core.weights()}
    assert set(BLOCK_TYPES) <= set(stored.values())
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name).eval()
    theirs, ours = hf_logits(hf, PROMPT), model.logits(PROMPT)
    rel = float(((theirs - ours) ** 2).sum() / (theirs**2).sum())
    assert rel < 5e-3, rel
    tokens = model.generate(PROMPT, max_new_tokens=4, temperature=0, ignore_eos=True).token_ids
    assert len(tokens) == 4


def _rel(a, b):
    return float(((a - b) ** 2).sum() / (b**2).sum())


def test_iquants_as_llama_cpp_writes_them(llama, tmp_path, monkeypatch):
    """llama.cpp's IQ1_S .. IQ3_M files: all seven i-quant types in one file, the token embedding among them
    (random blocks: no quantizer makes them here; each matrix's scale set to its weights' spread). transformers
    reads the file with gguf-py's dequantization and our logits agree; every ISA agrees, and the stored rows'
    kernels (EDGEFORMER_PANELS=0) with the panels."""
    import transformers
    from gguf import GGMLQuantizationType as GQ
    from gguf.quants import dequantize

    from edgeformer import _core
    from edgeformer.model import GRID_TYPES

    path, _ = llama
    used = {}

    def grid(g, a, i):
        kind = GRID_TYPES[len(used) % len(GRID_TYPES)]
        rows, blocks = a.shape[0], a.shape[1] // 256
        unit = dequantize(random_grid_blocks(kind, rows, blocks, 1.0, seed=i), getattr(GQ, kind.upper()))
        scale = float(a.std() / np.sqrt((unit.astype(np.float64) ** 2).mean()))
        used[g] = kind
        return random_grid_blocks(kind, rows, blocks, scale, seed=i), getattr(_core.DType, kind)

    out = tmp_path / "iq.gguf"
    _write_gguf_replacing(monkeypatch, path, out, grid)
    assert set(used.values()) == set(GRID_TYPES) and "token_embd.weight" in used
    opts = dict(threads=2, max_context=64, exact_q8_prompts=True, kv_dtype="f32")
    model = edgeformer.load(str(out), **opts)
    stored = {n: str(t.dtype).split(".")[1] for n, t in model._core.weights()}
    assert set(GRID_TYPES) <= set(stored.values())
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name).eval()
    theirs, ours = hf_logits(hf, PROMPT), model.logits(PROMPT)
    assert _rel(ours, theirs) < 5e-3, _rel(ours, theirs)
    default = _core.active_isa()
    try:
        for isa in ISAS:
            _core.set_isa(isa)
            assert _rel(edgeformer.load(str(out), **opts).logits(PROMPT), ours) < 1e-6, isa
    finally:
        _core.set_isa(default)
    monkeypatch.setenv("EDGEFORMER_PANELS", "0")
    assert _rel(edgeformer.load(str(out), **opts).logits(PROMPT), ours) < 1e-6


@pytest.mark.parametrize("family", ["gpt2", "bloom", "mpt", "falcon", "gpt_bigcode"])
def test_fused_qkv_families_roundtrip(family, tmp_path):
    """Fused q, k, v written and read back as llama.cpp's gpt2, bloom, mpt (its keys as llama.cpp's converter
    writes them: max_alibi_bias, clamp_kqv), falcon and starcoder (StarCoder's one key/value head)."""
    import transformers as tf

    cls, cfg = {
        "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config(n_embd=128, n_layer=2, n_head=4, n_positions=64, vocab_size=320)),
        "gpt_bigcode": (tf.GPTBigCodeForCausalLM, tf.GPTBigCodeConfig(n_embd=128, n_layer=2, n_head=4, n_positions=64,
                                                                      vocab_size=320, multi_query=True)),
        "bloom": (tf.BloomForCausalLM, tf.BloomConfig(hidden_size=128, n_layer=2, n_head=4, vocab_size=320)),
        "mpt": (tf.MptForCausalLM, tf.MptConfig(d_model=128, n_layers=2, n_heads=4, max_seq_len=64, vocab_size=320,
                                               attn_config={"clip_qkv": 0.5})),
        "falcon": (tf.FalconForCausalLM, tf.FalconConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                                       new_decoder_architecture=True, num_kv_heads=2,
                                                       max_position_embeddings=64, vocab_size=320)),
    }[family]
    src = tmp_path / "src"
    make_model(str(src), cls, cfg)
    direct, back = _quantize_and_load_back(src, tmp_path / "m.gguf", "q8_0")
    assert back.spec.model_type == direct.spec.model_type and back.spec.n_kv_heads == direct.spec.n_kv_heads
    if family == "mpt":
        from gguf import GGUFReader

        f = GGUFReader(str(tmp_path / "m.gguf")).fields
        assert f["mpt.attention.max_alibi_bias"].contents() == 8.0 and f["mpt.feed_forward_length"].contents() == 512
        assert abs(f["mpt.attention.clamp_kqv"].contents() - 0.5) < 1e-7 and back.spec.clip_qkv == 0.5


def test_starcoder_gguf_refuses_per_head_qkv(tmp_path):
    """A GPTBigCode without multi-query attention keeps q, k, v per head, which llama.cpp's starcoder does not read:
    refused by name, no file left."""
    import transformers as tf

    src = tmp_path / "src"
    make_model(str(src), tf.GPTBigCodeForCausalLM, tf.GPTBigCodeConfig(n_embd=64, n_layer=1, n_head=4, n_positions=64,
                                                                       vocab_size=320, multi_query=False))
    with pytest.raises(ValueError, match="multi_query"):
        edgeformer.quantize(str(src), str(tmp_path / "m.gguf"), "f32")
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.parametrize("family,qtype", [("qwen2", "q8_0"), ("qwen2", "q4_k"), ("qwen3", "q8_0"), ("qwen3", "q4_k")])
def test_qwen_gguf_roundtrip_and_transformers_reads_it(family, qtype, tmp_path):
    """Qwen2 and Qwen3 (GGUF architectures qwen2: q/k/v biases; qwen3: per-head q/k norms; q and k rows
    unpermuted): our file loads back to the logits of quantize-at-load, and transformers' GGUF reader agrees."""
    import transformers as tf

    src = tmp_path / "src"
    cls, cfg = (tf.Qwen2ForCausalLM, tf.Qwen2Config) if family == "qwen2" else (tf.Qwen3ForCausalLM, tf.Qwen3Config)
    make_model(str(src), cls, cfg(
        hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, vocab_size=320, tie_word_embeddings=False,
        **({"head_dim": 128} if family == "qwen3" else {})))  # (transformers' GGUF reader takes 128, its default)
    out = tmp_path / "m.gguf"
    _, back = _quantize_and_load_back(src, out, qtype)
    assert back.spec.model_type == family and back.spec.attn_bias == (family == "qwen2")
    assert back.spec.qk_norm == (family == "qwen3") and not back.spec.attn_out_bias
    _transformers_agrees(out, {"q8_0": 1e-6}.get(qtype, 5e-3))


@pytest.mark.parametrize("case", ["plain", "longrope_window"])
def test_phi3_gguf_roundtrip(case, tmp_path):
    """Phi-3 (GGUF architecture phi3: attn_qkv and ffn_up fused as the checkpoint has them; longrope's factors
    as the rope_factors_long / _short tensors, sliding_window 0 for none): our file loads back to the logits
    and greedy tokens of quantize-at-load, and transformers' GGUF reader agrees on the plain model."""
    import transformers as tf

    extra = {} if case == "plain" else dict(
        sliding_window=12, original_max_position_embeddings=16,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 16,
                         "short_factor": [1.0 + 0.05 * i for i in range(32)],
                         "long_factor": [1.2 + 0.3 * i for i in range(32)]})
    src = tmp_path / "src"
    make_model(str(src), tf.Phi3ForCausalLM, tf.Phi3Config(
        hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, tie_word_embeddings=False, pad_token_id=None, bos_token_id=0, eos_token_id=None,
        vocab_size=320 if extra else 32064, **extra))  # (transformers' reader takes Phi-3's pad id, 32000)
    out = tmp_path / "m.gguf"
    direct, back = _quantize_and_load_back(src, out, "q8_0")
    assert back.spec.model_type == "phi3" and back.spec.sliding_window == (0 if case == "plain" else 12)
    assert back.spec.rope.scaling == direct.spec.rope.scaling
    kw = dict(max_new_tokens=8, temperature=0, ignore_eos=True)
    assert back.generate(PROMPT, **kw).token_ids == direct.generate(PROMPT, **kw).token_ids
    if case == "plain":
        _transformers_agrees(out, 1e-6)


@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3", "gemma3_linear"])
def test_gemma_gguf_roundtrip_and_transformers_reads_it(family, tmp_path):
    """Gemma 1, 2 and 3 (GGUF architectures gemma / gemma2 / gemma3: norms stored with the 1 added, soft-caps as keys; the
    layer pattern, local rotary base and attention scale fixed as llama.cpp fixes them): our file loads back
    to the logits of quantize-at-load, and transformers' GGUF reader agrees."""
    import transformers as tf

    common = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=256,
                  max_position_embeddings=64, vocab_size=320, sliding_window=6, bos_token_id=0, eos_token_id=None,
                  pad_token_id=None)
    if family == "gemma":  # (the first: no window, no post norms; llama.cpp's gemma)
        common.pop("sliding_window")
        cls, cfg = tf.GemmaForCausalLM, tf.GemmaConfig(num_hidden_layers=2, **common)
    elif family == "gemma2":  # (transformers' reader takes its defaults for what llama.cpp fixes: soft-caps 50 / 30)
        cls, cfg = tf.Gemma2ForCausalLM, tf.Gemma2Config(num_hidden_layers=3, **common)
    else:  # (4B and up scale their full layers' rotary table: linear, factor 8)
        scaling = {"rope_scaling": {"rope_type": "linear", "factor": 8.0}} if family == "gemma3_linear" else {}
        cls, cfg = tf.Gemma3ForCausalLM, tf.Gemma3TextConfig(num_hidden_layers=7, **common, **scaling)
    src = tmp_path / "src"
    make_model(str(src), cls, cfg)
    out = tmp_path / "m.gguf"
    direct, back = _quantize_and_load_back(src, out, "q8_0")
    assert list(back.spec.layer_windows) == list(direct.spec.layer_windows)
    if family == "gemma":  # (transformers' reader has no gemma; llama.cpp read it alike, by hand, session 13)
        return
    if family == "gemma3_linear":  # (transformers' reader does not take the scaling)
        assert back.spec.rope.scaling == edgeformer._core.RopeScaling.linear and back.spec.rope.factor == 8.0
        return
    _transformers_agrees(out, 1e-6)


def test_cli_quantize_and_nothing_lost(llama, tmp_path):
    path, _ = llama
    before = {f: os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path)}
    out = tmp_path / "cli.gguf"
    r = subprocess.run([sys.executable, "-m", "edgeformer", "quantize", path, str(out), "--type", "q4_0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.exists() and "q4_0" in r.stdout
    assert {f: os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path)} == before  # source untouched
    # a failing conversion (unsupported type) leaves no output and no temporary file
    bad = tmp_path / "bad.gguf"
    with pytest.raises(ValueError, match="type"):
        edgeformer.quantize(path, str(bad), "q3_x")
    with pytest.raises(ValueError, match="overwrite"):
        edgeformer.quantize(path, path, "q4_0")
    assert not bad.exists() and not (tmp_path / "bad.gguf.tmp").exists()


def test_interrupted_write_leaves_no_output(llama, tmp_path, monkeypatch):
    import gguf

    path, _ = llama
    out = tmp_path / "x.gguf"

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(KeyboardInterrupt):
        edgeformer.quantize(path, str(out), "q8_0")
    assert not out.exists() and not (tmp_path / "x.gguf.tmp").exists()


def _t5_gguf(tmp_path, tokenizer_meta=None):
    """A T5 v1.1 checkpoint (vocabulary 320) and its GGUF as llama.cpp's converter writes it (enc.* / dec.* names,
    t5 metadata; written with gguf-py): (reference model, checkpoint dir, GGUF path). tokenizer_meta(writer)
    adds the tokenizer's keys; without it the file has none and t5.vocab_size gives the vocabulary's size."""
    import json

    import gguf
    import transformers as tf

    from edgeformer.gguf_config import add_metadata_to_writer, gguf_metadata_from_config
    from edgeformer.gguf_names import gguf_names_from_hf
    from test_families import untie_t5_head

    # (GGUF has no key for relative_attention_max_distance: llama.cpp assumes 128, the default)
    cfg = tf.T5Config(vocab_size=320, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                      relative_attention_num_buckets=16,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, feed_forward_proj="gated-gelu",
                      tie_word_embeddings=False)
    src = tmp_path / "src"
    ref = make_model(str(src), tf.T5ForConditionalGeneration, cfg)
    untie_t5_head(ref, str(src))  # v1.1: its own head, no output scaling (llama.cpp's T5 files say neither)
    config = json.loads((src / "config.json").read_text())
    meta = gguf_metadata_from_config(config, str(src / "config.json"))
    if tokenizer_meta is None:
        meta["t5.vocab_size"] = 320
    h2g = gguf_names_from_hf("t5", 2, config)
    out = tmp_path / "t5.gguf"
    w = gguf.GGUFWriter(str(out), "t5")
    add_metadata_to_writer(w, {k: v for k, v in meta.items() if k != "general.architecture"})
    if tokenizer_meta is not None:
        tokenizer_meta(w)
    for name, t in ref.state_dict().items():
        if name in h2g and not (name.startswith(("encoder.embed_tokens", "decoder.embed_tokens"))):
            w.add_tensor(h2g[name], t.detach().float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ref, src, out


def test_t5_from_gguf(tmp_path):
    """A T5 GGUF loads and matches transformers: decoder logits and greedy generation."""
    import torch

    ref, src, out = _t5_gguf(tmp_path)
    model = edgeformer.load(str(out), threads=2)
    src_ids = prompt_ids(20, seed=3)[1:]
    dec = [0] + prompt_ids(8, seed=4)[1:]
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor([src_ids]), decoder_input_ids=torch.tensor([dec])).logits[0].numpy()
    ours = model.logits(src_ids, decoder_input_ids=dec)
    assert np.abs(ours - hf).max() <= 1e-4 + 2e-3 * np.abs(hf).max()
    direct = edgeformer.load(str(src), threads=2)
    assert model.generate(src_ids, max_new_tokens=8, temperature=0).token_ids == \
        direct.generate(src_ids, max_new_tokens=8, temperature=0).token_ids


UNIGRAM_TEXTS = ["the quick brown fox", "  the   quick  ", "café naïve résumé", "ﬁle Ｔｅｓｔ １２３", "hello\tworld\nagain",
                 "translate English to German: hello world", "zebra xylophone !!", "emoji 😀😀 here", "", " ", "a",
                 "日本語", "quickly jumped over the lazy dogs", "ǅ ﬃ ① ² ½", "x\u200by", "e\u0301"]


def _spm_unigram():
    """A small SentencePiece unigram model trained here, in T5's layout (<pad> 0, </s> 1, <unk> 2) with the
    NFKC normalization rules T5's own model has: (its processor, its parsed ModelProto)."""
    import io
    import random

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    r = random.Random(0)
    words = ("the quick brown fox jumps over lazy dog translate English German hello world café naïve résumé "
             "ﬁle Ｔｅｓｔ 123 4567 data model runtime inference token quickly jumped brownish foxes dogs models "
             "tokens translated greeting worlds cafés inferences runtimes dataset modeling tokenizer").split()
    lines = [" ".join(r.choice(words) for _ in range(r.randint(3, 12))) for _ in range(3000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=120,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   normalization_rule_name="nmt_nfkc", character_coverage=1.0, minloglevel=2,
                                   hard_vocab_limit=False)
    proto = pb.ModelProto()
    proto.ParseFromString(buf.getvalue())
    return spm.SentencePieceProcessor(model_proto=buf.getvalue()), proto


def test_t5_unigram_tokenizer_from_gguf(tmp_path):
    """T5's tokenizer from GGUF metadata (tokenizer.ggml.model "t5": a SentencePiece unigram model and its
    precompiled normalization rules, extra ids and padding, as llama.cpp's converter writes them) encodes as
    sentencepiece does, and a T5 GGUF takes text prompts."""
    import gguf
    sp, m = _spm_unigram()
    tokens = [p.piece for p in m.pieces] + ["<extra_id_0>", "<extra_id_1>"]
    scores = [p.score for p in m.pieces] + [-1000.0, -1000.0]
    types = [p.type for p in m.pieces] + [gguf.TokenType.USER_DEFINED] * 2
    n_pad = 320 - len(tokens)  # llama.cpp pads the vocabulary to the model's with unused [PADi] tokens
    tokens += [f"[PAD{i}]" for i in range(1, n_pad + 1)]
    scores += [-1000.0] * n_pad
    types += [gguf.TokenType.UNUSED] * n_pad
    extra0 = tokens.index("<extra_id_0>")

    def tokenizer_meta(w):
        w.add_tokenizer_model("t5")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(m.normalizer_spec.add_dummy_prefix)
        w.add_remove_extra_whitespaces(m.normalizer_spec.remove_extra_whitespaces)
        w.add_precompiled_charsmap(m.normalizer_spec.precompiled_charsmap)
        w.add_eos_token_id(1)
        w.add_unk_token_id(2)
        w.add_pad_token_id(0)

    _, src, out = _t5_gguf(tmp_path, tokenizer_meta)
    model = edgeformer.load(str(out), threads=2)
    tok = model.tokenizer
    assert tok.encode("<extra_id_0> fox", add_special_tokens=False).ids == [extra0] + sp.encode("fox")
    for text in UNIGRAM_TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ids == sp.encode(text), text
        assert tok.encode(text).ids == sp.encode(text) + [1], text  # </s> after the text, as T5
        if 2 not in ids:  # (sentencepiece spells <unk> " \u2047 ")
            assert tok.decode(ids) == sp.decode(ids), text
    prompt = "translate English to German: hello world"
    assert model.generate(prompt, max_new_tokens=6, temperature=0).token_ids == \
        model.generate(sp.encode(prompt) + [1], max_new_tokens=6, temperature=0).token_ids


def test_unigram_charsmap_stored_as_int8():
    """Some writers store precompiled_charsmap as int8: the same bytes, the same tokens."""
    from edgeformer.gguf_tokenizer import tokenizer_from_gguf

    sp, m = _spm_unigram()
    raw = m.normalizer_spec.precompiled_charsmap
    meta = {"tokenizer.ggml.model": "t5", "tokenizer.ggml.tokens": [p.piece for p in m.pieces],
            "tokenizer.ggml.scores": [p.score for p in m.pieces], "tokenizer.ggml.token_type": [p.type for p in m.pieces],
            "tokenizer.ggml.unknown_token_id": 2, "tokenizer.ggml.eos_token_id": 1,
            "tokenizer.ggml.precompiled_charsmap": [b - 256 if b > 127 else b for b in raw]}
    tok = tokenizer_from_gguf(meta, "int8.gguf").tokenizer
    for text in UNIGRAM_TEXTS:
        assert tok.encode(text, add_special_tokens=False).ids == sp.encode(text), text


@pytest.mark.parametrize("key,value,match", [
    ("tokenizer.ggml.scores", None, "scores.*missing"),
    ("tokenizer.ggml.unknown_token_id", None, "unknown"),
    ("tokenizer.ggml.precompiled_charsmap", [1, 2, 300], "bytes"),
    ("tokenizer.ggml.precompiled_charsmap", [1, 2, 3], "character map"),
])
def test_bad_unigram_metadata_names_the_key(key, value, match):
    from edgeformer.gguf_tokenizer import tokenizer_from_gguf

    meta = {"tokenizer.ggml.model": "t5", "tokenizer.ggml.tokens": ["<pad>", "</s>", "<unk>", "\u2581a"],
            "tokenizer.ggml.scores": [0.0, 0.0, 0.0, -1.0], "tokenizer.ggml.token_type": [3, 3, 2, 1],
            "tokenizer.ggml.unknown_token_id": 2, "tokenizer.ggml.eos_token_id": 1}
    if key == "tokenizer.ggml.unknown_token_id":
        meta["tokenizer.ggml.token_type"] = [3, 3, 1, 1]  # and no token of the unknown type either
    if value is None:
        del meta[key]
    else:
        meta[key] = value
    with pytest.raises(ValueError, match=match) as e:
        tokenizer_from_gguf(meta, "bad.gguf")
    assert "bad.gguf" in str(e.value)


def _t5_with_spm_tokenizer(tmp_path, **cfg_over):
    """A tiny T5 v1.1 checkpoint whose tokenizer.json transformers built from a sentencepiece unigram model."""
    import transformers as tf

    from test_families import untie_t5_head

    sp, m = _spm_unigram()
    # T5's layout: the sentencepiece pieces, then the extra ids in reverse; its normalization rules
    vocab = [(p.piece, p.score) for p in m.pieces] + [("<extra_id_1>", 0.0), ("<extra_id_0>", 0.0)]
    tok = tf.T5Tokenizer(vocab=vocab, extra_ids=2, _spm_precompiled_charsmap=m.normalizer_spec.precompiled_charsmap)
    src = tmp_path / "src"
    kw = dict(vocab_size=320, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=3, num_heads=4,
              relative_attention_num_buckets=16, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
              feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    kw.update(cfg_over)
    ref = make_model(str(src), tf.T5ForConditionalGeneration, tf.T5Config(**kw))
    if not kw["tie_word_embeddings"]:
        untie_t5_head(ref, str(src))
    tok.save_pretrained(str(src))  # (after make_model, whose own tokenizer it replaces)
    return ref, src, sp


@pytest.mark.parametrize("qtype", ["q8_0", "f16"])
def test_t5_quantize_roundtrip(qtype, tmp_path):
    """edgeformer quantize writes T5 (both stacks, the shared embedding once, the unigram tokenizer) as llama.cpp
    lays it out: loading the file gives the logits of quantize-at-load bit for bit, and the same tokens."""
    ref, src, sp = _t5_with_spm_tokenizer(tmp_path)
    out = str(tmp_path / f"t5-{qtype}.gguf")
    edgeformer.quantize(str(src), out, qtype)
    direct = edgeformer.load(str(src), dtype=qtype, threads=2)
    from_file = edgeformer.load(out, threads=2)
    src_ids = prompt_ids(20, seed=3)[1:]
    dec = [0] + prompt_ids(8, seed=4)[1:]
    np.testing.assert_array_equal(from_file.logits(src_ids, decoder_input_ids=dec),
                                  direct.logits(src_ids, decoder_input_ids=dec))
    for text in UNIGRAM_TEXTS + ["<extra_id_0> fox"]:
        assert from_file.tokenizer.encode(text).ids == direct.tokenizer.encode(text).ids, text
        if text in UNIGRAM_TEXTS:  # (the checkpoint's tokenizer itself encodes as sentencepiece does)
            assert direct.tokenizer.encode(text).ids == sp.encode(text) + [1], text
    prompt = "translate English to German: hello world"
    assert from_file.generate(prompt, max_new_tokens=6, temperature=0).token_ids == \
        direct.generate(prompt, max_new_tokens=6, temperature=0).token_ids
    assert from_file.generate(prompt, max_new_tokens=6, num_beams=2).token_ids == \
        direct.generate(prompt, max_new_tokens=6, num_beams=2).token_ids


def test_transformers_reads_our_t5_gguf(tmp_path):
    """transformers' GGUF reader (llama.cpp's T5 names and keys) loads our f16 T5 file and agrees with it.
    (Its reader takes the decoder's depth from the encoder's and knows no activation key, where llama.cpp gates
    with GELU: as many decoder layers here, and the activation said.)"""
    import torch
    import transformers

    ref, src, _ = _t5_with_spm_tokenizer(tmp_path, num_decoder_layers=2)
    out = tmp_path / "t5.gguf"
    edgeformer.quantize(str(src), str(out), "f16")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path), gguf_file=out.name,
                                                                 feed_forward_proj="gated-gelu",
                                                                 dense_act_fn="gelu_new").eval()
    src_ids = prompt_ids(20, seed=3)[1:]
    dec = [0] + prompt_ids(8, seed=4)[1:]
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor([src_ids]), decoder_input_ids=torch.tensor([dec])).logits[0].float().numpy()
    ours = edgeformer.load(str(out), threads=2, kv_dtype="f32").logits(src_ids, decoder_input_ids=dec)
    rel = float(((theirs - ours) ** 2).sum() / (theirs ** 2).sum())
    assert rel < 1e-6, rel


@pytest.mark.parametrize("family", ["gpt_neox", "gpt_neox_seq", "phi"])
def test_neox_and_phi2_gguf_roundtrip(family, tmp_path):
    """GPT-NeoX (GGUF gptneox: q, k, v fused as [all q, all k, all v], use_parallel_residual) and Phi-2 (phi2:
    one norm, a head with a bias): our file loads back to the logits and greedy tokens of quantize-at-load."""
    import transformers as tf

    common = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64, vocab_size=320, bos_token_id=0, eos_token_id=None, pad_token_id=None)
    if family == "phi":
        cls, cfg = tf.PhiForCausalLM, tf.PhiConfig(**common)
    else:
        cls, cfg = tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(use_parallel_residual=family == "gpt_neox", **common)
    src = tmp_path / "src"
    make_model(str(src), cls, cfg)
    out = tmp_path / "m.gguf"
    direct, back = _quantize_and_load_back(src, out, "q8_0")
    fields = ("model_type", "parallel_residual", "parallel_mlp_norm", "lm_head_bias", "attn_bias")
    assert [getattr(back.spec, f) for f in fields] == [getattr(direct.spec, f) for f in fields]
    assert back.spec.rope.rotary_dim == direct.spec.rope.rotary_dim
    kw = dict(max_new_tokens=8, temperature=0, ignore_eos=True)
    assert back.generate(PROMPT, **kw).token_ids == direct.generate(PROMPT, **kw).token_ids


@pytest.mark.parametrize("family", ["starcoder2", "stablelm", "stablelm_parallel", "granite"])
def test_starcoder2_stablelm_granite_gguf_roundtrip(family, tmp_path):
    """StarCoder2 (LayerNorms, plain GELU MLP, biases), StableLM (partial rotary; parallel where the layers have no
    ffn_norm) and Granite (its four multipliers as keys; q and k rows permuted as Llama's): our file loads back to
    the logits and greedy tokens of quantize-at-load."""
    import transformers as tf

    common = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, vocab_size=320, bos_token_id=0,
                  eos_token_id=None, pad_token_id=None)
    cls, cfg = {
        "starcoder2": (tf.Starcoder2ForCausalLM, lambda: tf.Starcoder2Config(sliding_window=12, **common)),
        "stablelm": (tf.StableLmForCausalLM, lambda: tf.StableLmConfig(use_qkv_bias=True, **common)),
        "stablelm_parallel": (tf.StableLmForCausalLM, lambda: tf.StableLmConfig(use_parallel_residual=True, **common)),
        "granite": (tf.GraniteForCausalLM, lambda: tf.GraniteConfig(
            embedding_multiplier=3.0, attention_multiplier=0.05, residual_multiplier=0.4, logits_scaling=2.5,
            **common)),
    }[family]
    src = tmp_path / "src"
    make_model(str(src), cls, cfg())
    out = tmp_path / "m.gguf"
    direct, back = _quantize_and_load_back(src, out, "q8_0")
    fields = ("model_type", "norm", "gated_mlp", "parallel_residual", "attn_bias", "mlp_bias", "sliding_window",
              "emb_scale", "attn_scale", "residual_scale", "logits_scale")
    assert [getattr(back.spec, f) for f in fields] == [getattr(direct.spec, f) for f in fields]
    assert back.spec.rope.rotary_dim == direct.spec.rope.rotary_dim
    kw = dict(max_new_tokens=8, temperature=0, ignore_eos=True)
    assert back.generate(PROMPT, **kw).token_ids == direct.generate(PROMPT, **kw).token_ids


@pytest.mark.parametrize("family", ["olmo2", "olmoe"])
def test_olmo_gguf_roundtrip(family, tmp_path):
    """OLMo 2 (GGUF olmo2: post_attention_norm / post_ffw_norm and no pre-norms, whole-width q/k norms) and OLMoE
    (olmoe: Qwen3-MoE's tensors): our file loads back to the logits and greedy tokens of quantize-at-load."""
    import transformers as tf

    common = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=64, vocab_size=320, bos_token_id=0, eos_token_id=None, pad_token_id=None)
    if family == "olmo2":
        cls, cfg = tf.Olmo2ForCausalLM, tf.Olmo2Config(intermediate_size=256, **common)
    else:
        cls, cfg = tf.OlmoeForCausalLM, tf.OlmoeConfig(intermediate_size=64, num_experts=4, num_experts_per_tok=2,
                                                       **{**common, "num_key_value_heads": 4})  # (llama.cpp: no GQA)
    src = tmp_path / "src"
    make_model(str(src), cls, cfg)
    out = tmp_path / "m.gguf"
    direct, back = _quantize_and_load_back(src, out, "q8_0")
    fields = ("model_type", "pre_norms", "post_norms", "qk_norm", "qk_norm_full", "n_experts", "moe_norm_topk")
    assert [getattr(back.spec, f) for f in fields] == [getattr(direct.spec, f) for f in fields]
    kw = dict(max_new_tokens=8, temperature=0, ignore_eos=True)
    assert back.generate(PROMPT, **kw).token_ids == direct.generate(PROMPT, **kw).token_ids


@pytest.mark.parametrize("family", ["smollm3", "cohere"])
def test_smollm3_and_command_r_gguf_roundtrip(family, tmp_path):
    """SmolLM3 (GGUF smollm3: Llama's q/k row order, no rotary every 4th layer as llama.cpp fixes it) and Command-R
    (command-r: one norm for attention and MLP, interleaved rotary as stored, logit_scale): our file loads back to
    the logits and greedy tokens of quantize-at-load."""
    import transformers as tf

    common = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, vocab_size=320, bos_token_id=0,
                  eos_token_id=None, pad_token_id=None)
    if family == "smollm3":
        cls, cfg = tf.SmolLM3ForCausalLM, tf.SmolLM3Config(**common)
    else:
        cls, cfg = tf.CohereForCausalLM, tf.CohereConfig(logit_scale=0.5, **common)
    src = tmp_path / "src"
    make_model(str(src), cls, cfg)
    out = tmp_path / "m.gguf"
    direct, back = _quantize_and_load_back(src, out, "q8_0")
    fields = ("model_type", "norm", "parallel_residual", "logits_scale", "layer_nope")
    assert [getattr(back.spec, f) for f in fields] == [getattr(direct.spec, f) for f in fields]
    kw = dict(max_new_tokens=8, temperature=0, ignore_eos=True)
    assert back.generate(PROMPT, **kw).token_ids == direct.generate(PROMPT, **kw).token_ids


def test_llama3_rope_scaling_is_written(tmp_path):
    """Llama 3.1-3.3's rope scaling (rope_type llama3) goes into the file as llama.cpp's rope_freqs tensor: the
    file loads back to the logits of quantize-at-load (before, the scaling was lost: logits off by ~40%)."""
    src = tmp_path / "src"
    make_llama(str(src), rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                       "rope_theta": 10000.0})
    out = tmp_path / "m.gguf"
    _, back = _quantize_and_load_back(src, out, "q8_0")
    assert back.spec.rope.scaling == edgeformer._core.RopeScaling.llama3
