"""Gemma 4 against transformers on tiny random checkpoints, under every ISA: full layers with heads of their own size
and key/value head count, keys serving as values there, proportional rotary, value norms, the last layers reading
earlier layers' keys and values (with double-wide MLPs), per-layer inputs, a scalar per layer, sliding windows
shorter than the prompt, experts beside every MLP (26B-A4B); the row KV cache (head sizes not multiples of 16); the
multimodal checkpoint's language model. Logits within 1e-4 + 2e-3 * max|logit|, greedy tokens identical; batched decode steps equal single ones."""

from __future__ import annotations

import numpy as np
import pytest

import edgeformer

from conftest import (assert_logits_close, ef_greedy, gguf_roundtrip, make_tokenizer, prompt_ids, reference_cache,
                      scale_weights)
from test_batch import _batch_vs_single

PROMPT = prompt_ids(32)
N_GREEDY = 12

LAYERS6 = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
           "full_attention"]
BASE = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, global_head_dim=32, max_position_embeddings=256, sliding_window=8,
            layer_types=LAYERS6, vocab_size_per_layer_input=300, bos_token_id=0, eos_token_id=None, pad_token_id=None)
CASES = {
    # E2B / E4B: per-layer inputs, the last three layers sharing keys and values, double-wide MLPs there, a soft cap
    "e2b": dict(hidden_size_per_layer_input=8, num_kv_shared_layers=3, use_double_wide_mlp=True,
                final_logit_softcapping=30.0),
    # 31B: keys as values on the full layers (one kv head of their own), no per-layer inputs, its own head
    "31b": dict(hidden_size_per_layer_input=0, attention_k_eq_v=True, num_global_key_value_heads=1,
                tie_word_embeddings=False),
    # all of it at once, heads of 24 and 40 (the row cache), a proportional table rotating a third of the pairs
    "rows": dict(head_dim=24, global_head_dim=40, hidden_size_per_layer_input=8, num_kv_shared_layers=3,
                 attention_k_eq_v=True, num_global_key_value_heads=1,
                 rope_parameters={"full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.3,
                                                     "rope_theta": 10000.0},
                                  "sliding_attention": {"rope_type": "default", "rope_theta": 500.0}}),
    # 26B-A4B: experts beside every layer's MLP (a router of its own norm and scales), keys as values
    "moe": dict(enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=32,
                hidden_size_per_layer_input=0, attention_k_eq_v=True, num_global_key_value_heads=1),
}


def _make(path: str, case: str, multimodal: bool = False, soft: bool = False):
    """A tiny random Gemma 4 (its language model alone, or the image-and-text model) with random layer scalars;
    returns the transformers model. soft: query norms of 0.3, so that attention (scale 1, on unit-RMS heads) is
    not so sharp that rounding the weights to bf16 moves the logits by a third, as it does otherwise."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    text = tf.Gemma4TextConfig(**{**BASE, **CASES[case], **({"pad_token_id": 0} if multimodal else {})})
    if multimodal:
        vision = tf.Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2, head_dim=16)
        model = tf.Gemma4ForConditionalGeneration(tf.Gemma4Config(text_config=text.to_dict(),
                                                                  vision_config=vision.to_dict(), audio_config=None))
    else:
        model = tf.Gemma4ForCausalLM(text)
    model.eval()
    scale_weights(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
        for name, p in model.named_parameters():
            if soft and name.endswith("q_norm.weight"):
                p.mul_(0.3)
    model.save_pretrained(path)
    make_tokenizer(path)
    return model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """get(case) or get(case + "_mm") (the image-and-text checkpoint): reference_cache's answer."""
    return reference_cache(tmp_path_factory, None, PROMPT, N_GREEDY,
                           make=lambda d, name: _make(d, name.removesuffix("_mm"), name.endswith("_mm")))


@pytest.mark.parametrize("case", list(CASES))
def test_gemma4_logits_and_greedy(case, isa, built):
    path, ref, ref_tokens = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert_logits_close(model.logits(PROMPT), ref)
    assert ef_greedy(model, PROMPT, N_GREEDY) == ref_tokens


def test_gemma4_spec(built):
    path, _, _ = built("e2b")
    s = edgeformer.load(path, threads=2, max_context=64).spec
    assert s.layer_head_dim == [16, 16, 32, 16, 16, 32] and s.layer_kv_heads == [2] * 6
    assert s.layer_kv_source == [-1, -1, -1, 1, 1, 2]  # (each the last earlier layer of its type)
    assert s.layer_ffn == [96] * 3 + [192] * 3
    assert s.ple_dim == 8 and s.v_norm and s.layer_scale and s.attn_scale == 1.0
    assert s.rope.rotary_dim == 32 and s.rope.freq_factors == [1.0] * 4 + [float("inf")] * 12
    assert s.rope_local.rotary_dim == 16 and not s.rope_local.freq_factors


