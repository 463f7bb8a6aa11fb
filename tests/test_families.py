"""GPT-2, GPT-J, GPT-Neo, GPTBigCode, GPT-NeoX, OPT, BLOOM, MPT, Falcon, CodeGen, Phi-2, StarCoder2, StableLM, Granite, Qwen2, Qwen3, Phi-3, Gemma 1, 2 and 3, BERT and T5 against transformers on tiny random checkpoints, under
every ISA: logits within 1e-4 + 2e-3 * max|logit|, greedy tokens identical, BERT hidden states of a padded
batch, T5 decoder logits, greedy and beam search."""

from __future__ import annotations

import numpy as np
import pytest

import edgeformer

from conftest import assert_logits_close, ef_greedy, hf_greedy, hf_logits, make_model, prompt_ids, reference_cache

PROMPT = prompt_ids(32)
N_GREEDY = 16


def _decoders():
    import transformers as tf

    base = dict(vocab_size=320, bos_token_id=0, eos_token_id=None, pad_token_id=None)
    return {
        # odd head count: 5 heads of 16
        "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config(n_embd=80, n_layer=2, n_head=5, n_positions=64, **base)),
        "opt_pre": (tf.OPTForCausalLM, tf.OPTConfig(hidden_size=64, num_hidden_layers=2, ffn_dim=128,
                                                  num_attention_heads=4, max_position_embeddings=64,
                                                  word_embed_proj_dim=64, **base)),
        # post-LN (as OPT-350m) with project_in / project_out
        "opt_post_proj": (tf.OPTForCausalLM, tf.OPTConfig(hidden_size=64, num_hidden_layers=2, ffn_dim=128,
                                                        num_attention_heads=4, max_position_embeddings=64,
                                                        do_layer_norm_before=False, word_embed_proj_dim=32, **base)),
        # 6 heads: ALiBi slopes for a head count that is not a power of two
        "bloom": (tf.BloomForCausalLM, tf.BloomConfig(hidden_size=96, n_layer=2, n_head=6, **base)),
        # MPT: 6 heads (its own slopes for a head count that is not a power of two); clamped q/k/v and a softmax
        # scale
        "mpt": (tf.MptForCausalLM, tf.MptConfig(d_model=96, n_heads=6, n_layers=2, max_seq_len=64, **base)),
        "mpt_clip": (tf.MptForCausalLM, tf.MptConfig(d_model=64, n_heads=4, n_layers=2, max_seq_len=64,
                                                    attn_config={"clip_qkv": 0.1, "softmax_scale": 0.3}, **base)),
        "falcon_rw": (tf.FalconForCausalLM, tf.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                          multi_query=True, parallel_attn=True, bias=False,
                                                          new_decoder_architecture=False, alibi=False,
                                                          max_position_embeddings=64, **base)),
        # multi-query with 12 query heads: a decode step takes its query heads 8 at a time
        "falcon_mqa12": (tf.FalconForCausalLM, tf.FalconConfig(hidden_size=192, num_hidden_layers=2,
                                                             num_attention_heads=12, multi_query=True,
                                                             parallel_attn=True, bias=False,
                                                             new_decoder_architecture=False, alibi=False,
                                                             max_position_embeddings=64, **base)),
        "falcon_new": (tf.FalconForCausalLM, tf.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                           num_kv_heads=2, new_decoder_architecture=True, bias=False,
                                                           alibi=False, max_position_embeddings=64, **base)),
        "falcon_seq_bias": (tf.FalconForCausalLM, tf.FalconConfig(hidden_size=64, num_hidden_layers=2,
                                                                num_attention_heads=4, multi_query=False,
                                                                parallel_attn=False, bias=True, alibi=False,
                                                                new_decoder_architecture=False,
                                                                max_position_embeddings=64, **base)),
        "falcon_alibi": (tf.FalconForCausalLM, tf.FalconConfig(hidden_size=96, num_hidden_layers=2,
                                                             num_attention_heads=6, multi_query=False,
                                                             parallel_attn=False, bias=True, alibi=True,
                                                             new_decoder_architecture=False,
                                                             max_position_embeddings=64, **base)),
        # q/k/v biases (none on o), tied head
        "qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                    num_attention_heads=4, num_key_value_heads=2,
                                                    max_position_embeddings=64, tie_word_embeddings=True, **base)),
        # GPT-J: CodeGen's block with q, k, v apart; rotary on 8 of each head's 16
        "gptj": (tf.GPTJForCausalLM, tf.GPTJConfig(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=64,
                                                   **base)),
        # global then local (window 6) layers, unscaled scores
        "gpt_neo": (tf.GPTNeoForCausalLM, tf.GPTNeoConfig(hidden_size=64, num_layers=2, num_heads=4,
                                                          attention_types=[[["global", "local"], 1]], window_size=6,
                                                          max_position_embeddings=64, **base)),
        # one key/value head (multi_query), Linear weights
        "gpt_bigcode": (tf.GPTBigCodeForCausalLM, tf.GPTBigCodeConfig(n_embd=64, n_layer=2, n_head=4,
                                                                      n_positions=64, **base)),
        # per-head [q, k, v] rows
        "gpt_bigcode_mha": (tf.GPTBigCodeForCausalLM, tf.GPTBigCodeConfig(n_embd=64, n_layer=2, n_head=4,
                                                                          n_positions=64, multi_query=False, **base)),
        # a sliding window of 8 on every layer
        "qwen2_window": (tf.Qwen2ForCausalLM, tf.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                           num_attention_heads=4, num_key_value_heads=1,
                                                           max_position_embeddings=64, use_sliding_window=True,
                                                           sliding_window=8, max_window_layers=0, **base)),
        # the window on the second layer only (max_window_layers=1)
        "qwen2_window_layer1": (tf.Qwen2ForCausalLM, tf.Qwen2Config(hidden_size=64, intermediate_size=128,
                                                                  num_hidden_layers=2, num_attention_heads=4,
                                                                  num_key_value_heads=2, max_position_embeddings=64,
                                                                  use_sliding_window=True, sliding_window=6,
                                                                  max_window_layers=1, **base)),
        # per-head q/k norms, head_dim 32 apart from hidden / heads (64 / 4)
        "qwen3": (tf.Qwen3ForCausalLM, tf.Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                                    max_position_embeddings=64, tie_word_embeddings=True, **base)),
        # fused qkv_proj and gate_up_proj
        "phi3": (tf.Phi3ForCausalLM, tf.Phi3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                 num_attention_heads=4, num_key_value_heads=2,
                                                 max_position_embeddings=64, **base)),
        # with a sliding window of 8 and rotary on half of each head (Phi-4-mini rotates 3/4)
        "phi3_window_partial": (tf.Phi3ForCausalLM, tf.Phi3Config(hidden_size=64, intermediate_size=128,
                                                                num_hidden_layers=2, num_attention_heads=4,
                                                                num_key_value_heads=4, max_position_embeddings=64,
                                                                sliding_window=8, partial_rotary_factor=0.5, **base)),
        # longrope (Phi-3.5, Phi-4-mini): short factors up to 16 positions, then the long ones, 3/4 of each head
        # rotated; the 32-token prompt crosses over, a prefill in pieces must not
        "phi3_longrope": (tf.Phi3ForCausalLM, tf.Phi3Config(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, original_max_position_embeddings=16, partial_rotary_factor=0.75,
            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                             "short_factor": [1.0 + 0.1 * i for i in range(6)],
                             "long_factor": [1.5 + 0.7 * i for i in range(6)],
                             "original_max_position_embeddings": 16}, **base)),
        # Gemma 3: sliding layers (window 6) with a rotary base of their own, a full layer with linear scaling,
        # (1 + w) norms before and after attention and MLP, q/k norms, scaled embeddings, GeGLU
        "gemma3": (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, max_position_embeddings=64, sliding_window=6, query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1000.0}}, **base)),
        # Gemma 2: soft-capped scores and logits (caps small enough to bend them), every other layer sliding
        "gemma2": (tf.Gemma2ForCausalLM, tf.Gemma2Config(
            hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, max_position_embeddings=64, sliding_window=6, query_pre_attn_scalar=24,
            attn_logit_softcapping=2.0, final_logit_softcapping=3.0, **base)),
        # Gemma (1): GeGLU, scaled embeddings, (1 + w) norms, head_dim 32 apart from hidden / heads, tied head
        "gemma": (tf.GemmaForCausalLM, tf.GemmaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                    num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                                                    max_position_embeddings=64, **base)),
        # GPT-NeoX (Pythia): parallel residual with two LayerNorms, fused per-head QKV, rotary on a quarter of
        # each head (rotate-half)
        "gpt_neox": (tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(hidden_size=64, intermediate_size=128,
                                                           num_hidden_layers=2, num_attention_heads=4,
                                                           max_position_embeddings=64, **base)),
        # sequential residual, rotary on the whole head, no attention biases
        "gpt_neox_seq": (tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, use_parallel_residual=False, attention_bias=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}, **base)),
        # Phi-2: one LayerNorm, attention and MLP in parallel, partial rotary, biases, a head bias
        "phi": (tf.PhiForCausalLM, tf.PhiConfig(hidden_size=80, intermediate_size=160, num_hidden_layers=2,
                                              num_attention_heads=4, max_position_embeddings=64, **base)),
        # StarCoder2: LayerNorms, plain GELU MLP, biases everywhere, GQA, a sliding window of 8, tied head
        "starcoder2": (tf.Starcoder2ForCausalLM, tf.Starcoder2Config(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, sliding_window=8, **base)),
        # StableLM: LayerNorms, a quarter of each head rotated; sequential with q/k/v biases, or parallel
        "stablelm": (tf.StableLmForCausalLM, tf.StableLmConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, use_qkv_bias=True, **base)),
        "stablelm_parallel": (tf.StableLmForCausalLM, tf.StableLmConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=64, use_parallel_residual=True, **base)),
        # Granite: embedding, attention, residual and logits multipliers
        "granite": (tf.GraniteForCausalLM, tf.GraniteConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, embedding_multiplier=3.0, attention_multiplier=0.05,
            residual_multiplier=0.4, logits_scaling=2.5, **base)),
        # OLMo 2: norms after attention and MLP only, whole-width q/k norms
        "olmo2": (tf.Olmo2ForCausalLM, tf.Olmo2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                    num_attention_heads=4, num_key_value_heads=2,
                                                    max_position_embeddings=64, **base)),
        # SmolLM3: no rotary on every 4th layer (4 layers: the last)
        "smollm3": (tf.SmolLM3ForCausalLM, tf.SmolLM3Config(hidden_size=64, intermediate_size=128,
                                                          num_hidden_layers=4, num_attention_heads=4,
                                                          num_key_value_heads=2, max_position_embeddings=64, **base)),
        # with use_sliding_window: transformers puts the window (6) on the layers without rotary
        "smollm3_window": (tf.SmolLM3ForCausalLM, tf.SmolLM3Config(
            hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, use_sliding_window=True, sliding_window=6, **base)),
        # Cohere: bias-free LayerNorms, parallel attention and MLP through one norm, interleaved rotary, scaled logits
        "cohere": (tf.CohereForCausalLM, tf.CohereConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                       num_attention_heads=4, num_key_value_heads=2,
                                                       max_position_embeddings=64, logit_scale=0.5, **base)),
        # rotary_dim 8 of head_dim 16: partial, interleaved
        "codegen": (tf.CodeGenForCausalLM, tf.CodeGenConfig(n_embd=64, n_layer=2, n_head=4, rotary_dim=8,
                                                          n_positions=64, **base)),
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return reference_cache(tmp_path_factory, _decoders, PROMPT, N_GREEDY)


