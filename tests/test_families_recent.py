"""The Llama line's recent families against transformers on tiny random checkpoints, under every ISA: ERNIE 4.5,
EXAONE 4, GLM-4 (glm, glm4), InternLM3, HunYuan, and the per-head q/k LayerNorms of StableLM 2 12B and Command R+.
Logits within 1e-4 + 2e-3 * max|logit|, greedy tokens identical."""

from __future__ import annotations

import json

import pytest

import edgeformer

from conftest import assert_logits_close, ef_greedy, gguf_roundtrip, prompt_ids, reference_cache

PROMPT = prompt_ids(32)
N_GREEDY = 16


def _cases():
    import transformers as tf

    base = dict(vocab_size=320, bos_token_id=0, eos_token_id=None, pad_token_id=None, hidden_size=64,
                intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return {
        # interleaved rotary, biases on every projection, tied head
        "ernie4_5": (tf.Ernie4_5ForCausalLM, tf.Ernie4_5Config(num_hidden_layers=2, head_dim=16, use_bias=True,
                                                               **base)),
        "ernie4_5_plain": (tf.Ernie4_5ForCausalLM, tf.Ernie4_5Config(num_hidden_layers=2, head_dim=16, **base)),
        # post-norms only, per-head q/k norms, 3 sliding layers (window 6) to 1 global without rotary
        "exaone4": (tf.Exaone4ForCausalLM, tf.Exaone4Config(num_hidden_layers=4, sliding_window=6,
                                                            sliding_window_pattern=4, **base)),
        # no window: every layer global, and rotated
        "exaone4_global": (tf.Exaone4ForCausalLM, tf.Exaone4Config(num_hidden_layers=2, sliding_window=None,
                                                                   layer_types=["full_attention"] * 2, **base)),
        # interleaved rotary on half of each head, q/k/v biases, fused gate_up
        "glm": (tf.GlmForCausalLM, tf.GlmConfig(num_hidden_layers=2, head_dim=16, **base)),
        # + sandwich norms
        "glm4": (tf.Glm4ForCausalLM, tf.Glm4Config(num_hidden_layers=2, head_dim=16, **base)),
        # transformers runs it as a Llama; biases everywhere
        "internlm3": (tf.LlamaForCausalLM, tf.InternLM3Config(num_hidden_layers=2, head_dim=16, attention_bias=True,
                                                              mlp_bias=True, **base)),
        # q/k norms after rotary, NTK-alpha rope
        "hunyuan": (tf.HunYuanDenseV1ForCausalLM, tf.HunYuanDenseV1Config(
            num_hidden_layers=2, head_dim=16, rope_parameters={"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0,
                                                               "rope_theta": 10000.0}, **base)),
        # StableLM 2 12B: a LayerNorm per head of the queries and of the keys (one module each)
        "stablelm_qk": (tf.StableLmForCausalLM, tf.StableLmConfig(num_hidden_layers=2, qk_layernorm=True,
                                                                  use_qkv_bias=True, **base)),
        # Command R+: per-head LayerNorms ([heads, head_dim] weights)
        "cohere_qk": (tf.CohereForCausalLM, tf.CohereConfig(num_hidden_layers=2, use_qk_norm=True, logit_scale=0.5,
                                                            **base)),
    }


CASES = ["ernie4_5", "ernie4_5_plain", "exaone4", "exaone4_global", "glm", "glm4", "internlm3",
           "hunyuan", "stablelm_qk", "cohere_qk"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return reference_cache(tmp_path_factory, _cases, PROMPT, N_GREEDY)


@pytest.mark.parametrize("case", CASES)
def test_recent_logits(case, isa, built):
    path, ref, _ = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert_logits_close(model.logits(PROMPT), ref)


@pytest.mark.parametrize("case", CASES)
def test_recent_greedy(case, isa, built):
    path, _, ref_tokens = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert ef_greedy(model, PROMPT, N_GREEDY) == ref_tokens


# what llama.cpp reads of these architectures the files say (tiny random models: llama.cpp windows EXAONE 4 and reads
# Command R+'s q/k norms in 64-layer models only; its ERNIE 4.5 has no MLP biases; GLM of model_type glm is chatglm)
REFUSED = {"ernie4_5": "use_bias", "exaone4": "sliding_window", "cohere_qk": "use_qk_norm", "glm": "'glm'"}


@pytest.mark.parametrize("case", [c for c in CASES if c not in REFUSED])
def test_recent_gguf_roundtrip(case, built, tmp_path):
    """Each family as llama.cpp's architecture (ernie4_5, exaone4, glm4, hunyuan-dense with the NTK-alpha base
    written out, llama for InternLM3 with q/k rows permuted, stablelm with its per-head q/k norms): our q8_0 file
    loads back to the logits of quantize-at-load, with the same spec. (Agreement with llama.cpp itself, windowed
    EXAONE 4 and Command R+ included: benchmarks/agree_llama_cpp_archs.py.)"""
    path, _, _ = built(case)
    direct, back, _ = gguf_roundtrip(path, tmp_path, PROMPT)
    fields = ("norm", "pre_norms", "post_norms", "qk_norm", "qk_norm_per_head", "qk_norm_after_rope", "attn_bias",
              "attn_out_bias", "mlp_bias", "tie_embeddings", "layer_windows", "layer_nope", "head_dim", "n_kv_heads")
    assert [getattr(back.spec, f) for f in fields] == [getattr(direct.spec, f) for f in fields]
    assert (back.spec.rope.theta, back.spec.rope.rotary_dim) == (direct.spec.rope.theta, direct.spec.rope.rotary_dim)


@pytest.mark.parametrize("case", list(REFUSED))
def test_recent_gguf_refuses_what_llama_cpp_reads_otherwise(case, built, tmp_path):
    path, _, _ = built(case)
    with pytest.raises(ValueError, match=REFUSED[case]):
        edgeformer.quantize(path, str(tmp_path / "m.gguf"), "q8_0")
    assert not (tmp_path / "m.gguf").exists()


def test_config_class_defaults_where_a_config_leaves_fields_out():
    """Fields a config.json leaves out take their transformers config class's defaults: EXAONE 4's window (4096,
    three sliding layers to one global without rotary; an explicit null: none), GLM-4.7-Flash's latent sizes."""
    from edgeformer.archs import spec_from_config

    base = {"vocab_size": 16, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 4,
            "num_attention_heads": 2}
    s, _ = spec_from_config({**base, "model_type": "exaone4"}, "config.json")
    assert list(s.layer_windows) == [4096, 4096, 4096, 0] and list(s.layer_nope) == [0, 0, 0, 1]
    s, _ = spec_from_config({**base, "model_type": "exaone4", "sliding_window": None}, "config.json")
    assert list(s.layer_windows) == [] and list(s.layer_nope) == []
    s, _ = spec_from_config({**base, "model_type": "glm4_moe_lite", "num_key_value_heads": 2}, "config.json")
    assert (s.mla_kv_lora, s.mla_nope, s.mla_v, s.mla_q_lora) == (512, 192, 256, 768)


def test_exaone4_32b_gguf_is_windowed_as_llama_cpp_reads_it(tmp_path):
    """EXAONE 4.0 32B's shape (64 layers) goes out with its window and comes back with it, and a file of that shape
    without the window keys reads as llama.cpp reads it: 4096, three sliding layers to one global."""
    import transformers as tf

    from conftest import make_model
    from conftest import copy_gguf

    cfg = tf.Exaone4Config(vocab_size=320, hidden_size=64, intermediate_size=64, num_hidden_layers=64,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, sliding_window=6,
                           sliding_window_pattern=4, bos_token_id=0, eos_token_id=None, pad_token_id=None)
    make_model(str(tmp_path / "src"), tf.Exaone4ForCausalLM, cfg)
    edgeformer.quantize(str(tmp_path / "src"), str(tmp_path / "m.gguf"), "q8_0")
    back = edgeformer.load(str(tmp_path / "m.gguf"), threads=2, max_context=64)
    assert list(back.spec.layer_windows[:4]) == [6, 6, 6, 0] and list(back.spec.layer_nope[:4]) == [0, 0, 0, 1]
    copy_gguf(tmp_path / "m.gguf", tmp_path / "bare.gguf", {"exaone4.attention.sliding_window": None,
                                                             "exaone4.attention.sliding_window_pattern": None})
    bare = edgeformer.load(str(tmp_path / "bare.gguf"), threads=2, max_context=64)
    assert list(bare.spec.layer_windows[:4]) == [4096, 4096, 4096, 0] and list(bare.spec.layer_nope[:4]) == [0, 0, 0, 1]


def _internlm2_checkpoint(tmp_path, bias: bool):
    """InternLM2 has no transformers class (its checkpoints run remote code): a random Llama written in InternLM2's
    names and fused, grouped wqkv layout, and that Llama as the reference (InternLM2 computes exactly a Llama)."""
    import torch
    import transformers as tf
    from safetensors.torch import load_file, save_file

    from conftest import hf_logits, make_model

    cfg = tf.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         attention_bias=bias, mlp_bias=bias, tie_word_embeddings=False, rms_norm_eps=1e-6,
                         bos_token_id=0, eos_token_id=None, pad_token_id=None)
    src = tmp_path / "llama"
    ref = make_model(str(src), tf.LlamaForCausalLM, cfg)
    t = load_file(str(src / "model.safetensors"))
    hd, nkv, group = 16, 2, 2
    out = {"model.tok_embeddings.weight": t["model.embed_tokens.weight"], "model.norm.weight": t["model.norm.weight"],
           "output.weight": t["lm_head.weight"]}
    for i in range(2):
        a, b = f"model.layers.{i}.", f"model.layers.{i}."
        out[b + "attention_norm.weight"] = t[a + "input_layernorm.weight"]
        out[b + "ffn_norm.weight"] = t[a + "post_attention_layernorm.weight"]
        for kind in ("weight",) + (("bias",) if bias else ()):
            q, k, v = (t[a + f"self_attn.{p}_proj.{kind}"] for p in "qkv")
            q = q.reshape(nkv, group, hd, *q.shape[1:])
            parts = [torch.cat([q[g], k[g * hd:(g + 1) * hd][None], v[g * hd:(g + 1) * hd][None]]) for g in range(nkv)]
            out[b + f"attention.wqkv.{kind}"] = torch.cat(parts).reshape(-1, *q.shape[3:])
            out[b + f"attention.wo.{kind}"] = t[a + f"self_attn.o_proj.{kind}"]
            for p, w in (("gate", "w1"), ("up", "w3"), ("down", "w2")):
                out[b + f"feed_forward.{w}.{kind}"] = t[a + f"mlp.{p}_proj.{kind}"]
    d = tmp_path / "internlm2"
    d.mkdir()
    save_file(out, str(d / "model.safetensors"))
    config = {"model_type": "internlm2", "architectures": ["InternLM2ForCausalLM"], "vocab_size": 320,
              "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "bias": bias,
              "rope_theta": 10000.0, "tie_word_embeddings": False}
    (d / "config.json").write_text(json.dumps(config))
    (d / "tokenizer.json").write_text((src / "tokenizer.json").read_text())
    return d, hf_logits(ref, PROMPT), src


@pytest.mark.parametrize("bias", [False, True], ids=["plain", "bias"])
def test_internlm2_is_a_llama_with_grouped_wqkv(bias, tmp_path):
    d, want, _ = _internlm2_checkpoint(tmp_path, bias)
    assert_logits_close(edgeformer.load(str(d), threads=2, max_context=64).logits(PROMPT), want)


def test_internlm2_gguf_reads_as_llama_cpp_writes_it(tmp_path):
    """llama.cpp's internlm2 files are a Llama's tensors (q/k rows permuted) under internlm2's keys: one made from
    our llama file by renaming its architecture reads back to the same logits."""
    import gguf
    import numpy as np

    _, _, llama = _internlm2_checkpoint(tmp_path, False)
    edgeformer.quantize(str(llama), str(tmp_path / "llama.gguf"), "q8_0")
    r = gguf.GGUFReader(str(tmp_path / "llama.gguf"))
    w = gguf.GGUFWriter(str(tmp_path / "internlm2.gguf"), "internlm2")
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        name = "internlm2." + f.name[len("llama."):] if f.name.startswith("llama.") else f.name
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_array(name, list(f.contents()))
        else:
            w.add_key_value(name, f.contents(), f.types[0])
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    want = edgeformer.load(str(tmp_path / "llama.gguf"), threads=2, max_context=64).logits(PROMPT)
    np.testing.assert_array_equal(edgeformer.load(str(tmp_path / "internlm2.gguf"), threads=2,
                                                  max_context=64).logits(PROMPT), want)