def test_gemma4_multimodal_checkpoint_runs_its_language_model(isa, built):
    path, ref, ref_tokens = built("e2b_mm")
    model = edgeformer.load(path, threads=2, max_context=64)
    assert model.spec.model_type == "gemma4_text"
    assert_logits_close(model.logits(PROMPT), ref)


@pytest.mark.parametrize("case", ["e2b", "rows"])
def test_gemma4_batch_rows_are_single_steps(case, built, isa):
    path, _, _ = built(case)
    _batch_vs_single(edgeformer.load(path, threads=2, max_context=64))


def _q8_0(w):
    """A matrix rounded as q8_0 stores it (f16 where its rows are not whole blocks of 32)."""
    import torch

    r, k = w.shape
    if k % 32:
        return w.to(torch.float16).float()
    b = w.reshape(r, k // 32, 32)
    d = (b.abs().amax(-1, keepdim=True) / 127).to(torch.float16).float()
    return (torch.round(b / torch.where(d > 0, d, 1)).clamp(-127, 127) * d).reshape(r, k)


@pytest.mark.parametrize("case", ["e2b", "31b"])
def test_gemma4_q8_0_computes_as_transformers_on_the_rounded_weights(case, tmp_path):
    """(These tiny models are chaotic: rounding their weights to q8_0 moves transformers' own logits by 6-10%;
    ours stay within 2-15% of transformers on the rounded weights, the rest the activations' rounding.)"""
    import torch

    ref = _make(str(tmp_path), case, soft=True)
    with torch.no_grad():
        for p in ref.parameters():
            if p.dim() == 2:
                p.copy_(_q8_0(p))
        want = ref(torch.tensor([PROMPT])).logits[0].numpy()
    got = edgeformer.load(str(tmp_path), threads=2, max_context=64, dtype="q8_0", kv_dtype="f32",
                          exact_q8_prompts=True).logits(PROMPT)
    assert np.abs(got - want).max() < 0.2 * np.abs(want).max()


def test_gemma4_f16_cache_stays_close(tmp_path):
    import torch

    ref = _make(str(tmp_path), "e2b", soft=True)
    with torch.no_grad():
        want = ref(torch.tensor([PROMPT])).logits[0].numpy()
    got = edgeformer.load(str(tmp_path), threads=2, max_context=64, kv_dtype="f16").logits(PROMPT)
    assert np.abs(got - want).max() < 0.01 * np.abs(want).max()


def test_gemma4_refuses_what_it_cannot_run(tmp_path):
    import json

    _make(str(tmp_path), "e2b")
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for field, value, match in [("num_kv_shared_layers", 6, "num_kv_shared_layers"),
                                ("enable_moe_block", True, "num_experts"),
                                ("use_bidirectional_attention", "all", "use_bidirectional_attention"),
                                ("rope_parameters", {"full_attention": {"rope_type": "yarn"}}, "rope_type")]:
        cfg_path.write_text(json.dumps({**cfg, field: value}))
        with pytest.raises(ValueError, match=match):
            edgeformer.load(str(tmp_path), threads=2, max_context=64)


@pytest.mark.parametrize("case", list(CASES))
def test_gemma4_gguf_roundtrip(case, built, tmp_path):
    """llama.cpp's gemma4: the full layers' head size and key/value heads, the sliding pattern, shared layers and
    double-wide MLPs in its keys, proportional rotary as rope_freqs, keys-as-values as a missing attn_v. Our q8_0
    file loads back to the logits of quantize-at-load, with the same spec. (llama.cpp on these files:
    benchmarks/agree_llama_cpp_archs.py.)"""
    path, _, _ = built(case)
    direct, back, out = gguf_roundtrip(path, tmp_path, PROMPT)
    fields = ("layer_head_dim", "layer_kv_heads", "layer_kv_source", "layer_ffn", "layer_windows", "layer_rope",
              "ple_dim", "ple_vocab", "v_norm", "layer_scale", "head_dim", "n_kv_heads", "tie_embeddings",
              "logit_softcap", "attn_scale")
    assert [getattr(back.spec, f) for f in fields] == [getattr(direct.spec, f) for f in fields]
    for r in ("rope", "rope_local"):
        a, b = getattr(back.spec, r), getattr(direct.spec, r)
        assert (a.theta, a.rotary_dim, a.freq_factors) == (b.theta, b.rotary_dim, b.freq_factors)
    import gguf

    names = {t.name for t in gguf.GGUFReader(str(out)).tensors}
    assert ("blk.2.attn_v.weight" in names) == (case == "e2b")  # (keys as values: no attn_v on the full layers)
    assert ("blk.5.attn_k.weight" in names) == (case in ("31b", "moe")) and "rope_freqs.weight" in names


def test_gemma4_gguf_refuses_kv_sharing_llama_cpp_reads_otherwise(tmp_path):
    import torch
    import transformers as tf

    # two shared layers after [s, s, f, s]: the full one reads layer 2, where llama.cpp reads layer 3
    model = tf.Gemma4ForCausalLM(tf.Gemma4TextConfig(**{**BASE, **CASES["e2b"], "num_kv_shared_layers": 2}))
    scale_weights(model)
    model.save_pretrained(str(tmp_path))
    make_tokenizer(str(tmp_path))
    assert torch is not None
    with pytest.raises(ValueError, match="num_kv_shared_layers"):
        edgeformer.quantize(str(tmp_path), str(tmp_path / "m.gguf"), "q8_0")
    assert not (tmp_path / "m.gguf").exists()


def test_gemma4_tokenizer_from_gguf_splits_newlines_and_adds_bos():
    """tokenizer.ggml.model gemma4 (llama.cpp's): SentencePiece-style BPE over merges, spaces as U+2581, no space
    prefix, newline runs split off before the merges, BOS always."""
    from edgeformer.gguf_tokenizer import tokenizer_from_gguf

    sp = "\u2581"
    tokens = ["<pad>", "<eos>", "<bos>", "a", "b", sp, "\n", sp + "a", "ab", "\n\n", "b\n"] + \
        [f"<0x{i:02X}>" for i in range(256)]
    meta = {"tokenizer.ggml.model": "gemma4", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.merges": [f"{sp} a", "a b", "\n \n", "b \n"],
            "tokenizer.ggml.token_type": [3, 3, 3] + [1] * (len(tokens) - 3),
            "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.add_bos_token": False}
    tok = tokenizer_from_gguf(meta, "m.gguf")
    ids = tok.tokenizer.encode("ab a\n\nb\n").ids
    # (b and \n never merge: the newlines are split off first)
    assert [tokens[i] for i in ids] == ["<bos>", "ab", sp + "a", "\n\n", "b", "\n"]
    assert tok.add_bos_token and tok.tokenizer.decode(ids, skip_special_tokens=True) == "ab a\n\nb\n"


def _spm_bpe_tokenizer(out_dir: str):
    """A SentencePiece-style BPE tokenizer.json (spaces as U+2581, byte fallback, merges) as Gemma's are, with a
    BOS template; returns it."""
    import json
    import os

    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    from conftest import CORPUS

    sp = "\u2581"
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Replace(" ", sp)
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "<eos>", "<bos>"], show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for i in range(256):
        vocab.setdefault(f"<0x{i:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    out = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True))
    out.normalizer = normalizers.Replace(" ", sp)
    out.decoder = decoders.Sequence([decoders.Replace(sp, " "), decoders.ByteFallback(), decoders.Fuse()])
    out.add_special_tokens(["<pad>", "<eos>", "<bos>"])
    out.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    out.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<bos>", "eos_token": "<eos>"}, f)
    return out


def test_gemma4_gguf_writes_the_gemma4_tokenizer(tmp_path):
    """A Gemma-style tokenizer goes into the file as llama.cpp's converter writes Gemma 4's (model gemma4, its merges,
    no space prefix) and reads back to the same ids as the tokenizer.json."""
    import gguf
    import torch
    import transformers as tf

    torch.manual_seed(0)
    model = tf.Gemma4ForCausalLM(tf.Gemma4TextConfig(**{**BASE, **CASES["e2b"], "vocab_size": 300,
                                                        "vocab_size_per_layer_input": 300}))
    scale_weights(model)
    model.save_pretrained(str(tmp_path))
    ref = _spm_bpe_tokenizer(str(tmp_path))
    out = tmp_path / "m.gguf"
    edgeformer.quantize(str(tmp_path), str(out), "q8_0")
    fields = gguf.GGUFReader(str(out)).fields
    assert bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() == "gemma4"
    assert "tokenizer.ggml.merges" in fields
    back = edgeformer.load(str(out), threads=2, max_context=64)
    for text in ["The quick brown fox", " leading space", "naïve café 日本語 🙂", "Hello  world"]:
        assert back.tokenizer.encode(text).ids == ref.encode(text).ids, text


def test_gemma4_gguf_reads_fused_expert_gate_up(built, tmp_path):
    """llama.cpp's converter writes Gemma 4's experts with gate and up fused (ffn_gate_up_exps: each expert's gate
    rows, then its up rows): read as views, the same model as the separate tensors."""
    import gguf

    from edgeformer import _core
    from edgeformer.gguf_io import _write_file

    path, _, _ = built("moe")
    sep = tmp_path / "sep.gguf"
    edgeformer.quantize(path, str(sep), "f32")
    model = edgeformer.load(str(sep), threads=2, max_context=64)
    tensors = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(sep)).tensors}
    for i in range(6):
        gate, up = tensors.pop(f"blk.{i}.ffn_gate_exps.weight"), tensors.pop(f"blk.{i}.ffn_up_exps.weight")
        tensors[f"blk.{i}.ffn_gate_up_exps.weight"] = np.concatenate([gate, up], axis=1)
    fused = tmp_path / "fused.gguf"
    meta = {k: v for k, v in model.gguf_metadata.items() if not k.startswith("GGUF.")}
    _write_file(str(fused), "gemma4", meta, {n: (a, _core.DType.f32) for n, a in tensors.items()})
    back = edgeformer.load(str(fused), threads=2, max_context=64)
    np.testing.assert_array_equal(back.logits(PROMPT), model.logits(PROMPT))


