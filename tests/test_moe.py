"""Mixture-of-experts models (Mixtral, Qwen2-MoE, Qwen3-MoE, gpt-oss) against transformers on tiny random checkpoints, under
every ISA: logits within 1e-4 + 2e-3 * max|logit|, greedy tokens identical; batches, prompt lookup and quantized
experts agree with one sequence at a time; bad configs name their field."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgeformer

from conftest import assert_logits_close, copy_gguf, ef_greedy, hf_logits, make_model, prompt_ids, reference_cache

PROMPT = prompt_ids(32)
N_GREEDY = 16


def _cases():
    import transformers as tf

    base = dict(vocab_size=320, bos_token_id=0, eos_token_id=None, pad_token_id=None, max_position_embeddings=64,
                hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
    _mha = {**base, "num_key_value_heads": 4}
    # latent attention's widths and DeepSeek's experts, at test size
    mla = dict(q_lora_rank=48, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=32,
               n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=32, n_shared_experts=1,
               intermediate_size=96, num_hidden_layers=3, **_mha)
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 10000.0}
    return {
        # 4 experts, 2 per token, renormalized over the two
        "mixtral": (tf.MixtralForCausalLM, tf.MixtralConfig(intermediate_size=96, num_hidden_layers=2,
                                                          num_local_experts=4, num_experts_per_tok=2, **base)),
        # 6 experts, 3 per token, not renormalized; a shared expert behind a sigmoid gate; layer 1 dense
        # (mlp_only_layers) with an MLP of its own width; q/k/v biases
        "qwen2_moe": (tf.Qwen2MoeForCausalLM, tf.Qwen2MoeConfig(
            intermediate_size=128, num_hidden_layers=3, num_experts=6, num_experts_per_tok=3,
            moe_intermediate_size=32, shared_expert_intermediate_size=96, mlp_only_layers=[1], **base)),
        # gpt-oss: sink logits, sliding and full layers (window 6), yarn, biases, a router with a bias, experts
        # with biases and the clamped gate, stacked in the checkpoint (gate and up columns interleaved)
        "gpt_oss": (tf.GptOssForCausalLM, tf.GptOssConfig(
            intermediate_size=48, num_hidden_layers=3, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
            sliding_window=6, swiglu_limit=1.5,
            rope_parameters={"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                             "truncate": False, "original_max_position_embeddings": 16, "rope_theta": 150000.0},
            **base)),
        # OLMoE: whole-width q/k norms, 8 experts, 3 per token, not renormalized
        "olmoe": (tf.OlmoeForCausalLM, tf.OlmoeConfig(intermediate_size=32, num_hidden_layers=2, num_experts=8,
                                                    num_experts_per_tok=3, **base)),
        # Granite MoE: Granite's four multipliers, 6 experts, 2 per token, softmax over the chosen logits
        "granitemoe": (tf.GraniteMoeForCausalLM, tf.GraniteMoeConfig(
            intermediate_size=32, num_hidden_layers=2, num_local_experts=6, num_experts_per_tok=2,
            embedding_multiplier=3.0, attention_multiplier=0.05, residual_multiplier=0.4, logits_scaling=2.5,
            **base)),
        # 8 experts, 2 per token, renormalized; per-head q/k norms, head_dim 32 apart from hidden / heads
        "qwen3_moe": (tf.Qwen3MoeForCausalLM, tf.Qwen3MoeConfig(
            intermediate_size=128, num_hidden_layers=2, head_dim=32, num_experts=8, num_experts_per_tok=2,
            moe_intermediate_size=48, norm_topk_prob=True, **base)),
        # ERNIE 4.5 MoE: layer 0 dense, then 8 experts, 3 per token chosen with a selection bias, renormalized; a
        # shared expert of two widths; biases everywhere (the head's too); interleaved rotary
        "ernie4_5_moe": (tf.Ernie4_5_MoeForCausalLM, tf.Ernie4_5_MoeConfig(
            intermediate_size=96, num_hidden_layers=3, moe_num_experts=8, moe_k=3, moe_intermediate_size=32,
            moe_num_shared_experts=2, use_bias=True, **base)),
        # GLM-4.5: layer 0 dense, then sigmoid scores plus a selection bias among the 2 best of 4 groups, 3 of 8
        # experts, renormalized and scaled by 2.5; a shared expert; q/k norms; half of each head rotated
        "glm4_moe": (_with_select_bias(tf.Glm4MoeForCausalLM), tf.Glm4MoeConfig(
            intermediate_size=96, num_hidden_layers=3, head_dim=32, n_routed_experts=8, num_experts_per_tok=3,
            moe_intermediate_size=32, n_shared_experts=1, routed_scaling_factor=2.5, n_group=4, topk_group=2,
            use_qk_norm=True, attention_bias=True, **base)),
        # DeepSeek-V2-Lite: latent attention (queries straight from q_proj; values narrower than the latent; a
        # latent of 24 + 16: the cache in rows, not panels),
        # interleaved rotary, layer 0 dense, softmax over 8 experts, 3 per token, scaled by 1.5, 2 shared widths
        "deepseek_v2": (tf.DeepseekV2ForCausalLM, tf.DeepseekV2Config(**{
            **mla, "q_lora_rank": None, "kv_lora_rank": 24, "v_head_dim": 16, "n_shared_experts": 2,
            "first_k_dense_replace": 1, "routed_scaling_factor": 1.5})),
        # DeepSeek-V2: queries through q_a / q_b, experts among the 2 best of 4 groups (a group's best), yarn with
        # mscale_all_dim (the softmax scale grows by its square)
        "deepseek_v2_groups": (tf.DeepseekV2ForCausalLM, tf.DeepseekV2Config(
            first_k_dense_replace=1, topk_method="group_limited_greedy", n_group=4, topk_group=2,
            rope_parameters={**yarn, "mscale": 0.707, "mscale_all_dim": 0.707}, **mla)),
        # DeepSeek-V3: sigmoid scores plus a selection bias among the 2 best of 4 groups (a group's two best),
        # renormalized and scaled by 2.5; rotate-half rotary (rope_interleave false), yarn
        "deepseek_v3": (_with_select_bias(tf.DeepseekV3ForCausalLM), tf.DeepseekV3Config(
            first_k_dense_replace=1, n_group=4, topk_group=2, routed_scaling_factor=2.5, rope_interleave=False,
            rope_parameters={**yarn, "mscale": 1.0, "mscale_all_dim": 1.0}, **mla)),
        # GLM-4.7-Flash: DeepSeek-V3's latent attention (values as wide as the queries) and router; layer kinds listed
        "glm4_moe_lite": (_with_select_bias(tf.Glm4MoeLiteForCausalLM), tf.Glm4MoeLiteConfig(
            routed_scaling_factor=1.8, mlp_layer_types=["dense", "sparse", "sparse"], **mla)),
    }


def _with_select_bias(cls):
    """cls, its routers' selection biases (buffers, which the test's weight scaling leaves at zero) random."""
    def make(cfg):
        import torch

        model = cls(cfg)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name.endswith("e_score_correction_bias"):
                    b.copy_(0.1 * torch.randn(b.shape, generator=g))
        return model
    return make


CASES = list(_cases())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return reference_cache(tmp_path_factory, _cases, PROMPT, N_GREEDY)


@pytest.mark.parametrize("case", CASES)
def test_moe_logits(case, isa, built):
    path, ref, _ = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert_logits_close(model.logits(PROMPT), ref)


@pytest.mark.parametrize("case", CASES)
def test_moe_greedy(case, isa, built):
    path, _, ref_tokens = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert ef_greedy(model, PROMPT, N_GREEDY) == ref_tokens
    n, used = {"mixtral": (4, 2), "qwen2_moe": (6, 3), "qwen3_moe": (8, 2), "gpt_oss": (4, 2), "olmoe": (8, 3),
               "granitemoe": (6, 2), "ernie4_5_moe": (8, 3), "glm4_moe": (8, 3), "deepseek_v2": (8, 3),
               "deepseek_v2_groups": (8, 3), "deepseek_v3": (8, 3), "glm4_moe_lite": (8, 3)}[case]
    assert f"experts={used}/{n}" in repr(model)


def test_moe_routes_tokens_to_different_experts(built):
    """The test models must exercise routing: the experts each token of the prompt takes differ across tokens
    (else a model that ran one expert for all could pass)."""
    import torch
    import transformers as tf

    path, _, _ = built("qwen3_moe")
    ref = tf.Qwen3MoeForCausalLM.from_pretrained(path).eval()
    seen = []
    hook = ref.model.layers[0].mlp.gate.register_forward_hook(lambda m, i, o: seen.append(o[2]))
    with torch.no_grad():
        ref(torch.tensor([PROMPT]))
    hook.remove()
    chosen = {tuple(sorted(r)) for r in seen[0].tolist()}
    assert len(chosen) >= 4, chosen


@pytest.mark.parametrize("case", ["mixtral", "qwen2_moe", "gpt_oss", "glm4_moe", "deepseek_v3"])
def test_moe_batch_and_prompt_lookup_match_one_sequence(case, built):
    """A batch (one forward per step, each row its own experts) and prompt lookup (several rows checked at once)
    give the tokens of single greedy generations."""
    path, _, ref_tokens = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    prompts = [PROMPT, PROMPT[:20], PROMPT[5:]]
    singles = [model.generate(p, max_new_tokens=12, temperature=0, ignore_eos=True).token_ids for p in prompts]
    assert singles[0] == ref_tokens[:12]
    batch = model.generate(prompts, max_new_tokens=12, temperature=0, ignore_eos=True)
    assert [b.token_ids for b in batch] == singles
    looked = model.generate(PROMPT, max_new_tokens=12, temperature=0, ignore_eos=True, prompt_lookup=4)
    assert looked.token_ids == singles[0]


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0", "q4_k"])
def test_moe_quantized_experts_within_floor(dtype, built):
    """dtype= quantizes every expert and the shared one (the router stays f32); our error against the f32
    reference stays within 1.5x the floor (transformers on the same dequantized weights)."""
    import transformers as tf

    from test_quant_models import dequantized_reference, nmse

    path, f32, _ = built("qwen2_moe")
    model = edgeformer.load(path, threads=2, max_context=64, dtype=dtype, exact_q8_prompts=True)
    types = {n: str(t.dtype).split(".")[-1] for n, t in model._core.weights()}
    experts = {t for n, t in types.items() if ".moe.experts." in n or ".moe.shared." in n}
    # (rows of 64 or 32 values are not whole 256-value K-quant blocks: those stay f16)
    assert experts == ({dtype} if dtype != "q4_k" else {"f16"})
    assert types["layers.0.moe.router.weight"] == "f32"
    ours = nmse(model.logits(PROMPT), f32)
    ref = tf.Qwen2MoeForCausalLM.from_pretrained(path).eval()
    floor = nmse(hf_logits(dequantized_reference(model, ref, path), PROMPT), f32)
    assert floor > 0 and ours <= 1.5 * floor, (ours, floor)


def _write(tmp_path, config):
    from edgeformer.io import save_safetensors

    (tmp_path / "config.json").write_text(json.dumps(config))
    save_safetensors({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))


MOE_BASE = {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 16}
BAD = [
    ({**MOE_BASE, "model_type": "mixtral", "num_local_experts": 2, "num_experts_per_tok": 3}, "num_experts_per_tok"),
    ({**MOE_BASE, "model_type": "mixtral", "num_local_experts": 0}, "num_local_experts"),
    ({**MOE_BASE, "model_type": "qwen3_moe", "num_experts": 4, "moe_intermediate_size": 8,
      "mlp_only_layers": "all"}, "mlp_only_layers"),
    ({**MOE_BASE, "model_type": "qwen2_moe", "num_experts": 4}, "moe_intermediate_size"),
    ({**MOE_BASE, "model_type": "qwen2_moe", "num_experts": 4, "moe_intermediate_size": 8,
      "decoder_sparse_step": 0}, "decoder_sparse_step"),
]


@pytest.mark.parametrize("config,field", BAD, ids=[f"{c['model_type']}-{f}" for c, f in BAD])
def test_bad_moe_config_fields_name_themselves(tmp_path, config, field):
    _write(tmp_path, config)
    with pytest.raises(ValueError, match=rf"config\.json.*'{field}'"):
        edgeformer.load(str(tmp_path))


def test_missing_expert_names_the_tensor(tmp_path, built):
    """A checkpoint without one expert's matrix fails at load naming that tensor."""
    from safetensors.numpy import load_file, save_file

    path, _, _ = built("mixtral")
    import shutil

    for f in ("config.json", "tokenizer.json"):
        shutil.copy(f"{path}/{f}", tmp_path / f)
    tensors = load_file(f"{path}/model.safetensors")
    del tensors["model.layers.1.block_sparse_moe.experts.3.w2.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"experts\.3\.w2\.weight"):
        edgeformer.load(str(tmp_path))


# -- GGUF ------------------------------------------------------------------------------------------------------------

def _gguf_source(case, tmp_path):
    """A test model with rows that are whole blocks, and sizes transformers' GGUF reader takes (Qwen3-MoE: head_dim
    128 and experts 768 wide, its defaults: it reads neither from the file)."""
    import transformers as tf

    big = dict(hidden_size=128, vocab_size=320, max_position_embeddings=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=None, pad_token_id=None,
               tie_word_embeddings=False)
    cls, cfg = {
        "mixtral": (tf.MixtralForCausalLM, lambda: tf.MixtralConfig(intermediate_size=64, num_local_experts=4,
                                                                   num_experts_per_tok=2, **big)),
        # (widths as llama.cpp's fallbacks for files without them: intermediate / used, and intermediate)
        "qwen2_moe": (tf.Qwen2MoeForCausalLM, lambda: tf.Qwen2MoeConfig(
            intermediate_size=192, num_experts=6, num_experts_per_tok=3, moe_intermediate_size=64,
            shared_expert_intermediate_size=192, **big)),
        "qwen2_moe_nobias": (tf.Qwen2MoeForCausalLM, lambda: tf.Qwen2MoeConfig(
            intermediate_size=256, num_experts=6, num_experts_per_tok=3, moe_intermediate_size=64,
            shared_expert_intermediate_size=96, qkv_bias=False, **big)),
        "granitemoe": (tf.GraniteMoeForCausalLM, lambda: tf.GraniteMoeConfig(
            intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, embedding_multiplier=3.0,
            attention_multiplier=0.05, residual_multiplier=0.4, logits_scaling=2.5, **big)),
        "mixtral_window": (tf.MixtralForCausalLM, lambda: tf.MixtralConfig(
            intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, sliding_window=8, **big)),
        "qwen3_moe": (tf.Qwen3MoeForCausalLM, lambda: tf.Qwen3MoeConfig(
            intermediate_size=256, head_dim=128, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=768,
            norm_topk_prob=True, **big)),
        "ernie4_5_moe": (tf.Ernie4_5_MoeForCausalLM, lambda: tf.Ernie4_5_MoeConfig(
            intermediate_size=256, moe_num_experts=8, moe_k=3, moe_intermediate_size=64, moe_num_shared_experts=2,
            **{**big, "num_hidden_layers": 3})),
        "glm4_moe": (_with_select_bias(tf.Glm4MoeForCausalLM), lambda: tf.Glm4MoeConfig(
            intermediate_size=256, head_dim=32, n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=64,
            n_shared_experts=1, routed_scaling_factor=2.5, n_group=4, topk_group=2, use_qk_norm=True,
            attention_bias=True, **{**big, "num_hidden_layers": 3})),
        "deepseek_v2": (tf.DeepseekV2ForCausalLM, lambda: tf.DeepseekV2Config(
            q_lora_rank=None, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32,
            n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=64, n_shared_experts=2,
            first_k_dense_replace=1, routed_scaling_factor=1.5, intermediate_size=256,  # (V2-Lite's 27 layers:
            **{**big, "num_hidden_layers": 27, "num_key_value_heads": 4})),             # llama.cpp's test for it)
        "deepseek_v3": (_with_select_bias(tf.DeepseekV3ForCausalLM), lambda: tf.DeepseekV3Config(
            q_lora_rank=64, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=64,
            n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=64, n_shared_experts=1,
            first_k_dense_replace=1, n_group=4, topk_group=2, routed_scaling_factor=2.5, intermediate_size=256,
            rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                             "mscale": 1.0, "mscale_all_dim": 1.0, "rope_theta": 10000.0},
            **{**big, "num_hidden_layers": 3, "num_key_value_heads": 4})),
    }[case]
    src = tmp_path / "src"
    make_model(str(src), cls, cfg())
    return src


