"""Variations on the families here against transformers on tiny random checkpoints, under every ISA: Ministral,
Helium, Seed-OSS, Arcee AFM, EXAONE 3.5, OLMo 3, Command R7B (cohere2), VaultGemma, OLMo 1 and Nemotron. Logits within
1e-4 + 2e-3 * max|logit|, greedy tokens identical."""

from __future__ import annotations

import json
import os

import pytest

import edgeformer

from conftest import assert_logits_close, ef_greedy, prompt_ids, reference_cache

PROMPT = prompt_ids(32)
N_GREEDY = 16


def _auto(cfg):
    import transformers as tf

    return tf.AutoModelForCausalLM.from_config(cfg)


def _ministral3_rope():
    return {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 8,
            "beta_fast": 32.0, "beta_slow": 1.0, "mscale_all_dim": 1.0, "mscale": 1.0, "llama_4_scaling_beta": 0.5}


def _cases():
    import transformers as tf

    base = dict(vocab_size=320, bos_token_id=0, eos_token_id=None, pad_token_id=None, hidden_size=64,
                intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    olmo3_rope = {"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
                  "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
    return {
        # a window on the first layer only (layer_types)
        "ministral": (tf.MinistralForCausalLM, tf.MinistralConfig(
            num_hidden_layers=2, sliding_window=6, layer_types=["sliding_attention", "full_attention"], head_dim=16,
            **base)),
        # no layer_types: every layer sliding
        "ministral_all": (tf.MinistralForCausalLM, tf.MinistralConfig(num_hidden_layers=2, sliding_window=6, head_dim=16,
                                                                           **base)),
        # interleaved rotary, q/k/v biases
        "helium": (tf.HeliumForCausalLM, tf.HeliumConfig(num_hidden_layers=2, head_dim=16, attention_bias=True,
                                                         **base)),
        "seed_oss": (tf.SeedOssForCausalLM, tf.SeedOssConfig(num_hidden_layers=2, head_dim=16,
                                                             attention_out_bias=True, **base)),
        # (as llama.cpp reads it: no o_proj bias)
        "seed_oss_plain": (tf.SeedOssForCausalLM, tf.SeedOssConfig(num_hidden_layers=2, head_dim=16, **base)),
        # squared ReLU, no gate
        "arcee": (tf.ArceeForCausalLM, tf.ArceeConfig(num_hidden_layers=2, **base)),
        "exaone": (_auto, tf.ExaoneConfig(num_hidden_layers=2, **base)),
        # 3 sliding layers (window 6) to 1 full; linear rope scaling on the full layer only
        "olmo3": (tf.Olmo3ForCausalLM, tf.Olmo3Config(num_hidden_layers=4, sliding_window=6,
                                                      rope_parameters=olmo3_rope, **base)),
        # 3 sliding rotated layers to 1 full NoPE layer
        "cohere2": (tf.Cohere2ForCausalLM, tf.Cohere2Config(num_hidden_layers=4, sliding_window=6, logit_scale=0.5,
                                                            **base)),
        # queries scaled from position 8 on (llama_4_scaling_beta over original_max_position_embeddings), yarn
        "ministral3": (tf.Ministral3ForCausalLM, tf.Ministral3Config(
            num_hidden_layers=2, head_dim=16, rope_parameters=_ministral3_rope(), **base)),
        # the image-and-text wrapper: its language model (model.language_model.*), a tiny vision tower not run
        "mistral3": (tf.Mistral3ForConditionalGeneration, tf.Mistral3Config(
            text_config=tf.Ministral3Config(num_hidden_layers=2, head_dim=16, rope_parameters=_ministral3_rope(),
                                            **base).to_dict(),
            vision_config=tf.PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2, image_size=32, patch_size=16).to_dict(),
            image_token_index=300)),
        # Mistral Small 3.x: the wrapper around a Mistral
        "mistral3_small": (tf.Mistral3ForConditionalGeneration, tf.Mistral3Config(
            text_config=tf.MistralConfig(num_hidden_layers=2, head_dim=16, sliding_window=None, **base).to_dict(),
            vision_config=tf.PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2, image_size=32, patch_size=16).to_dict(),
            image_token_index=300)),
        "vaultgemma": (tf.VaultGemmaForCausalLM, tf.VaultGemmaConfig(num_hidden_layers=2, sliding_window=6,
                                                                     head_dim=16, query_pre_attn_scalar=16, **base)),
        # LayerNorms without weights; q/k/v clamped to 0.1 (most of the tiny model's values pass it)
        "olmo": (tf.OlmoForCausalLM, tf.OlmoConfig(num_hidden_layers=2, clip_qkv=0.1, **base)),
        "olmo_plain": (tf.OlmoForCausalLM, tf.OlmoConfig(num_hidden_layers=2, **base)),
        # LayerNorm1P, squared ReLU without a gate, rotary on half of each head of 16
        "nemotron": (tf.NemotronForCausalLM, tf.NemotronConfig(num_hidden_layers=2, head_dim=16, **base)),
    }


