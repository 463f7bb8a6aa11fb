"""Mixture-of-experts models (Mixtral, Qwen2-MoE, Qwen3-MoE) against transformers on tiny random checkpoints, under
every ISA: logits within 1e-4 + 2e-3 * max|logit|, greedy tokens identical; batches, prompt lookup and quantized
experts agree with one sequence at a time; bad configs name their field."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgeformer

from conftest import assert_logits_close, hf_greedy, hf_logits, make_model, prompt_ids

PROMPT = prompt_ids(32)
N_GREEDY = 16


def _cases():
    import transformers as tf

    base = dict(vocab_size=320, bos_token_id=0, eos_token_id=None, pad_token_id=None, max_position_embeddings=64,
                hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
    return {
        # 4 experts, 2 per token, renormalized over the two
        "mixtral": (tf.MixtralForCausalLM, tf.MixtralConfig(intermediate_size=96, num_hidden_layers=2,
                                                          num_local_experts=4, num_experts_per_tok=2, **base)),
        # 6 experts, 3 per token, not renormalized; a shared expert behind a sigmoid gate; layer 1 dense
        # (mlp_only_layers) with an MLP of its own width; q/k/v biases
        "qwen2_moe": (tf.Qwen2MoeForCausalLM, tf.Qwen2MoeConfig(
            intermediate_size=128, num_hidden_layers=3, num_experts=6, num_experts_per_tok=3,
            moe_intermediate_size=32, shared_expert_intermediate_size=96, mlp_only_layers=[1], **base)),
        # 8 experts, 2 per token, renormalized; per-head q/k norms, head_dim 32 apart from hidden / heads
        "qwen3_moe": (tf.Qwen3MoeForCausalLM, tf.Qwen3MoeConfig(
            intermediate_size=128, num_hidden_layers=2, head_dim=32, num_experts=8, num_experts_per_tok=2,
            moe_intermediate_size=48, norm_topk_prob=True, **base)),
    }


CASES = list(_cases())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cls, cfg = _cases()[name]
            d = tmp_path_factory.mktemp(name)
            ref = make_model(str(d), cls, cfg)
            cache[name] = (str(d), hf_logits(ref, PROMPT), hf_greedy(ref, PROMPT, N_GREEDY))
        return cache[name]

    return get


@pytest.mark.parametrize("case", CASES)
def test_moe_logits(case, isa, built):
    path, ref, _ = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert_logits_close(model.logits(PROMPT), ref)


@pytest.mark.parametrize("case", CASES)
def test_moe_greedy(case, isa, built):
    path, _, ref_tokens = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    out = model.generate(PROMPT, max_new_tokens=N_GREEDY, temperature=0, ignore_eos=True)
    assert out.token_ids == ref_tokens


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


@pytest.mark.parametrize("case", ["mixtral", "qwen2_moe"])
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