@pytest.mark.parametrize("case,qtype", [("mixtral", "q8_0"), ("mixtral", "q4_0"), ("mixtral_window", "q8_0"),
                                        ("granitemoe", "q8_0"),
                                        ("qwen2_moe", "q8_0"), ("qwen2_moe_nobias", "q8_0"), ("qwen3_moe", "q8_0"),
                                        ("qwen3_moe", "q4_k"), ("ernie4_5_moe", "q8_0"), ("glm4_moe", "q8_0"),
                                        ("deepseek_v2", "q8_0"), ("deepseek_v3", "q4_0")])
def test_moe_gguf_roundtrip(case, qtype, tmp_path):
    """Our GGUF file (llama.cpp's layout: each layer's experts stacked in ffn_{gate,up,down}_exps, the router in
    ffn_gate_inp, Qwen2-MoE's shared expert in *_shexp; Mixtral is arch llama with expert_count) loads back to the
    logits of quantize-at-load, each expert a zero-copy view of its stack; transformers' GGUF reader agrees on
    Qwen3-MoE."""
    import gguf

    from test_gguf import _quantize_and_load_back, _transformers_agrees

    src = _gguf_source(case, tmp_path)
    out = tmp_path / "m.gguf"
    direct, back = _quantize_and_load_back(src, out, qtype)
    fields = ("model_type", "n_experts", "n_experts_used", "moe_norm_topk", "shared_ffn_size", "attn_bias",
              "sliding_window", "layer_moe", "moe_sigmoid", "moe_select_bias", "moe_groups", "moe_groups_used",
              "moe_routed_scale", "qk_norm", "mla_kv_lora", "mla_q_lora", "mla_nope", "mla_v", "head_dim", "v_head_dim",
              "attn_scale")
    assert [getattr(back.spec, f) for f in fields] == [getattr(direct.spec, f) for f in fields]
    r = gguf.GGUFReader(str(out))
    arch = {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "granitemoe": "granitemoe",
            "ernie4_5_moe": "ernie4_5-moe", "glm4_moe": "glm4moe", "deepseek_v2": "deepseek2",
            "deepseek_v3": "deepseek2"}[direct.spec.model_type]
    assert bytes(r.fields["general.architecture"].parts[-1]).decode() == arch
    shapes = {t.name: [int(x) for x in t.shape] for t in r.tensors}
    ffn = direct.spec.moe_ffn_size
    assert shapes["blk.1.ffn_down_exps.weight"] == [ffn, 128, direct.spec.n_experts]  # (ggml order)
    assert "blk.1.ffn_gate_inp.weight" in shapes and "blk.1.ffn_gate.weight" not in shapes
    dense0 = case in ("ernie4_5_moe", "glm4_moe", "deepseek_v2", "deepseek_v3")
    assert ("blk.0.ffn_gate.weight" in shapes) == dense0  # (their dense layer 0)
    assert ("blk.1.exp_probs_b.bias" in shapes) == (dense0 and case != "deepseek_v2")
    if case.startswith("deepseek"):  # (each head's k_b [kv_lora, nope] and v_b [v, kv_lora], stacked)
        assert shapes["blk.0.attn_k_b.weight"] == [32, 64, 4] and shapes["blk.0.attn_v_b.weight"][1:] == [direct.spec.mla_v, 4]
    assert ("blk.0.ffn_gate_inp_shexp.weight" in shapes) == case.startswith("qwen2_moe")
    kw = dict(max_new_tokens=8, temperature=0, ignore_eos=True)
    assert back.generate(PROMPT, **kw).token_ids == direct.generate(PROMPT, **kw).token_ids
    if case == "qwen3_moe":  # (q4_k: our products round the activations to 8 bits, theirs do not; 1e-2 allows a
        # token whose routing that rounding flips)
        _transformers_agrees(out, {"q8_0": 1e-6}.get(qtype, 1e-2))