DECODERS = ["gpt2", "opt_pre", "opt_post_proj", "bloom", "mpt", "mpt_clip", "falcon_rw", "falcon_mqa12", "falcon_new",
            "falcon_seq_bias", "falcon_alibi", "codegen", "qwen2", "qwen2_window", "qwen2_window_layer1",
            "qwen3", "phi3", "phi3_window_partial", "phi3_longrope", "gemma3", "gemma2", "gemma", "gpt_neox",
            "gpt_neox_seq", "phi", "starcoder2", "stablelm", "stablelm_parallel", "granite", "olmo2", "smollm3",
            "smollm3_window", "cohere", "gptj", "gpt_neo", "gpt_bigcode", "gpt_bigcode_mha"]


@pytest.mark.parametrize("case", DECODERS)
def test_decoder_logits(case, isa, built):
    path, ref, _ = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert_logits_close(model.logits(PROMPT), ref)


@pytest.mark.parametrize("case", DECODERS)
def test_decoder_greedy(case, isa, built):
    path, _, ref_tokens = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert ef_greedy(model, PROMPT, N_GREEDY) == ref_tokens


def test_length_dependent_rope_prefilled_in_pieces(built, monkeypatch):
    """longrope chooses its factors by the length of the call: a prompt prefilled in pieces of 8 gives the
    logits and the greedy tokens of one call (transformers'), not the short factors' of its first pieces."""
    from edgeformer import model as model_mod

    path, ref, ref_tokens = built("phi3_longrope")
    model = edgeformer.load(path, threads=2, max_context=64)
    assert model.spec.rope.scaling == edgeformer._core.RopeScaling.longrope and model._keys_depend_on_length
    monkeypatch.setattr(model_mod, "PREFILL_CHUNK", 8)
    assert_logits_close(model.logits(PROMPT), ref)
    assert ef_greedy(model, PROMPT, N_GREEDY) == ref_tokens
    monkeypatch.setattr(model_mod, "_prefill_chunks", lambda core, ids, rope_length=0: [
        core.prefill(np.asarray(ids[i:i + 8], np.int32)) for i in range(0, len(ids), 8)])
    assert ef_greedy(model, PROMPT, N_GREEDY) != ref_tokens


