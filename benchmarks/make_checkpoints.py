#!/usr/bin/env python3
"""Random-weight Llama checkpoints at realistic sizes for the engine benchmark (speed does not depend on the
values), in every engine's format:

    OUT/<size>/hf/            HF layout, f16 safetensors (sharded), a 32000-token byte-level BPE tokenizer
    OUT/<size>/ef-<t>.gguf    GGUF written by edgeformer (`edgeformer.quantize`), t in f16 q8_0 int8 q4_0 q4_k
    OUT/<size>/lc-<t>.gguf    GGUF quantized by llama.cpp's own quantizer (llama-cpp-python), t in q8_0 q4_0 q4_k_m
    OUT/<size>/ct2-<t>/       CTranslate2's converter, t in int8 float32

    python benchmarks/make_checkpoints.py /data/bench --sizes 110m,1.1b,7b,moe-1.7b,mla-2.3b,qwen35-0.8b,lfm2-1.2b,
        mamba-1.4b,nemotron-h-4b,gemma4-e2b
        [--llama-cpp DIR]

The 7B shape is made in 4-bit only (q4_0 from both writers); its f16 HF copy is deleted afterwards unless
--keep-hf. --llama-cpp: a folder holding an installed `llama_cpp` package (pip install --target) when it is
not importable from the environment.
"""

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

SIZES = {  # hidden, layers, heads, kv_heads, ffn, vocab
    "110m": (768, 12, 12, 12, 2048, 32000),
    "1.1b": (2048, 22, 32, 4, 5632, 32000),
    "7b": (4096, 32, 32, 32, 11008, 32000),
}
FOUR_BIT_ONLY = {"7b"}
# mixtures of experts (Qwen3-MoE layout): hidden, layers, heads, kv_heads, expert ffn, vocab, experts, used per token.
# "moe-1.7b": 1.7B parameters of which 0.3B are read per token, Qwen3-30B-A3B's ratio (8 of 64 experts here, 8 of
# 128 there) at a size this machine converts in minutes
MOE_SIZES = {"moe-1.7b": (1024, 16, 16, 4, 512, 32000, 64, 8)}
# DeepSeek-V3's layout (latent attention, a sigmoid router with a selection bias, a shared expert, a leading dense
# layer) at DeepSeek-V2-Lite's widths (hidden 2048, 16 heads, latent 512 + 64, 1408-wide experts, 6 used, 2 shared)
# with fewer layers and experts: 2.3B parameters, 0.5B read per token
MLA_SIZES = {"mla-2.3b": dict(hidden=2048, layers=8, heads=16, ffn=10944, vocab=32000, q_lora=768, kv_lora=512,
                              nope=128, rope=64, v=128, experts=32, used=6, moe_ffn=1408, shared=2)}

# Qwen3.5-0.8B's layers (three Gated DeltaNet layers to each gated attention layer; 16 key and value heads of 128 in
# the former, 8 query and 2 kv heads of 256 in the latter), with the other sizes' 32000-token vocabulary
HYBRID_SIZES = {"qwen35-0.8b": dict(hidden=1024, layers=24, heads=8, kv=2, head_dim=256, ffn=3584, vocab=32000,
                                    k_heads=16, v_heads=16, k_dim=128, v_dim=128, conv=4),
                # LFM2-1.2B's layers (10 gated short convolutions, 6 attention layers at its positions; MLP 8192)
                "lfm2-1.2b": dict(hidden=2048, layers=16, heads=32, kv=8, ffn=8192, vocab=32000, conv=3,
                                  attention=(2, 5, 8, 10, 12, 14)),
                # Mamba-1.4B's layers (48 Mamba mixers: 4096 channels of 16 states, time-step rank 128)
                "mamba-1.4b": dict(hidden=2048, layers=48, state=16, conv=4, rank=128, vocab=32000),
                # Nemotron-H-4B's layers (52: 24 Mamba2 mixers of 112 heads of 64 with 8 groups of 128 states, 4
                # attention layers of 32 heads of 128 (8 kv heads), 24 squared-ReLU MLPs of 12288)
                "nemotron-h-4b": dict(hidden=3072, pattern="M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
                                      heads=32, kv=8, head_dim=128, ffn=12288, ssm_heads=112, ssm_head_dim=64,
                                      groups=8, state=128, conv=4, vocab=32000),
                # Gemma 4 E2B's layers (35: four sliding layers of 8 heads of 256 (one kv head) to one full layer of
                # heads of 512, the last 20 sharing the keys and values of layers 13 and 14 with MLPs of 12288, the
                # others of 6144; per-layer inputs of 256), with the other sizes' 32000-token vocabulary
                "gemma4-e2b": dict(hidden=1536, layers=35, heads=8, kv=1, head_dim=256, global_head_dim=512,
                                   ffn=6144, shared=20, ple=256, window=512, vocab=32000),
                # BitNet b1.58 2B4T's shape (30 layers, 20 heads of 128 with 5 kv heads, MLP 6912, its 128256-token
                # vocabulary, a tied bf16 embedding) with random ternary projections packed as its checkpoint packs them
                "bitnet-2b": dict(hidden=2560, layers=30, heads=20, kv=5, ffn=6912, vocab=128256)}


