#!/usr/bin/env python3
"""Writes a small random-weight Llama checkpoint (config.json, model.safetensors, tokenizer.json) with
NumPy and `tokenizers` only, so a fresh machine can run `edgeformer run` without downloading anything.
Its weights are random: the text it generates is not meaningful.

    python tools/make_tiny_llama.py OUT_DIR [--hidden 256 --layers 4 --heads 8 --kv-heads 2 --vocab 512]
"""

import argparse
import json
import os

import numpy as np

from edgeformer.io import save_safetensors

TEXT = (
    "Edge devices run language models when the runtime is small and fast. A laptop, a phone, a board: "
    "each has a CPU with vector units, and the weights stream from memory once per token. "
) * 8


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=688)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--max-position", type=int, default=2048)
    p.add_argument("--dtype", default="float16", choices=["float32", "float16"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=a.vocab, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.save(os.path.join(a.out, "tokenizer.json"))
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>"}, f)

    hd = a.hidden // a.heads
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": a.vocab,
           "hidden_size": a.hidden, "intermediate_size": a.ffn, "num_hidden_layers": a.layers,
           "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "max_position_embeddings": a.max_position,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
           "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": a.dtype}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    rng = np.random.default_rng(a.seed)
    dt = np.dtype(a.dtype)

    def w(*shape, std=0.05):
        return (rng.standard_normal(shape) * std).astype(dt)

    t = {"model.embed_tokens.weight": w(a.vocab, a.hidden, std=0.5), "model.norm.weight": np.ones(a.hidden, dt),
         "lm_head.weight": w(a.vocab, a.hidden)}
    for i in range(a.layers):
        p_ = f"model.layers.{i}."
        t[p_ + "input_layernorm.weight"] = np.ones(a.hidden, dt)
        t[p_ + "post_attention_layernorm.weight"] = np.ones(a.hidden, dt)
        t[p_ + "self_attn.q_proj.weight"] = w(a.heads * hd, a.hidden)
        t[p_ + "self_attn.k_proj.weight"] = w(a.kv_heads * hd, a.hidden)
        t[p_ + "self_attn.v_proj.weight"] = w(a.kv_heads * hd, a.hidden)
        t[p_ + "self_attn.o_proj.weight"] = w(a.hidden, a.heads * hd)
        t[p_ + "mlp.gate_proj.weight"] = w(a.ffn, a.hidden)
        t[p_ + "mlp.up_proj.weight"] = w(a.ffn, a.hidden)
        t[p_ + "mlp.down_proj.weight"] = w(a.hidden, a.ffn)
    save_safetensors(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote a random {sum(v.size for v in t.values()) / 1e6:.1f}M-parameter llama checkpoint to {a.out}")


if __name__ == "__main__":
    main()