# -- BERT --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    import transformers as tf

    d = tmp_path_factory.mktemp("bert")
    cfg = tf.BertConfig(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, type_vocab_size=2)
    ref = make_model(str(d), tf.BertModel, cfg)
    return str(d), ref


def test_bert_hidden_states_of_a_padded_batch(isa, bert):
    import torch

    path, ref = bert
    rng = np.random.default_rng(5)
    lengths = [20, 7, 13]
    T = max(lengths)
    ids = np.zeros((3, T), np.int64)
    mask = np.zeros((3, T), np.int64)
    types = np.zeros((3, T), np.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(2, 300, n)
        mask[b, :n] = 1
        types[b, n // 2 : n] = 1
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 token_type_ids=torch.tensor(types)).last_hidden_state.numpy()
    model = edgeformer.load(path, threads=2)
    ours = model.hidden_states(ids, attention_mask=mask, token_type_ids=types)
    assert ours.shape == hf.shape
    for b, n in enumerate(lengths):
        assert_logits_close(ours[b, :n], hf[b, :n])
    # a single unpadded sequence gives the same states as its row of the batch
    assert_logits_close(model.hidden_states(ids[1, :7], token_type_ids=types[1, :7]), ours[1, :7])
    with pytest.raises(ValueError, match="encoder"):
        model.generate([1, 2, 3])


# -- T5 ----------------------------------------------------------------------------------------------------

def untie_t5_head(ref, path: str) -> None:
    """transformers 5 always ties T5's head to the embeddings; v1.1 checkpoints store their own lm_head.
    Give the reference its own random head and write it into the checkpoint, with an untied config."""
    import json
    import os

    import torch
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(11)
    ref.lm_head = torch.nn.Linear(ref.config.d_model, ref.config.vocab_size, bias=False)
    with torch.no_grad():
        ref.lm_head.weight.copy_(0.08 * torch.randn(ref.lm_head.weight.shape, generator=g))
    st = os.path.join(path, "model.safetensors")
    tensors = load_file(st)
    tensors["lm_head.weight"] = ref.lm_head.weight.detach().clone().contiguous()
    save_file(tensors, st, metadata={"format": "pt"})
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["tie_word_embeddings"] = False
    cfg["scale_decoder_outputs"] = False
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)


