"""Quantize at load: every type, for a Llama and for other families; our error against the f32 reference
stays within 1.5x the floor (transformers run on the same dequantized weights: the weight-only error)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import edgeformer
from edgeformer import _core
from edgeformer.archs import Derived, spec_from_config
from edgeformer.gguf_io import llama_qk_permutation

from conftest import hf_logits, make_llama, make_model, prompt_ids

PROMPT = prompt_ids(32)
from edgeformer.model import BLOCK_TYPES as TYPES  # noqa: E402


def nmse(a, ref):
    return float(((a - ref) ** 2).sum() / (ref**2).sum())


def dequantized_reference(model: "edgeformer.Model", ref_model, path: str):
    """transformers' model with our (quantized, then dequantized) weights put back in its own layout."""
    import torch

    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    core = model._core
    _, names = spec_from_config(config, "config.json", [])
    state = {k: v.clone() for k, v in ref_model.state_dict().items()}
    permuted = core.spec.rope.style == _core.RopeStyle.interleaved and config["model_type"] in ("llama", "mistral", "mixtral")
    for canonical, t in core.weights():
        src = names.get(canonical)
        if isinstance(src, Derived):
            src = src.src
        if src is None or src not in state:
            continue
        a = t.numpy()
        if str(t.dtype) != "DType.f32":
            a = _core.ops.to_f32(a.reshape(t.shape[0], -1) if a.ndim == 2 else a[None], t.dtype)
        a = np.asarray(a, np.float32).reshape(t.shape)
        if permuted and (".attn.q." in canonical or ".attn.k." in canonical):
            heads = core.spec.n_heads if ".attn.q." in canonical else core.spec.n_kv_heads
            perm = llama_qk_permutation(heads, core.spec.head_dim)
            inv = np.empty_like(perm)
            inv[perm] = np.arange(len(perm))
            a = a[inv]
        state[src] = torch.from_numpy(a.copy()).reshape(state[src].shape)
    ref_model.load_state_dict(state)
    return ref_model


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("qllama")
    # K-quants need rows of 256: hidden 256, FFN 512
    ref = make_llama(str(d), hidden_size=256, intermediate_size=512, num_attention_heads=8, num_key_value_heads=2)
    return str(d), hf_logits(ref, PROMPT)


@pytest.mark.parametrize("dtype", TYPES)
def test_llama_quantized_within_floor(dtype, isa, llama, tmp_path):
    import transformers

    path, f32 = llama
    model = edgeformer.load(path, dtype=dtype, threads=2, max_context=64, exact_q8_prompts=True)
    kinds = {str(t.dtype) for n, t in model._core.weights() if ".mlp." in n}
    assert kinds == {f"DType.{dtype}"}
    ours = model.logits(PROMPT)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    floor = nmse(hf_logits(dequantized_reference(model, ref, path), PROMPT), f32)
    err = nmse(ours, f32)
    print(f"{dtype}: ours {err:.3g}, floor {floor:.3g}, ratio {err / floor:.2f}")
    assert floor > 0 and err <= 1.5 * floor, (err, floor)
    if dtype == "q8_0":  # by default prompts take one int8 level (llama.cpp's and CTranslate2's int8 products)
        fast = edgeformer.load(path, dtype=dtype, threads=2, max_context=64)
        e1 = nmse(fast.logits(PROMPT), f32)
        print(f"q8_0 one-level prompts: {e1:.3g}, ratio {e1 / floor:.2f}")
        assert err < e1 <= 2.5 * floor, (err, e1, floor)
        # decode steps keep both levels either way: token by token, the two models agree to the last bit
        steps = []
        for exact in (True, False):
            core = edgeformer.load(path, dtype=dtype, threads=2, max_context=64, exact_q8_prompts=exact)._core
            steps.append(np.stack([core.forward(np.array([t], np.int32), False) for t in PROMPT[:6]]))
        np.testing.assert_array_equal(steps[0], steps[1])
    # greedy decoding runs through the same kernels
    assert len(model.generate(PROMPT, max_new_tokens=4, temperature=0, ignore_eos=True).token_ids) == 4