def test_gpt_oss_gguf_without_rope_scaling_reads_back_without_it(tmp_path):
    """A gpt-oss whose rotary is unscaled (a file without yarn keys) reads back unscaled, not with the yarn that
    transformers' config class defaults to (the file's logits were off by NMSE 0.37 before)."""
    import transformers as tf

    cls, cfg = _cases()["gpt_oss"]
    cfg = tf.GptOssConfig(**{**cfg.to_dict(), "swiglu_limit": 7.0,
                             "rope_parameters": {"rope_type": "default", "rope_theta": 150000.0}})
    make_model(str(tmp_path / "src"), cls, cfg)
    from test_gguf import _quantize_and_load_back

    direct, back = _quantize_and_load_back(tmp_path / "src", tmp_path / "m.gguf", "q8_0")
    assert back.spec.rope.scaling == direct.spec.rope.scaling == edgeformer._core.RopeScaling.none


def test_glm4_moe_gguf_with_multi_token_prediction_layers(tmp_path):
    """llama.cpp's GLM-4.5 files count the multi-token-prediction layer in block_count (nextn_predict_layers) and hold
    its tensors as one more block: the model leaves it out and gives the logits of the file without it."""
    import gguf

    src = _gguf_source("glm4_moe", tmp_path)
    plain, mtp = tmp_path / "m.gguf", tmp_path / "mtp.gguf"
    edgeformer.quantize(str(src), str(plain), "q8_0")
    f32 = gguf.GGMLQuantizationType.F32

    def add_block(name, data, kind):
        out = [(name, data, kind)]
        if name == "blk.2.attn_norm.weight":  # (the last layer's: the new block's follow it)
            out += [("blk.3.attn_norm.weight", data, kind), ("blk.3.nextn.eh_proj.weight", np.ones((8, 4), np.float32), f32)]
        return out

    copy_gguf(plain, mtp, {"glm4moe.block_count": 4, "glm4moe.nextn_predict_layers": 1}, add_block)
    want = edgeformer.load(str(plain), threads=2, max_context=64)
    got = edgeformer.load(str(mtp), threads=2, max_context=64)
    assert got.spec.n_layers == want.spec.n_layers == 3
    np.testing.assert_array_equal(got.logits(PROMPT), want.logits(PROMPT))
    copy_gguf(plain, tmp_path / "bad.gguf", {"glm4moe.block_count": 4}, add_block)  # (MTP blocks not declared)
    with pytest.raises(ValueError, match="blk.3"):
        edgeformer.load(str(tmp_path / "bad.gguf"), threads=2, max_context=64)