CASES = ["ministral", "ministral_all", "helium", "seed_oss", "seed_oss_plain", "arcee", "exaone", "olmo3", "cohere2", "vaultgemma",
         "ministral3", "mistral3", "mistral3_small", "olmo", "olmo_plain", "nemotron"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return reference_cache(tmp_path_factory, _cases, PROMPT, N_GREEDY)


@pytest.mark.parametrize("case", CASES)
def test_variant_logits(case, isa, built):
    path, ref, _ = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert_logits_close(model.logits(PROMPT), ref)


@pytest.mark.parametrize("case", CASES)
def test_variant_greedy(case, isa, built):
    path, _, ref_tokens = built(case)
    model = edgeformer.load(path, threads=2, max_context=64)
    assert ef_greedy(model, PROMPT, N_GREEDY) == ref_tokens


@pytest.mark.parametrize("model_type", ["ministral", "helium", "seed_oss", "arcee", "exaone", "olmo3", "cohere2",
                                        "vaultgemma", "ministral3", "olmo", "nemotron"])
def test_fields_left_out_take_the_config_class_defaults(model_type):
    """A config.json with only the sizes computes as transformers' config class fills the rest in: norm epsilon,
    rotary base, windows and their layers, biases, activation."""
    import transformers as tf

    from edgeformer.archs import spec_from_config

    sizes = {"vocab_size": 16, "hidden_size": 32, "intermediate_size": 16, "num_hidden_layers": 4,
             "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16}
    full = tf.AutoConfig.for_model(model_type, **sizes).to_dict()
    ours, _ = spec_from_config({**sizes, "model_type": model_type}, "config.json")
    ref, _ = spec_from_config(full, "config.json")
    for field in ("norm_eps", "attn_bias", "attn_out_bias", "act", "gated_mlp", "layer_windows", "layer_nope",
                  "sliding_window", "tie_embeddings", "max_position", "logits_scale", "layer_rope", "attn_scale",
                  "attn_softcap", "logit_softcap", "emb_scale"):
        assert getattr(ours, field) == getattr(ref, field), field
    assert (ours.rope.theta, ours.rope.scaling) == (ref.rope.theta, ref.rope.scaling)
    assert (ours.q_temp_beta, ours.q_temp_length) == (ref.q_temp_beta, ref.q_temp_length)


def test_exaone_under_llama_names(built, tmp_path):
    """EXAONE checkpoints as transformers renames them (model.layers.N.self_attn ...) load as well."""
    from safetensors.numpy import load_file, save_file

    path, ref, _ = built("exaone")
    renames = (("transformer.wte.", "model.embed_tokens."), ("transformer.ln_f.", "model.norm."),
               ("transformer.h.", "model.layers."), (".attn.attention.out_proj.", ".self_attn.o_proj."),
               (".attn.attention.", ".self_attn."), (".ln_1.", ".input_layernorm."),
               (".ln_2.", ".post_attention_layernorm."), (".mlp.c_fc_0.", ".mlp.gate_proj."),
               (".mlp.c_fc_1.", ".mlp.up_proj."), (".mlp.c_proj.", ".mlp.down_proj."))
    tensors = {}
    for k, v in load_file(os.path.join(path, "model.safetensors")).items():
        assert k.startswith(("transformer.", "lm_head.")), k
        for a, b in renames:
            k = k.replace(a, b, 1)
        tensors[k] = v
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = edgeformer.load(str(tmp_path), threads=2, max_context=64)
    assert_logits_close(model.logits(PROMPT), ref)


def test_mistral3_under_the_newer_prefix(built, tmp_path):
    """mistral3 checkpoints as transformers 4.52+ saves them (model.language_model.*, lm_head.weight) load as well
    as the legacy layout (language_model.model.*) transformers 5 writes."""
    import shutil

    from safetensors.numpy import load_file, save_file

    path, ref, _ = built("mistral3")
    tensors = {}
    for k, v in load_file(os.path.join(path, "model.safetensors")).items():
        if k.startswith("language_model.model."):
            k = "model.language_model." + k[len("language_model.model."):]
        tensors[k] = v
    assert "model.language_model.embed_tokens.weight" in tensors
    save_file(tensors, str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(path, "config.json"), tmp_path / "config.json")
    model = edgeformer.load(str(tmp_path), threads=2, max_context=64)
    assert_logits_close(model.logits(PROMPT), ref)


# llama.cpp's architectures for them: exaone, olmo2 (with its window), cohere2, arcee, seed_oss, mistral3 (Ministral 3;
# the image-and-text checkpoint's language model), nemotron (norm weights with their 1 added, half rotary), olmo (no norm
# tensors, attention.clamp_kqv, Llama's q/k rows)
GGUF_CASES = ["exaone", "olmo3", "cohere2", "arcee", "seed_oss_plain", "ministral3", "mistral3", "mistral3_small",
              "nemotron", "olmo", "olmo_plain"]


@pytest.mark.parametrize("case", GGUF_CASES)
def test_variant_gguf_roundtrip(case, built, tmp_path):
    """Written as llama.cpp's converter writes them and read back: transformers' logits and greedy tokens."""
    import gguf

    path, ref, ref_tokens = built(case)
    out = str(tmp_path / "m.gguf")
    edgeformer.quantize(path, out, "f32")
    arch = bytes(gguf.GGUFReader(out).fields["general.architecture"].parts[-1]).decode()
    assert arch == {"exaone": "exaone", "olmo3": "olmo2", "cohere2": "cohere2", "arcee": "arcee",
                    "seed_oss_plain": "seed_oss", "ministral3": "mistral3", "mistral3": "mistral3",
                    "mistral3_small": "llama", "nemotron": "nemotron", "olmo": "olmo", "olmo_plain": "olmo"}[case]
    model = edgeformer.load(out, threads=2, max_context=64)
    assert_logits_close(model.logits(PROMPT), ref)
    out_tokens = ef_greedy(model, PROMPT, N_GREEDY)
    assert out_tokens == ref_tokens


@pytest.mark.parametrize("case,field", [("seed_oss", "attention_out_bias"), ("ministral", "ministral")])
def test_variant_gguf_refuses_what_llama_cpp_reads_otherwise(case, field, built, tmp_path):
    path, _, _ = built(case)
    with pytest.raises(ValueError, match=field):
        edgeformer.quantize(path, str(tmp_path / "m.gguf"), "f32")
    assert not os.path.exists(tmp_path / "m.gguf")