T5_CASES = {
    "t5_v1_0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "t5_v1_1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            import transformers as tf

            d = tmp_path_factory.mktemp(name)
            cfg = tf.T5Config(vocab_size=320, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=3,
                              num_heads=4, relative_attention_num_buckets=16, relative_attention_max_distance=20,
                              decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **T5_CASES[name])
            ref = make_model(str(d), tf.T5ForConditionalGeneration, cfg)
            if not T5_CASES[name]["tie_word_embeddings"]:
                untie_t5_head(ref, str(d))
            cache[name] = (str(d), ref)
        return cache[name]

    return get


@pytest.mark.parametrize("case", list(T5_CASES))
def test_t5_decoder_logits(case, isa, t5):
    import torch

    path, ref = t5(case)
    src = prompt_ids(30, seed=3)[1:]
    dec = [0] + prompt_ids(12, seed=4)[1:]
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([dec])).logits[0].numpy()
        hf_enc = ref.encoder(input_ids=torch.tensor([src])).last_hidden_state[0].numpy()
    model = edgeformer.load(path, threads=2)
    tied = T5_CASES[case]["tie_word_embeddings"]
    assert model.spec.tie_embeddings == tied and (model.spec.logits_scale == 1.0) == (not tied)
    assert_logits_close(model.logits(src, decoder_input_ids=dec), hf)
    assert_logits_close(model.hidden_states(src), hf_enc)