def test_moe_gguf_with_one_tensor_per_expert(tmp_path):
    """Mixtral files written before llama.cpp stacked the experts hold blk.{i}.ffn_{gate,up,down}.{e}.weight:
    they load to the same logits. A file whose expert count exceeds its stacks fails naming the tensor."""
    from test_gguf import _quantize_and_load_back

    src = _gguf_source("mixtral", tmp_path)
    out = tmp_path / "m.gguf"
    direct, _ = _quantize_and_load_back(src, out, "q8_0")

    def split(name, data, kind):
        if "_exps." not in name:
            return [(name, data, kind)]
        layer, part = name.split(".")[1], name.split(".")[2].split("_")[1]
        return [(f"blk.{layer}.ffn_{part}.{e}.weight", data[e], kind) for e in range(data.shape[0])]

    copy_gguf(out, tmp_path / "split.gguf", tensors=split)
    back = edgeformer.load(str(tmp_path / "split.gguf"), threads=2, max_context=64)
    np.testing.assert_array_equal(back.logits(PROMPT), direct.logits(PROMPT))

    copy_gguf(out, tmp_path / "bad.gguf", meta={"llama.expert_count": 5})
    with pytest.raises(ValueError, match=r"bad\.gguf: blk\.0\.ffn_\w+_exps\.weight holds 4 experts.*"
                                         r"llama\.expert_count says 5"):
        edgeformer.load(str(tmp_path / "bad.gguf"), threads=2, max_context=64)


