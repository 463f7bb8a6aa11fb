"""Gemma 3n against transformers on tiny random checkpoints, under every ISA: AltUp's four streams around each
layer (prediction, correction, the per-layer input branch into the other streams, the streams projected back and
averaged), LAuReL beside the attention, MLP widths per layer (MatFormer), activation sparsity in the first layers,
shared keys and values in the last ones, per-layer inputs of a smaller vocabulary than the model's, value norms.
Logits within 1e-4 + 2e-3 * max|logit|, greedy tokens identical; batched decode steps equal single ones; GGUF in
and out as llama.cpp's gemma3n (which fixes the streams, ranks, widths and layer counts it reads)."""

from __future__ import annotations

import pytest

import edgeformer

from conftest import assert_logits_close, ef_greedy, gguf_roundtrip, make_tokenizer, prompt_ids, reference_cache
from test_batch import _batch_vs_single

PROMPT = prompt_ids(32)
N_GREEDY = 12

LAYERS6 = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
           "full_attention"]
CASES = {
    # widths per layer, sparsity in two layers, two layers sharing keys and values, PLE vocabulary below the model's
    "small": dict(vocab_size=300, hidden_size=64, intermediate_size=[96, 80, 96, 64, 96, 96], num_hidden_layers=6,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                  sliding_window=8, layer_types=LAYERS6, vocab_size_per_layer_input=280,
                  hidden_size_per_layer_input=8, num_kv_shared_layers=2, laurel_rank=8,
                  activation_sparsity_pattern=[0.95, 0.9, 0.0, 0.0, 0.0, 0.0], altup_num_inputs=4,
                  final_logit_softcapping=30.0),
    # LAuReL wider than every MLP (its rows share the MLP's scratch)
    "wide_laurel": dict(vocab_size=300, hidden_size=64, intermediate_size=16, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                        layer_types=["sliding_attention", "full_attention", "full_attention"], sliding_window=8,
                        vocab_size_per_layer_input=300, hidden_size_per_layer_input=8, num_kv_shared_layers=1,
                        laurel_rank=64, activation_sparsity_pattern=[0.95, 0.0, 0.0], altup_num_inputs=2),
    # llama.cpp's fixed shape (E2B's, narrow): 25 layers, the first 20 with keys and values, sparsity in the first
    # 10, LAuReL of 64, per-layer inputs of 256; the correction unscaled, no soft cap on the way in
    "gguf": dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=25, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, max_position_embeddings=256, sliding_window=8,
                 vocab_size_per_layer_input=300, hidden_size_per_layer_input=256, num_kv_shared_layers=5,
                 laurel_rank=64, altup_num_inputs=4, final_logit_softcapping=30.0),
}


def _make(path: str, case: str, **over):
    """A tiny random Gemma 3n with AltUp coefficients large enough to matter; returns the transformers model."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    text = tf.Gemma3nTextConfig(**{**CASES[case], "bos_token_id": 0, "eos_token_id": None, "pad_token_id": None,
                                   **over})
    model = tf.Gemma3nForCausalLM(text).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif "altup" in name and ("coefs" in name or "correct_output" in name):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(path)
    make_tokenizer(path)
    return model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return reference_cache(tmp_path_factory, None, PROMPT, N_GREEDY, make=_make)


@pytest.mark.parametrize("case", list(CASES))
def test_gemma3n_logits_and_greedy(case, isa, built):
    path, ref, ref_tokens = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert_logits_close(model.logits(PROMPT), ref)
    assert ef_greedy(model, PROMPT, N_GREEDY) == ref_tokens


def test_gemma3n_spec(built):
    import math

    path, _, _ = built("small")
    s = edgeformer.load(path, threads=2, max_context=64).spec
    assert (s.altup, s.laurel_rank, s.altup_correct_scale, s.ple_dim, s.ple_vocab) == (4, 8, True, 8, 280)
    assert s.layer_ffn == [96, 80, 96, 64, 96, 96] and s.layer_kv_source == [-1, -1, -1, -1, 3, 2]
    assert abs(s.layer_gate_sigma[0] - 1.6448536) < 1e-5 and abs(s.layer_gate_sigma[1] - 1.2815516) < 1e-5
    assert all(math.isnan(x) for x in s.layer_gate_sigma[2:]) and not s.layer_scale


def test_gemma3n_batch_rows_are_single_steps(built, isa):
    path, _, _ = built("small")
    _batch_vs_single(edgeformer.load(path, threads=2, max_context=64))


def test_gemma3n_gguf_roundtrip(built, tmp_path):
    """llama.cpp's gemma3n: the AltUp projections stacked, the shared layers' (unread) keys and values written as
    zeros, as its loader requires them. Our f16 file loads back to the logits of f16-at-load. (A quantized file
    holds the per-layer table at 8 bits, which a model loaded with a dtype keeps as stored: test_gemma4.py.)"""
    import gguf

    path, _, _ = built("gguf")
    direct, back, out = gguf_roundtrip(path, tmp_path, PROMPT, "f16")
    fields = ("altup", "laurel_rank", "ple_dim", "layer_kv_source", "layer_windows", "head_dim", "logit_softcap")
    assert [getattr(back.spec, f) for f in fields] == [getattr(direct.spec, f) for f in fields]
    names = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    assert list(names["altup_proj.weight"].shape)[-1] == 3 and "blk.24.attn_k.weight" in names


@pytest.mark.parametrize("over,field", [({"laurel_rank": 8}, "laurel_rank"),
                                        ({"num_kv_shared_layers": 4}, "num_kv_shared_layers"),
                                        ({"activation_sparsity_pattern": [0.9] * 10 + [0.0] * 15},
                                         "activation_sparsity_pattern")])
def test_gemma3n_gguf_refuses_what_llama_cpp_fixes_otherwise(over, field, tmp_path):
    _make(str(tmp_path), "gguf", **over)
    with pytest.raises(ValueError, match=field):
        edgeformer.quantize(str(tmp_path), str(tmp_path / "m.gguf"), "q8_0")
    assert not (tmp_path / "m.gguf").exists()


def test_gemma3n_prompts_run_shared_layers_on_their_last_row_only(built, isa):
    """As Gemma 4's: past the last layer that keeps keys and values, a prompt asked for its last logits runs on its
    last row alone (AltUp's four streams narrowed with it)."""
    import numpy as np

    path, _, _ = built("small")
    core = edgeformer.load(path, threads=2, max_context=64)._core
    ids = np.asarray(PROMPT, np.int32)
    full = core.fork().forward(ids, True)
    np.testing.assert_allclose(core.fork().forward(ids, False)[0], full[-1], rtol=0, atol=1e-5 * np.abs(full).max())