def make_tokenizer(out, vocab_size, seed=0):
    """A byte-level BPE tokenizer with exactly vocab_size tokens: 256 bytes, 2 specials, random merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<s>": 0, "</s>": 1}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    rng = np.random.default_rng(seed)
    toks = list(alphabet)
    merges = []
    while len(vocab) < vocab_size:
        a, b = toks[rng.integers(0, len(toks))], toks[rng.integers(0, min(len(toks), 2000))]
        if len(a) + len(b) > 12 or a + b in vocab:
            continue
        vocab[a + b] = len(vocab)
        toks.append(a + b)
        merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "tokenizer_class": "PreTrainedTokenizerFast"}, f)


def _begin(out, cfg, seed):
    """The checkpoint folder: make_tokenizer's vocabulary and cfg as config.json. Returns (w, rng): w(*shape, std)
    makes random f16 weights (uniform with that standard deviation: faster than normal, the same speed)."""
    os.makedirs(out, exist_ok=True)
    make_tokenizer(out, cfg["vocab_size"])
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    rng = np.random.default_rng(seed)

    def w(*s, std=0.02):
        return ((rng.random(s, dtype=np.float32) - 0.5) * (std * 3.4641)).astype(np.float16)

    return w, rng


def make_hf(out, shape, seed=0, shard_bytes=2 << 30):
    hidden, layers, heads, kv, ffn, vocab = shape[:6]
    experts, used = shape[6:] if len(shape) > 6 else (0, 0)
    hd = hidden // heads
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab, "hidden_size": hidden,
           "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
           "torch_dtype": "float16"}
    if experts:
        cfg.update(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"], head_dim=hd, num_experts=experts,
                   num_experts_per_tok=used, moe_intermediate_size=ffn, norm_topk_prob=True)
    w, rng = _begin(out, cfg, seed)

    def tensors():
        yield "model.embed_tokens.weight", w(vocab, hidden, std=0.5)
        for i in range(layers):
            p = f"model.layers.{i}."
            yield p + "input_layernorm.weight", np.ones(hidden, np.float16)
            yield p + "post_attention_layernorm.weight", np.ones(hidden, np.float16)
            yield p + "self_attn.q_proj.weight", w(heads * hd, hidden)
            yield p + "self_attn.k_proj.weight", w(kv * hd, hidden)
            yield p + "self_attn.v_proj.weight", w(kv * hd, hidden)
            yield p + "self_attn.o_proj.weight", w(hidden, heads * hd)
            if not experts:
                yield p + "mlp.gate_proj.weight", w(ffn, hidden)
                yield p + "mlp.up_proj.weight", w(ffn, hidden)
                yield p + "mlp.down_proj.weight", w(hidden, ffn)
                continue
            yield p + "self_attn.q_norm.weight", np.ones(hd, np.float16)
            yield p + "self_attn.k_norm.weight", np.ones(hd, np.float16)
            yield p + "mlp.gate.weight", w(experts, hidden, std=0.5)  # (a spread of routes, as trained routers have)
            for e in range(experts):
                yield p + f"mlp.experts.{e}.gate_proj.weight", w(ffn, hidden)
                yield p + f"mlp.experts.{e}.up_proj.weight", w(ffn, hidden)
                yield p + f"mlp.experts.{e}.down_proj.weight", w(hidden, ffn)
        yield "model.norm.weight", np.ones(hidden, np.float16)
        yield "lm_head.weight", w(vocab, hidden)

    _write_shards(out, tensors(), shard_bytes)


def make_hf_mla(out, c, seed=0, shard_bytes=2 << 30):
    """A random DeepSeek-V3 of MLA_SIZES' widths (f16 safetensors, sharded) with make_tokenizer's vocabulary."""
    H, L, nh, V = c["hidden"], c["layers"], c["heads"], c["vocab"]
    dq = c["nope"] + c["rope"]
    cfg = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "vocab_size": V,
           "hidden_size": H, "intermediate_size": c["ffn"], "num_hidden_layers": L, "num_attention_heads": nh,
           "num_key_value_heads": nh, "q_lora_rank": c["q_lora"], "kv_lora_rank": c["kv_lora"],
           "qk_nope_head_dim": c["nope"], "qk_rope_head_dim": c["rope"], "v_head_dim": c["v"],
           "n_routed_experts": c["experts"], "num_experts_per_tok": c["used"], "moe_intermediate_size": c["moe_ffn"],
           "n_shared_experts": c["shared"], "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1,
           "routed_scaling_factor": 2.5, "norm_topk_prob": True, "max_position_embeddings": 4096,
           "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 0,
           "eos_token_id": 1, "torch_dtype": "float16"}
    w, rng = _begin(out, cfg, seed)

    def tensors():
        yield "model.embed_tokens.weight", w(V, H, std=0.5)
        for i in range(L):
            p = f"model.layers.{i}."
            for n in ("input_layernorm", "post_attention_layernorm"):
                yield p + n + ".weight", np.ones(H, np.float16)
            a = p + "self_attn."
            yield a + "q_a_proj.weight", w(c["q_lora"], H)
            yield a + "q_a_layernorm.weight", np.ones(c["q_lora"], np.float16)
            yield a + "q_b_proj.weight", w(nh * dq, c["q_lora"])
            yield a + "kv_a_proj_with_mqa.weight", w(c["kv_lora"] + c["rope"], H)
            yield a + "kv_a_layernorm.weight", np.ones(c["kv_lora"], np.float16)
            yield a + "kv_b_proj.weight", w(nh * (c["nope"] + c["v"]), c["kv_lora"])
            yield a + "o_proj.weight", w(H, nh * c["v"])
            m = p + "mlp."
            if i == 0:
                for n, s in (("gate", (c["ffn"], H)), ("up", (c["ffn"], H)), ("down", (H, c["ffn"]))):
                    yield m + f"{n}_proj.weight", w(*s)
                continue
            # (a sigmoid router: logits of order 1, as trained ones have; larger ones saturate to exact ties at 1.0,
            # which engines break differently)
            yield m + "gate.weight", w(c["experts"], H, std=0.03)
            yield m + "gate.e_score_correction_bias", (rng.standard_normal(c["experts"]) * 0.01).astype(np.float32)
            F = c["moe_ffn"]
            for e in range(c["experts"]):
                for n, s in (("gate", (F, H)), ("up", (F, H)), ("down", (H, F))):
                    yield m + f"experts.{e}.{n}_proj.weight", w(*s)
            for n, s in (("gate", (F * c["shared"], H)), ("up", (F * c["shared"], H)), ("down", (H, F * c["shared"]))):
                yield m + f"shared_experts.{n}_proj.weight", w(*s)
        yield "model.norm.weight", np.ones(H, np.float16)
        yield "lm_head.weight", w(V, H)

    _write_shards(out, tensors(), shard_bytes)


def make_hf_qwen35(out, c, seed=0, shard_bytes=2 << 30):
    """A random Qwen3.5 of HYBRID_SIZES' widths (f16 safetensors, sharded) with make_tokenizer's vocabulary."""
    H, L, V, hd = c["hidden"], c["layers"], c["vocab"], c["head_dim"]
    kd, vd = c["k_heads"] * c["k_dim"], c["v_heads"] * c["v_dim"]
    cfg = {"model_type": "qwen3_5_text", "architectures": ["Qwen3_5ForCausalLM"], "vocab_size": V, "hidden_size": H,
           "intermediate_size": c["ffn"], "num_hidden_layers": L, "num_attention_heads": c["heads"],
           "num_key_value_heads": c["kv"], "head_dim": hd, "linear_num_key_heads": c["k_heads"],
           "linear_num_value_heads": c["v_heads"], "linear_key_head_dim": c["k_dim"],
           "linear_value_head_dim": c["v_dim"], "linear_conv_kernel_dim": c["conv"], "full_attention_interval": 4,
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
           "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
           "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "float16"}
    w, rng = _begin(out, cfg, seed)

    def tensors():  # (norms scale by 1 + weight: zeros)
        yield "model.embed_tokens.weight", w(V, H, std=0.5)
        for i in range(L):
            p = f"model.layers.{i}."
            for n in ("input_layernorm", "post_attention_layernorm"):
                yield p + n + ".weight", np.zeros(H, np.float16)
            if (i + 1) % 4:
                a = p + "linear_attn."
                yield a + "in_proj_qkv.weight", w(2 * kd + vd, H)
                yield a + "in_proj_z.weight", w(vd, H)
                yield a + "in_proj_b.weight", w(c["v_heads"], H)
                yield a + "in_proj_a.weight", w(c["v_heads"], H)
                yield a + "conv1d.weight", w(2 * kd + vd, 1, c["conv"], std=0.3)
                yield a + "dt_bias", np.ones(c["v_heads"], np.float16)
                yield a + "A_log", np.log(rng.uniform(1, 16, c["v_heads"])).astype(np.float16)
                yield a + "norm.weight", np.ones(c["v_dim"], np.float16)
                yield a + "out_proj.weight", w(H, vd)
            else:
                a = p + "self_attn."
                yield a + "q_proj.weight", w(2 * c["heads"] * hd, H)
                yield a + "k_proj.weight", w(c["kv"] * hd, H)
                yield a + "v_proj.weight", w(c["kv"] * hd, H)
                yield a + "o_proj.weight", w(H, c["heads"] * hd)
                yield a + "q_norm.weight", np.zeros(hd, np.float16)
                yield a + "k_norm.weight", np.zeros(hd, np.float16)
            for n, s in (("gate", (c["ffn"], H)), ("up", (c["ffn"], H)), ("down", (H, c["ffn"]))):
                yield p + f"mlp.{n}_proj.weight", w(*s)
        yield "model.norm.weight", np.zeros(H, np.float16)
        yield "lm_head.weight", w(V, H)

    _write_shards(out, tensors(), shard_bytes)


def make_hf_lfm2(out, c, seed=0, shard_bytes=2 << 30):
    """A random LFM2 of HYBRID_SIZES' widths (f16 safetensors, sharded) with make_tokenizer's vocabulary."""
    H, L, V, hd = c["hidden"], c["layers"], c["vocab"], c["hidden"] // c["heads"]
    types = ["full_attention" if i in c["attention"] else "conv" for i in range(L)]
    cfg = {"model_type": "lfm2", "architectures": ["Lfm2ForCausalLM"], "vocab_size": V, "hidden_size": H,
           "intermediate_size": c["ffn"], "block_auto_adjust_ff_dim": False, "num_hidden_layers": L,
           "num_attention_heads": c["heads"], "num_key_value_heads": c["kv"], "layer_types": types,
           "conv_L_cache": c["conv"], "max_position_embeddings": 4096, "norm_eps": 1e-5, "tie_word_embeddings": False,
           "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "bos_token_id": 0, "eos_token_id": 1,
           "torch_dtype": "float16"}
    w, rng = _begin(out, cfg, seed)

    def tensors():
        yield "model.embed_tokens.weight", w(V, H, std=0.5)
        for i, t in enumerate(types):
            p = f"model.layers.{i}."
            for n in ("operator_norm", "ffn_norm"):
                yield p + n + ".weight", np.ones(H, np.float16)
            if t == "conv":
                yield p + "conv.in_proj.weight", w(3 * H, H)
                yield p + "conv.conv.weight", w(H, 1, c["conv"], std=0.3)
                yield p + "conv.out_proj.weight", w(H, H)
            else:
                a = p + "self_attn."
                for n, rows in (("q_proj", H), ("k_proj", c["kv"] * hd), ("v_proj", c["kv"] * hd), ("out_proj", H)):
                    yield a + n + ".weight", w(rows, H)
                for n in ("q_layernorm", "k_layernorm"):
                    yield a + n + ".weight", np.ones(hd, np.float16)
            for n, sh in (("w1", (c["ffn"], H)), ("w3", (c["ffn"], H)), ("w2", (H, c["ffn"]))):
                yield p + f"feed_forward.{n}.weight", w(*sh)
        yield "model.embedding_norm.weight", np.ones(H, np.float16)
        yield "lm_head.weight", w(V, H)

    _write_shards(out, tensors(), shard_bytes)


def make_hf_mamba(out, c, seed=0, shard_bytes=2 << 30):
    """A random Mamba of HYBRID_SIZES' widths (f16 safetensors, sharded) with make_tokenizer's vocabulary."""
    H, L, V, N, R = c["hidden"], c["layers"], c["vocab"], c["state"], c["rank"]
    inner = 2 * H
    cfg = {"model_type": "mamba", "architectures": ["MambaForCausalLM"], "vocab_size": V, "hidden_size": H,
           "num_hidden_layers": L, "state_size": N, "conv_kernel": c["conv"], "expand": 2, "intermediate_size": inner,
           "time_step_rank": R, "layer_norm_epsilon": 1e-5, "tie_word_embeddings": False, "bos_token_id": 0,
           "eos_token_id": 1, "torch_dtype": "float16"}
    w, rng = _begin(out, cfg, seed)

    def tensors():
        yield "backbone.embeddings.weight", w(V, H, std=0.5)
        for i in range(L):
            p = f"backbone.layers.{i}."
            yield p + "norm.weight", np.ones(H, np.float16)
            m = p + "mixer."
            yield m + "in_proj.weight", w(2 * inner, H)
            yield m + "conv1d.weight", w(inner, 1, c["conv"], std=0.3)
            yield m + "conv1d.bias", w(inner)
            yield m + "x_proj.weight", w(R + 2 * N, inner)
            yield m + "dt_proj.weight", w(inner, R, std=0.1)
            yield m + "dt_proj.bias", np.full(inner, -4.0, np.float16)
            yield m + "A_log", np.log(np.tile(np.arange(1, N + 1, dtype=np.float32), (inner, 1))).astype(np.float16)
            yield m + "D", np.ones(inner, np.float16)
            yield m + "out_proj.weight", w(H, inner)
        yield "backbone.norm_f.weight", np.ones(H, np.float16)
        yield "lm_head.weight", w(V, H)

    _write_shards(out, tensors(), shard_bytes)


def make_hf_nemotron_h(out, c, seed=0, shard_bytes=2 << 30):
    """A random Nemotron-H of HYBRID_SIZES' widths (f16 safetensors, sharded) with make_tokenizer's vocabulary."""
    H, V, hd, N, G = c["hidden"], c["vocab"], c["head_dim"], c["state"], c["groups"]
    nh, I = c["ssm_heads"], c["ssm_heads"] * c["ssm_head_dim"]
    CD = I + 2 * G * N
    cfg = {"model_type": "nemotron_h", "architectures": ["NemotronHForCausalLM"], "vocab_size": V, "hidden_size": H,
           "hybrid_override_pattern": c["pattern"], "num_hidden_layers": len(c["pattern"]),
           "num_attention_heads": c["heads"], "num_key_value_heads": c["kv"], "head_dim": hd,
           "intermediate_size": c["ffn"], "mlp_hidden_act": "relu2", "mamba_num_heads": nh,
           "mamba_head_dim": c["ssm_head_dim"], "ssm_state_size": N, "n_groups": G, "conv_kernel": c["conv"],
           "use_conv_bias": True, "layer_norm_epsilon": 1e-5, "max_position_embeddings": 8192,
           "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "float16"}
    w, rng = _begin(out, cfg, seed)

    def tensors():
        yield "backbone.embeddings.weight", w(V, H, std=0.5)
        for i, t in enumerate(c["pattern"]):
            p = f"backbone.layers.{i}."
            m = p + "mixer."
            yield p + "norm.weight", np.ones(H, np.float16)
            if t == "M":
                yield m + "in_proj.weight", w(I + CD + nh, H)
                yield m + "conv1d.weight", w(CD, 1, c["conv"], std=0.3)
                yield m + "conv1d.bias", w(CD)
                yield m + "dt_bias", np.full(nh, -4.0, np.float16)
                yield m + "A_log", np.log(np.arange(1, nh + 1, dtype=np.float32)).astype(np.float16)
                yield m + "D", np.ones(nh, np.float16)
                yield m + "norm.weight", np.ones(I, np.float16)
                yield m + "out_proj.weight", w(H, I)
            elif t == "*":
                for n, rows in (("q_proj", c["heads"] * hd), ("k_proj", c["kv"] * hd), ("v_proj", c["kv"] * hd)):
                    yield m + n + ".weight", w(rows, H)
                yield m + "o_proj.weight", w(H, c["heads"] * hd)
            else:
                yield m + "up_proj.weight", w(c["ffn"], H)
                yield m + "down_proj.weight", w(H, c["ffn"])
        yield "backbone.norm_f.weight", np.ones(H, np.float16)
        yield "lm_head.weight", w(V, H)

    _write_shards(out, tensors(), shard_bytes)


def make_hf_gemma4(out, c, seed=0, shard_bytes=2 << 30):
    """A random Gemma 4 of HYBRID_SIZES' widths (f16 safetensors, sharded) with make_tokenizer's vocabulary."""
    H, V, n, P = c["hidden"], c["vocab"], c["layers"], c["ple"]
    types = ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(n)]
    cfg = {"model_type": "gemma4_text", "architectures": ["Gemma4ForCausalLM"], "vocab_size": V, "hidden_size": H,
           "num_hidden_layers": n, "num_attention_heads": c["heads"], "num_key_value_heads": c["kv"],
           "head_dim": c["head_dim"], "global_head_dim": c["global_head_dim"], "intermediate_size": c["ffn"],
           "use_double_wide_mlp": True, "num_kv_shared_layers": c["shared"], "hidden_size_per_layer_input": P,
           "vocab_size_per_layer_input": V, "sliding_window": c["window"], "layer_types": types,
           "max_position_embeddings": 131072, "final_logit_softcapping": 30.0, "tie_word_embeddings": True,
           "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "float16"}
    w, rng = _begin(out, cfg, seed)
    first = n - c["shared"]

    def tensors():
        yield "model.embed_tokens.weight", w(V, H, std=0.5)
        yield "model.embed_tokens_per_layer.weight", w(V, n * P, std=0.5)
        yield "model.per_layer_model_projection.weight", w(n * P, H)
        yield "model.per_layer_projection_norm.weight", np.ones(P, np.float16)
        for i, t in enumerate(types):
            p = f"model.layers.{i}."
            hd = c["global_head_dim"] if t == "full_attention" else c["head_dim"]
            f = c["ffn"] * (2 if i >= first else 1)
            for nm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                       "post_feedforward_layernorm", "post_per_layer_input_norm"):
                yield p + nm + ".weight", np.ones(H, np.float16)
            yield p + "layer_scalar", np.ones(1, np.float16)
            yield p + "self_attn.q_proj.weight", w(c["heads"] * hd, H)
            yield p + "self_attn.q_norm.weight", np.ones(hd, np.float16)
            if i < first:
                yield p + "self_attn.k_proj.weight", w(c["kv"] * hd, H)
                yield p + "self_attn.v_proj.weight", w(c["kv"] * hd, H)
                yield p + "self_attn.k_norm.weight", np.ones(hd, np.float16)
            yield p + "self_attn.o_proj.weight", w(H, c["heads"] * hd)
            yield p + "mlp.gate_proj.weight", w(f, H)
            yield p + "mlp.up_proj.weight", w(f, H)
            yield p + "mlp.down_proj.weight", w(H, f)
            yield p + "per_layer_input_gate.weight", w(P, H)
            yield p + "per_layer_projection.weight", w(H, P)
        yield "model.norm.weight", np.ones(H, np.float16)

    _write_shards(out, tensors(), shard_bytes)


def make_hf_bitnet(out, c, seed=0, shard_bytes=2 << 30):
    """A random BitNet b1.58 of HYBRID_SIZES' widths: transformers' packed form (linear_class bitlinear, offline),
    ternary values uniform over -1, 0, 1, f16 embeddings, norms and scales."""
    from edgeformer.bitnet import pack_ternary

    H, V, n, F = c["hidden"], c["vocab"], c["layers"], c["ffn"]
    hd = H // c["heads"]
    cfg = {"model_type": "bitnet", "architectures": ["BitNetForCausalLM"], "vocab_size": V, "hidden_size": H,
           "intermediate_size": F, "num_hidden_layers": n, "num_attention_heads": c["heads"],
           "num_key_value_heads": c["kv"], "hidden_act": "relu2", "max_position_embeddings": 4096,
           "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True, "bos_token_id": 0,
           "eos_token_id": 1, "torch_dtype": "float16",
           "quantization_config": {"quant_method": "bitnet", "linear_class": "bitlinear",
                                   "quantization_mode": "offline"}}
    w, rng = _begin(out, cfg, seed)

    def ternary(rows, cols):
        return pack_ternary(rng.integers(-1, 2, size=(rows, cols), dtype=np.int8))

    def tensors():
        yield "model.embed_tokens.weight", w(V, H, std=0.5)
        for i in range(n):
            p = f"model.layers.{i}."
            for nm in ("input_layernorm", "post_attention_layernorm", "self_attn.attn_sub_norm"):
                yield p + nm + ".weight", np.ones(H, np.float16)
            yield p + "mlp.ffn_sub_norm.weight", np.ones(F, np.float16)
            for nm, rows, cols in (("self_attn.q_proj", H, H), ("self_attn.k_proj", c["kv"] * hd, H),
                                   ("self_attn.v_proj", c["kv"] * hd, H), ("self_attn.o_proj", H, H),
                                   ("mlp.gate_proj", F, H), ("mlp.up_proj", F, H), ("mlp.down_proj", H, F)):
                yield p + nm + ".weight", ternary(rows, cols)
                yield p + nm + ".weight_scale", np.asarray([np.sqrt(cols) / 2], np.float16)
        yield "model.norm.weight", np.ones(H, np.float16)

    _write_shards(out, tensors(), shard_bytes)


def _write_shards(out, tensors, shard_bytes):
    from edgeformer.io import save_safetensors

    shards, cur, size = [], {}, 0
    for name, t in tensors:
        cur[name] = t
        size += t.nbytes
        if size >= shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
    if cur:
        shards.append(cur)
    weight_map, total = {}, 0
    for i, s in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_safetensors(s, os.path.join(out, fn), metadata={"format": "pt"})
        for k, v in s.items():
            weight_map[k] = fn
            total += v.nbytes
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)


# llama.cpp's llama_ftype: the mixes its users download (Q4_K_M: q4_k with q6_k for some matrices and the head;
# Q5_K_M: q5_k and q6_k; Q3_K_M: q3_k, q4_k, q5_k; Q2_K: q2_k, q3_k, q4_k)
LLAMA_FTYPES = {"q8_0": 7, "q4_0": 2, "q4_k_m": 15, "q5_k_m": 17, "q3_k_m": 12, "q2_k": 10, "iq4_xs": 30, "f16": 1,
                "tq1_0": 36}


def llama_quantize(src, dst, ftype, threads, requantize=False):
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = LLAMA_FTYPES[ftype]
    p.nthread = threads
    p.allow_requantize = requantize
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p)
    if rc != 0:
        raise RuntimeError(f"llama.cpp quantize {src} -> {dst} failed ({rc})")


def step(msg, path, fn):
    if os.path.exists(path):
        print(f"  {msg}: exists ({path})")
        return
    t0 = time.time()
    fn()
    print(f"  {msg}: {time.time() - t0:.0f} s -> {path}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--sizes", default="110m,1.1b")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--llama-cpp", default=None, help="folder with an installed llama_cpp package")
    ap.add_argument("--keep-hf", action="store_true")
    a = ap.parse_args()
    if a.llama_cpp:
        sys.path.insert(0, a.llama_cpp)
    import edgeformer

    shapes = {**SIZES, **MOE_SIZES, **MLA_SIZES, **HYBRID_SIZES}
    for size in a.sizes.split(","):
        if size not in shapes:
            ap.error(f"--sizes: unknown size {size!r} (known: {', '.join(shapes)})")
        root = os.path.join(a.out, size)
        hf = os.path.join(root, "hf")
        four_bit = size in FOUR_BIT_ONLY
        print(f"{size}: {shapes[size]}")
        done = four_bit and all(os.path.exists(os.path.join(root, f)) for f in ("ef-q4_0.gguf", "lc-q4_0.gguf"))
        if not done:
            make = (make_hf_mla if size in MLA_SIZES else make_hf_lfm2 if size.startswith("lfm2")
                    else make_hf_mamba if size.startswith("mamba")
                    else make_hf_nemotron_h if size.startswith("nemotron")
                    else make_hf_gemma4 if size.startswith("gemma4")
                    else make_hf_bitnet if size.startswith("bitnet")
                    else make_hf_qwen35 if size in HYBRID_SIZES else make_hf)
            step("hf f16", os.path.join(hf, "config.json"), lambda: make(hf, shapes[size]))
        types = ("q4_0",) if four_bit else ("f16", "q8_0", "int8", "q4_0", "q4_k")
        if size in MOE_SIZES or size in MLA_SIZES or size in HYBRID_SIZES:
            types = ("f16", "q8_0", "q4_0")
        if size.startswith("bitnet"):  # (ternary projections as TQ2_0 with their scales, embeddings q8_0)
            dst = os.path.join(root, "ef-tq2_0.gguf")
            step("edgeformer tq2_0", dst, lambda: edgeformer.quantize(hf, dst, type="q8_0", threads=a.threads))
            try:
                import llama_cpp  # noqa: F401
            except ImportError:
                continue
            tq1 = os.path.join(root, "lc-tq1_0.gguf")  # (llama.cpp's 1.69-bit ternary type, from our TQ2_0 file)
            step("llama.cpp tq1_0", tq1, lambda: llama_quantize(dst, tq1, "tq1_0", a.threads, requantize=True))
            continue
        for t in types:
            dst = os.path.join(root, f"ef-{t}.gguf")
            step(f"edgeformer {t}", dst, lambda: edgeformer.quantize(hf, dst, type=t, threads=a.threads))
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            print("  llama_cpp not importable: skipping llama.cpp's quantizer")
        else:
            src = os.path.join(root, "ef-f16.gguf")
            if four_bit:  # no f16 GGUF kept for 7B: quantize from an f16 file made for the purpose, then drop it
                src = os.path.join(root, "tmp-f16.gguf")
                if not os.path.exists(os.path.join(root, "lc-q4_0.gguf")):
                    step("edgeformer f16 (temporary)", src, lambda: edgeformer.quantize(hf, src, type="f16"))
            lc_types = ("q8_0", "q4_0", "q4_k_m", "q5_k_m", "q3_k_m", "q2_k", "iq4_xs")
            moe = size in MOE_SIZES or size in MLA_SIZES or size in HYBRID_SIZES
            for t in (("q4_0",) if four_bit else ("q8_0", "q4_0", "q4_k_m") if moe else lc_types):
                dst = os.path.join(root, f"lc-{t}.gguf")
                step(f"llama.cpp {t}", dst, lambda: llama_quantize(src, dst, t, a.threads))
            if four_bit and os.path.exists(src):
                os.remove(src)
        if not four_bit and size in SIZES:  # (CTranslate2: no MoE or hybrid converters)
            try:
                import ctranslate2
            except ImportError:
                print("  ctranslate2 not importable: skipping its converter")
            else:
                for t in ("int8", "float32"):
                    dst = os.path.join(root, f"ct2-{t}")
                    step(f"ctranslate2 {t}", os.path.join(dst, "model.bin"),
                         lambda: ctranslate2.converters.TransformersConverter(hf, low_cpu_mem_usage=True).convert(
                             dst, quantization=t, force=True))
        if four_bit and not a.keep_hf:
            shutil.rmtree(hf, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