def _hf_t5_generate(ref, src, **kw):
    import torch

    x = torch.tensor([src])
    with torch.no_grad():  # use_cache=False: transformers' cache breaks when num_decoder_layers != num_layers
        out = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, use_cache=False, **kw)[0].tolist()
    out = out[1:]  # the decoder start token
    return out[: out.index(1)] if 1 in out else out  # up to EOS (1), without it


@pytest.mark.parametrize("case", list(T5_CASES))
def test_t5_greedy_and_beam_search(case, isa, t5):
    path, ref = t5(case)
    model = edgeformer.load(path, threads=2)
    for seed in (3, 6, 9):
        src = prompt_ids(20, seed=seed)[1:]
        greedy = _hf_t5_generate(ref, src, do_sample=False, num_beams=1)
        assert model.generate(src, max_new_tokens=12, temperature=0).token_ids == greedy
        for beams, lp in ((3, 1.0), (4, 0.6)):
            hf = _hf_t5_generate(ref, src, do_sample=False, num_beams=beams, length_penalty=lp)
            ours = model.generate(src, max_new_tokens=12, num_beams=beams, length_penalty=lp)
            assert ours.token_ids == hf, (seed, beams, lp)


def test_t5_prompt_lookup_and_grammar(t5, monkeypatch):
    """The decoder of an encoder-decoder checks proposed tokens as a decoder-only model does (the same tokens as
    plain steps), and takes a grammar."""
    import re

    path, _ = t5("t5_v1_1")
    model = edgeformer.load(path, threads=2)
    checks = []
    check = model._check_ahead
    monkeypatch.setattr(model, "_check_ahead", lambda *a: checks.append(a[1]) or check(*a))
    for seed in (3, 6, 9):
        src = prompt_ids(20, seed=seed)[1:]
        plain = model.generate(src, max_new_tokens=24, temperature=0, ignore_eos=True)
        assert model.generate(src, max_new_tokens=24, temperature=0, ignore_eos=True,
                              prompt_lookup=4).token_ids == plain.token_ids, seed
    assert checks  # (proposals were checked: the random model's greedy output repeats itself)
    r = model.generate(src, grammar='root ::= [a-z]{2,8} " " [0-9]+ "."', max_new_tokens=20, temperature=0.9, seed=1)
    assert re.fullmatch(r"[a-z]{2,8} [0-9]+\." if r.finish_reason == "stop" else r"[a-z]{0,8}( [0-9]*)?", r.text), r.text


# -- bad configs name their field ----------------------------------------------------------------------------