@pytest.mark.parametrize("case", ["e2b", "rows"])
def test_gemma4_prompts_run_shared_layers_on_their_last_row_only(case, built, isa):
    """Past the last layer that keeps keys and values, a prompt asked for its last logits (or none) runs on its last
    row alone: the same logits as the whole prompt's last row, and the same cache for the steps after."""
    path, _, _ = built(case)
    core = edgeformer.load(path, threads=2, max_context=64)._core
    ids = np.asarray(PROMPT, np.int32)
    full = core.fork().forward(ids, True)  # (every row: no narrowing)
    last = core.fork().forward(ids, False)
    np.testing.assert_allclose(last[0], full[-1], rtol=0, atol=1e-5 * np.abs(full).max())
    stepped, whole = core.fork(), core.fork()
    stepped.prefill(ids[:-1])  # (no logits: the shared layers not run at all)
    got = stepped.forward(ids[-1:], False)[0]
    np.testing.assert_allclose(got, whole.forward(ids, True)[-1], rtol=0, atol=1e-5 * np.abs(full).max())


def test_gemma4_per_layer_table_stays_as_stored(built):
    """The per-layer embedding table (2.3B values in E2B, a row per token read) is never converted: quantizing the
    model at load leaves it in its file mapping, in the checkpoint's type."""
    from edgeformer import _core

    path, _, _ = built("e2b")
    w = dict(edgeformer.load(path, threads=2, max_context=64, dtype="q4_0")._core.weights())
    assert w["ple.embed.weight"].dtype == _core.DType.f32 and w["layers.0.mlp.up.weight"].dtype == _core.DType.q4_0