def test_qwen2moe_gguf_of_older_converters_and_a_quantized_router(tmp_path):
    """Files converted before llama.cpp wrote the expert widths take its fallbacks (intermediate / used, and
    intermediate for the shared expert); a router stored quantized (llama.cpp's quantizer keeps it f32, other tools
    may not) is dequantized at load."""
    import gguf

    from test_gguf import _quantize_and_load_back

    src = _gguf_source("qwen2_moe", tmp_path)
    out = tmp_path / "m.gguf"
    direct, _ = _quantize_and_load_back(src, out, "q8_0")
    old = tmp_path / "old.gguf"
    copy_gguf(out, old, meta={"qwen2moe.expert_feed_forward_length": None,
                               "qwen2moe.expert_shared_feed_forward_length": None})
    np.testing.assert_array_equal(edgeformer.load(str(old), threads=2, max_context=64).logits(PROMPT),
                                  direct.logits(PROMPT))

    def quantized_router(name, data, kind):
        if name.endswith("ffn_gate_inp.weight"):
            return [(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0)]
        return [(name, data, kind)]

    q = tmp_path / "qrouter.gguf"
    copy_gguf(out, q, tensors=quantized_router)
    got = edgeformer.load(str(q), threads=2, max_context=64).logits(PROMPT)
    ref = direct.logits(PROMPT)
    assert float(np.mean((got - ref) ** 2) / np.mean(ref**2)) < 1e-3