BAD_CONFIGS = [
    ({"model_type": "gpt2", "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 2,
      "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"model_type": "gpt2", "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 3}, "n_head"),
    ({"model_type": "opt", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
      "ffn_dim": "big"}, "ffn_dim"),
    ({"model_type": "bloom", "vocab_size": 10, "hidden_size": 8, "n_layer": 1, "n_head": 2,
      "apply_residual_connection_post_layernorm": True}, "apply_residual_connection_post_layernorm"),
    ({"model_type": "falcon", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4,
      "new_decoder_architecture": True, "num_kv_heads": 3}, "num_kv_heads"),
    ({"model_type": "mpt", "vocab_size": 10, "d_model": 8, "n_layers": 1, "n_heads": 2,
      "attn_config": {"qk_ln": True}}, "attn_config.qk_ln"),
    ({"model_type": "mpt", "vocab_size": 10, "d_model": 8, "n_layers": 1, "n_heads": 2, "no_bias": False}, "no_bias"),
    ({"model_type": "mpt", "vocab_size": 10, "d_model": 8, "n_layers": 1, "n_heads": 2,
      "attn_config": {"clip_qkv": -1}}, "attn_config.clip_qkv"),
    ({"model_type": "mpt", "vocab_size": 10, "d_model": 8, "n_layers": 1, "n_heads": 2,
      "attn_config": {"alibi_bias_max": 4}}, "attn_config.alibi_bias_max"),
    ({"model_type": "codegen", "vocab_size": 10, "n_embd": 12, "n_layer": 1, "n_head": 6}, "n_head"),
    ({"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
      "intermediate_size": 16, "position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"model_type": "t5", "vocab_size": 10, "d_model": 8, "d_kv": 4, "d_ff": 16, "num_layers": 1, "num_heads": 2,
      "feed_forward_proj": "gated-swoosh"}, "feed_forward_proj"),
    ({"model_type": "t5", "vocab_size": 10, "d_model": 8, "d_ff": 16, "num_layers": 1, "num_heads": 2}, "d_kv"),
    ({"model_type": "gpt_oss", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 2,
      "num_attention_heads": 2, "num_local_experts": 2, "layer_types": [[1], [2]]}, "layer_types"),
    ({"model_type": "smollm3", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 2,
      "num_attention_heads": 2, "no_rope_layers": [1, True]}, "no_rope_layers"),
    ({"model_type": "exaone4", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 2,
      "num_attention_heads": 2, "sliding_window": 4, "sliding_window_pattern": "LG"}, "sliding_window_pattern"),
    ({"model_type": "hunyuan_v1_dense", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
      "num_hidden_layers": 1, "num_attention_heads": 2, "rope_scaling": {"type": "dynamic", "alpha": -2.0}},
     "rope_scaling.alpha"),
]


@pytest.mark.parametrize("config,field", BAD_CONFIGS, ids=[f"{c['model_type']}-{f}" for c, f in BAD_CONFIGS])
def test_bad_config_fields_name_themselves(tmp_path, config, field):
    import json

    from edgeformer.io import save_safetensors

    (tmp_path / "config.json").write_text(json.dumps(config))
    save_safetensors({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"config\.json.*'{field}'"):
        edgeformer.load(str(tmp_path))


def test_gemma3_multimodal_checkpoint_loads_its_language_model(built, tmp_path):
    """A gemma3 checkpoint (Gemma 3 4B and up: image and text) keeps the language model's config in
    text_config and its weights under model.language_model. (transformers 5) or language_model.model.
    (transformers 4): the text model's logits either way; other towers' tensors are ignored."""
    import json
    import os

    from safetensors.numpy import load_file, save_file

    path, ref, _ = built("gemma3")
    with open(os.path.join(path, "config.json")) as f:
        text = json.load(f)
    tensors = load_file(os.path.join(path, "model.safetensors"))
    for prefix in ("model.language_model.", "language_model.model."):
        d = tmp_path / prefix.strip(".").replace(".", "_")
        d.mkdir()
        renamed = {prefix + k[len("model."):]: v for k, v in tensors.items()}
        renamed["model.vision_tower.patch.weight"] = np.zeros((4, 4), np.float32)
        save_file(renamed, str(d / "model.safetensors"))
        cfg = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
               "text_config": {k: v for k, v in text.items() if k != "architectures"}, "vision_config": {}}
        with open(d / "config.json", "w") as f:
            json.dump(cfg, f)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(path, name), "rb") as src, open(d / name, "wb") as dst:
                dst.write(src.read())
        model = edgeformer.load(str(d), threads=2, max_context=64)
        assert model.spec.model_type == "gemma3_text"
        assert_logits_close(model.logits(PROMPT), ref)


def test_gpt_neox_config_of_older_transformers(built, tmp_path):
    """Pythia's config.json (written before transformers 4.42) names the rotary share rotary_pct and its base
    rotary_emb_base: read as partial_rotary_factor and rope_theta, the logits are transformers'."""
    import json
    import shutil

    path, ref, _ = built("gpt_neox")
    for f in ("model.safetensors", "tokenizer.json"):
        shutil.copy(f"{path}/{f}", tmp_path / f)
    cfg = json.load(open(f"{path}/config.json"))
    params = cfg.pop("rope_parameters")
    cfg.update(rotary_pct=params["partial_rotary_factor"], rotary_emb_base=params["rope_theta"])
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = edgeformer.load(str(tmp_path), threads=2, max_context=64)
    assert model.spec.rope.rotary_dim == 4  # a quarter of 16
    assert_logits_close(model.logits(PROMPT), ref)