def test_gemma4_quantized_file_holds_the_per_layer_table_at_8_bits(tmp_path):
    """The table the model keeps as stored goes into a quantized file at 8 bits (rows of whole q8_0 blocks), as the
    token embedding does."""
    import gguf
    import transformers as tf

    from edgeformer import _core

    model = tf.Gemma4ForCausalLM(tf.Gemma4TextConfig(**{**BASE, **CASES["e2b"], "hidden_size_per_layer_input": 16}))
    scale_weights(model)
    model.save_pretrained(str(tmp_path))
    make_tokenizer(str(tmp_path))
    out = tmp_path / "m.gguf"
    edgeformer.quantize(str(tmp_path), str(out), "q4_0")
    t = {x.name: x for x in gguf.GGUFReader(str(out)).tensors}["per_layer_token_embd.weight"]
    assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
    table = dict(edgeformer.load(str(tmp_path), threads=2, max_context=64)._core.weights())["ple.embed.weight"].numpy()
    back = dict(edgeformer.load(str(out), threads=2, max_context=64)._core.weights())["ple.embed.weight"]
    deq = _core.ops.to_f32(back.numpy(), _core.DType.q8_0, "").reshape(table.shape)
    assert np.abs(deq - table).max() <= np.abs(table).max() / 100


def test_gemma4_keys_as_values_keep_one_matrix(built):
    """attention_k_eq_v: the full layers hold the key projection once (its raw rows serve as the values), from the
    checkpoint as from our GGUF file; the sliding layers keep their own value projection."""
    path, _, _ = built("31b")
    w = dict(edgeformer.load(path, threads=2, max_context=64)._core.weights())
    assert "layers.2.attn.k.weight" in w and "layers.2.attn.v.weight" not in w and "layers.1.attn.v.weight" in w