def test_moe_gguf_writer_refuses_what_llama_cpp_computes_otherwise(tmp_path, built):
    """llama.cpp reads every qwen2moe / qwen3moe layer as sparse and fixes the renormalization per architecture:
    a model that differs is refused by name, not written to give other answers there."""
    path, _, _ = built("qwen2_moe")  # (layer 1 is dense: mlp_only_layers)
    with pytest.raises(ValueError, match="mlp_only_layers"):
        edgeformer.quantize(path, str(tmp_path / "x.gguf"), "q8_0")
    assert not (tmp_path / "x.gguf").exists()


def test_gpt_oss_clamp_bites(built):
    """The test model's gate clamp (limit 1.5) is reached, so the parity above covers it."""
    import torch
    import transformers as tf

    path, _, _ = built("gpt_oss")
    ref = tf.GptOssForCausalLM.from_pretrained(path).eval()
    seen = []
    ex = ref.model.layers[0].mlp.experts
    hook = ex.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        ref(torch.tensor([PROMPT]))
        gate_up = seen[0] @ ex.gate_up_proj[0] + ex.gate_up_proj_bias[0]
    hook.remove()
    assert float(gate_up.abs().max()) > 1.5


def test_mxfp4_reads_exactly_as_q5_0():
    """Every MXFP4 block (gguf-py's quantizer on random rows, both element orders) becomes q5_0 blocks whose values
    are MXFP4's bit for bit (gguf-py's dequantization)."""
    import gguf

    from edgeformer import _core
    from edgeformer.mxfp4 import hf_blocks_from_matrix, mxfp4_to_q5_0

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 256)) * np.exp(rng.uniform(-6, 3, (8, 1)))).astype(np.float32)
    g = gguf.quants.quantize(w, gguf.GGMLQuantizationType.MXFP4).reshape(8, 8, 17)
    exact = gguf.quants.dequantize(g.reshape(8, -1), gguf.GGMLQuantizationType.MXFP4)
    q = mxfp4_to_q5_0(np.ascontiguousarray(g[..., 1:]), np.ascontiguousarray(g[..., 0]), interleaved=False)
    np.testing.assert_array_equal(_core.ops.to_f32(q.reshape(8, -1), _core.DType.q5_0), exact)
    blocks, scales = hf_blocks_from_matrix(w)
    q = mxfp4_to_q5_0(blocks, scales, interleaved=True)
    np.testing.assert_array_equal(_core.ops.to_f32(q.reshape(8, -1), _core.DType.q5_0), exact)
    with pytest.raises(ValueError, match="exceeds"):
        mxfp4_to_q5_0(blocks, np.full_like(scales, 200), interleaved=True)