@pytest.mark.parametrize("dtype", ["q4_k", "q5_0"])
def test_long_prompts_on_amx_in_bf16_within_floor(dtype, llama):
    """amx: a prompt of 64 tokens or more multiplies 4- and 5-bit weights decoded to bf16 by bf16 activations
    (not 8-bit ones): within 1.5x the weight-only floor as the 8-bit products are, and not their result; decode
    steps and exact_q8_prompts keep the 8-bit products."""
    import transformers

    if "amx" not in _core.cpu_info()["supported_isas"]:
        pytest.skip("no AMX on this CPU")
    path, _ = llama
    ids = prompt_ids(80, seed=5)
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    f32 = hf_logits(ref_model, ids)
    default_isa = _core.active_isa()
    _core.set_isa("amx")
    try:
        model = edgeformer.load(path, dtype=dtype, threads=2, max_context=96)
        ours = model.logits(ids)
        exact = edgeformer.load(path, dtype=dtype, threads=2, max_context=96, exact_q8_prompts=True).logits(ids)
    finally:
        _core.set_isa(default_isa)
    floor = nmse(hf_logits(dequantized_reference(model, ref_model, path), ids), f32)
    err = nmse(ours, f32)
    assert floor > 0 and err <= 1.5 * floor, (err, floor)
    assert not np.array_equal(ours, exact) and nmse(exact, f32) <= 1.5 * floor


@pytest.mark.parametrize("family", ["gpt2", "falcon", "bert"])
def test_other_families_quantize(family, tmp_path):
    """Every architecture takes a quantized dtype; q8_0 and int8 stay close to f32."""
    import transformers as tf

    base = dict(vocab_size=320)
    cls, cfg = {
        "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config(n_embd=128, n_layer=2, n_head=4, n_positions=64, **base)),
        "falcon": (tf.FalconForCausalLM, tf.FalconConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                                       new_decoder_architecture=True, num_kv_heads=2,
                                                       max_position_embeddings=64, **base)),
        "bert": (tf.BertModel, tf.BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=256, max_position_embeddings=64, **base)),
    }[family]
    ref = make_model(str(tmp_path), cls, cfg)
    f32 = edgeformer.load(str(tmp_path), threads=2)
    run = (lambda m: m.hidden_states(PROMPT[:20])) if family == "bert" else (lambda m: m.logits(PROMPT))
    a = run(f32)
    errs = {dt: nmse(run(edgeformer.load(str(tmp_path), dtype=dt, threads=2)), a) for dt in ("q8_0", "int8")}
    print(family, errs)
    assert 0 < errs["q8_0"] < 2e-3 and 0 < errs["int8"] < 2e-3, errs


def test_llama_int8(isa, llama, tmp_path):
    """dtype="int8" (CTranslate2's scheme): q8_0 layer rows that share one scale, activations with one scale per
    token, integer sums over whole rows. Its error stays near the weights' own; a prompt's logits match a
    token-by-token replay; a GGUF file written from it is plain q8_0 and loads back to the same logits."""
    import transformers

    from edgeformer.gguf_io import quantize

    path, f32 = llama
    model = edgeformer.load(path, dtype="int8", threads=2, max_context=64)
    for n, t in model._core.weights():
        if ".mlp." in n or ".attn." in n or n.startswith("lm_head"):
            assert str(t.dtype) == "DType.q8_0", n
            blocks = t.numpy().reshape(t.shape[0], -1, 34)
            assert (blocks[:, :, :2] == blocks[:, :1, :2]).all(), f"{n}: the blocks of a row differ in scale"
    ours = model.logits(PROMPT)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    floor = nmse(hf_logits(dequantized_reference(model, ref, path), PROMPT), f32)
    err = nmse(ours, f32)
    q8 = nmse(edgeformer.load(path, dtype="q8_0", threads=2, max_context=64).logits(PROMPT), f32)
    print(f"int8: ours {err:.3g}, floor {floor:.3g}, ratio {err / floor:.2f}; q8_0 one-level {q8:.3g}")
    assert floor > 0 and err <= 2.5 * floor, (err, floor)
    # decode steps take the same integer products as the prompt
    core = edgeformer.load(path, dtype="int8", threads=2, max_context=64)._core
    steps = np.stack([core.forward(np.array([t], np.int32), False) for t in PROMPT[:8]])
    np.testing.assert_allclose(steps[:, 0], ours[:8], rtol=0, atol=1e-4 * np.abs(ours[:8]).max())
    out = quantize(path, str(tmp_path / "int8.gguf"), "int8", threads=2)
    back = edgeformer.load(out, threads=2, max_context=64)
    np.testing.assert_array_equal(back.logits(PROMPT), ours)