def _mxfp4_checkpoint(tmp_path):
    """A tiny gpt-oss whose experts are MXFP4 blocks and scales (as the released ones), and the transformers model of
    the same (dequantized) weights."""
    import shutil

    import torch
    from safetensors.numpy import load_file, save_file

    from edgeformer import _core
    from edgeformer.mxfp4 import hf_blocks_from_matrix, mxfp4_to_q5_0

    cls, cfg = _cases()["gpt_oss"]
    cfg.intermediate_size = 64  # (rows of whole 32-value blocks)
    src = tmp_path / "src"
    ref = make_model(str(src), cls, cfg)
    tensors = load_file(str(src / "model.safetensors"))
    state = ref.state_dict()
    for name in [n for n in tensors if n.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
        w = tensors.pop(name)  # [experts, in, out]: x @ w[e]
        rows = np.ascontiguousarray(np.transpose(w, (0, 2, 1)))  # [experts, out, in]
        parts = [hf_blocks_from_matrix(r) for r in rows]
        tensors[name + "_blocks"] = np.stack([b for b, _ in parts])
        tensors[name + "_scales"] = np.stack([s for _, s in parts])
        exact = np.stack([_core.ops.to_f32(mxfp4_to_q5_0(b, s, True).reshape(len(b), -1), _core.DType.q5_0)
                          for b, s in parts])
        state[name] = torch.from_numpy(np.ascontiguousarray(np.transpose(exact, (0, 2, 1))))
    ref.load_state_dict(state)
    out = tmp_path / "mxfp4"
    out.mkdir()
    save_file(tensors, str(out / "model.safetensors"))
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(src / f, out / f)
    return out, ref


def test_gpt_oss_mxfp4_checkpoint(tmp_path):
    """A checkpoint whose experts are MXFP4 blocks and scales loads with them as q5_0, and its logits are
    transformers' on the same (dequantized) weights, up to the 8-bit activations of the q5_0 products."""
    out, ref = _mxfp4_checkpoint(tmp_path)
    model = edgeformer.load(str(out), threads=2, max_context=64)
    types = {n: str(t.dtype).split(".")[-1] for n, t in model._core.weights()}
    assert types["layers.0.moe.experts.3.gate.weight"] == "q5_0" and types["layers.2.moe.experts.0.down.weight"] == "q5_0"
    want = hf_logits(ref, PROMPT)
    got = model.logits(PROMPT)
    err = float(np.mean((got - want) ** 2) / np.mean(want**2))
    print(f"mxfp4 checkpoint: NMSE {err:.3g}")  # (7e-5 measured: the activations' 8-bit rounding, routes included)
    assert err < 3e-4


def test_load_drops_each_derived_copy_once_the_model_holds_its_own(tmp_path):
    """The q5_0 copies of MXFP4 experts (weights derived at load) leave the checkpoint's map as the model packs each
    one, so that loading holds one copy of the experts at a time, not two; the checkpoint's own tensors stay."""
    from edgeformer import _core
    from edgeformer.archs import spec_from_config
    from edgeformer.model import _materialize, _options

    out, _ = _mxfp4_checkpoint(tmp_path)
    config = json.loads((out / "config.json").read_text())
    ckpt = _core.TensorMap.open_safetensors([str(out / "model.safetensors")])
    stored = set(ckpt.names())
    spec, names = spec_from_config(config, "config.json", ckpt.names())
    keys = _materialize(ckpt, names, consumable=True)
    derived = {k for k in keys.values() if k not in stored}
    assert any("experts.gate_up_proj" in k for k in derived)
    model = _core.Model(spec, ckpt, keys, _options(2, 64, None, 0), consume=True)
    left = set(ckpt.names())
    assert stored <= left  # the files' views are never erased
    experts = {k for k in derived if "_blocks [as" in k}  # the q5_0 matrices, which the model repacks into panels
    assert experts and not experts & left
    assert derived - experts <= left  # (the biases, read as f32 copies, go with the map)
    # a map that builds more models (a seq2seq decoder's beams) keeps them: nothing is consumable there
    ckpt2 = _core.TensorMap.open_safetensors([str(out / "model.safetensors")])
    keys2 = _materialize(ckpt2, names)
    _core.Model(spec, ckpt2, keys2, _options(2, 64, None, 0), consume=True)
    assert derived <= set(ckpt2.names())
    tokens = np.asarray(PROMPT, dtype=np.int32)
    a, b = model.forward(tokens, True), _core.Model(spec, ckpt2, keys2, _options(2, 64, None, 0)).forward(tokens, True)
    np.testing.assert_array_equal(a, b)


def test_gpt_oss_gguf_roundtrip_and_mxfp4_experts(tmp_path):
    """gpt-oss in GGUF (llama.cpp's gpt-oss: gate and up stacked apart, biases as ffn_*_exps.bias, sinks as
    attn_sinks.weight, the pre-MLP norm as post_attention_norm): our file loads back to quantize-at-load's logits;
    with its experts rewritten as MXFP4 (llama.cpp's layout) they load as exact q5_0 and give the logits of the
    same values stored as f32."""
    import gguf

    from test_gguf import _quantize_and_load_back

    cls, cfg = _cases()["gpt_oss"]
    cfg.intermediate_size, cfg.hidden_size, cfg.swiglu_limit = 64, 64, 7.0  # (llama.cpp's fixed clamp)
    src = tmp_path / "src"
    make_model(str(src), cls, cfg)
    out = tmp_path / "m.gguf"
    direct, back = _quantize_and_load_back(src, out, "q8_0")
    assert back.spec.model_type == "gpt_oss" and back.spec.attn_sinks and back.spec.expert_bias
    # the file's type is the layer matrices' (biases and norms, f32, do not count)
    assert int(gguf.GGUFReader(str(out)).fields["general.file_type"].parts[-1][0]) == 7  # q8_0
    assert list(back.spec.layer_windows) == list(direct.spec.layer_windows)
    kw = dict(max_new_tokens=8, temperature=0, ignore_eos=True)
    assert back.generate(PROMPT, **kw).token_ids == direct.generate(PROMPT, **kw).token_ids

    f16 = tmp_path / "f16.gguf"
    edgeformer.quantize(str(src), str(f16), "f16")
    mx, exact = tmp_path / "mxfp4.gguf", tmp_path / "exact.gguf"
    T = gguf.GGMLQuantizationType

    def experts(as_mxfp4):
        def fn(name, data, kind):
            if not name.endswith("_exps.weight"):
                return [(name, data, kind)]
            w = data.view(np.float16).astype(np.float32) if kind == T.F16 else data
            q = gguf.quants.quantize(w, T.MXFP4)
            if as_mxfp4:
                return [(name, q, T.MXFP4)]
            return [(name, gguf.quants.dequantize(q, T.MXFP4).astype(np.float32), T.F32)]
        return fn

    copy_gguf(f16, mx, tensors=experts(True))
    copy_gguf(f16, exact, tensors=experts(False))
    m = edgeformer.load(str(mx), threads=2, max_context=64)
    assert {str(t.dtype).split(".")[-1] for n, t in m._core.weights() if ".moe.experts." in n and n.endswith("weight")} \
        == {"q5_0"}
    want = edgeformer.load(str(exact), threads=2, max_context=64).logits(PROMPT)
    got = m.logits(PROMPT)
    assert float(np.mean((got - want) ** 2) / np.mean(want**2)) < 3e-4

    def huge_scale(name, data, kind):  # a block scale of 2^73: no f16 holds it
        if kind == T.MXFP4 and name.startswith("blk.1.ffn_up_exps"):
            data = data.copy()
            data.reshape(-1, 17)[5, 0] = 200
        return [(name, data, kind)]

    bad = tmp_path / "bad.gguf"
    copy_gguf(mx, bad, tensors=huge_scale)
    with pytest.raises(ValueError, match=r"blk\.1\.ffn_up_exps\.weight.*bad\.gguf.*2\^73 exceeds"):
        edgeformer.load(str(bad), threads=2, max_context=64)


def test_gguf_with_tensors_the_model_does_not_read_is_refused(tmp_path):
    """A file whose tensors the architecture's model leaves unread is a variant we do not compute (here: a shared
    expert beside Granite MoE's experts, as llama.cpp writes GraniteMoeShared under granitemoe); it fails naming
    the tensors instead of loading and answering wrongly. gpt-oss without attention biases is not written."""
    from test_gguf import _quantize_and_load_back

    src = _gguf_source("granitemoe", tmp_path)
    out = tmp_path / "m.gguf"
    _quantize_and_load_back(src, out, "q8_0")

    def shared(name, data, kind):
        extra = [(name.replace("ffn_up_exps", "ffn_up_shexp"), data[0], kind)] if "ffn_up_exps" in name else []
        return [(name, data, kind)] + extra

    bad = tmp_path / "shared.gguf"
    copy_gguf(out, bad, tensors=shared)
    with pytest.raises(ValueError, match=r"shared\.gguf: tensors 'blk\.0\.ffn_up_shexp\.weight'.* not read by the "
                                         r"granitemoe model"):
        edgeformer.load(str(bad), threads=2, max_context=64)

    cls, cfg = _cases()["gpt_oss"]
    cfg.swiglu_limit, cfg.attention_bias = 7.0, False
    make_model(str(tmp_path / "oss"), cls, cfg)
    with pytest.raises(ValueError, match="attention_bias"):
        edgeformer.quantize(str(tmp_path / "oss"), str(tmp_path / "oss.gguf"), "q8_0")


def test_glm4_moe_lite_gguf_is_deepseek2(built, tmp_path):
    """GLM-4.7-Flash goes out as llama.cpp does (arch deepseek2) and comes back as the DeepSeek-V3 it computes as:
    the logits of quantize-at-load."""
    import gguf

    from test_gguf import _quantize_and_load_back

    path, _, _ = built("glm4_moe_lite")
    direct, back = _quantize_and_load_back(path, tmp_path / "m.gguf", "q8_0")
    assert bytes(gguf.GGUFReader(str(tmp_path / "m.gguf")).fields["general.architecture"].parts[-1]) == b"deepseek2"
    assert (direct.spec.model_type, back.spec.model_type) == ("glm4_moe_lite", "deepseek_v3")
