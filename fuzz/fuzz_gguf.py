#!/usr/bin/env python3
"""Fuzz GGUF loading: bytes -> a file -> _core.TensorMap.open_gguf(path); every tensor read through its
NumPy view; the metadata through edgeformer.gguf_config.config_from_gguf (and tokenizer_from_gguf when the
file has tokenizer keys, then a round of encode / decode); a file that makes a config is then loaded as a
model (edgeformer.load, max_context=8, one thread) and generates two tokens.

Allowed: a ValueError at any step. Findings: any other exception; a crash, hang or memory blow-up; a tensor
view that disagrees with the tensor (or, where gguf-py's GGUFReader also accepts the file, with the
tensors and metadata it reads); the file left mapped or its descriptor open once everything is dropped.

    python fuzz/fuzz_gguf.py --make-seeds          # writes fuzz/corpus/gguf/
    python fuzz/fuzz_gguf.py fuzz/corpus/gguf -max_total_time=60
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import numpy as np

import edgeformer
from edgeformer import _core
from edgeformer.gguf_config import config_from_gguf
from edgeformer.gguf_tokenizer import tokenizer_from_gguf
from edgeformer.model import BLOCK_TYPES, GRID_TYPES

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "gguf"
GGML = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_k": 10, "q3_k": 11,
        "q4_k": 12, "q5_k": 13, "q6_k": 14, "iq4_nl": 20, "iq4_xs": 23, "i8": 24, "i16": 25, "i32": 26, "i64": 27,
        "f64": 28, "bf16": 30, "iq2_xxs": 16, "iq2_xs": 17, "iq3_xxs": 18, "iq1_s": 19, "iq3_s": 21, "iq2_s": 22,
        "iq1_m": 29}
SAMPLE = "Hello ab, 日本 \u00e9\U0001F642 <s>"


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b) and \
            all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            fa, fb = float(a), float(b)
        except (TypeError, ValueError):
            return False
        return fa == fb or (math.isnan(fa) and math.isnan(fb))
    return a == b


def _reference(path: str):
    """(tensors {name: (ggml type, shape outermost-first, bytes)}, metadata {key: value}) from gguf-py's
    GGUFReader, or None where it rejects the file (it is not hardened: anything it raises means "rejects")."""
    try:
        from gguf import GGUFReader

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = GGUFReader(path)
            tensors = {t.name: (int(t.tensor_type), [int(d) for d in reversed(t.shape.tolist())],
                                np.ascontiguousarray(t.data).tobytes()) for t in r.tensors}
            meta = {}
            for k, f in r.fields.items():
                if k.startswith("GGUF."):
                    continue
                v = f.contents()
                meta[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return tensors, meta
    except Exception:
        return None


def _tensors(tm, order, path):
    if sorted(order) != sorted(tm.names()) or len(order) != len(tm):
        raise common.Finding(f"tensor order {order[:5]} differs from the map's names {tm.names()[:5]}")
    ours = {}
    for n in order:
        t = tm.get(n)
        repr(t)
        a = t.numpy()
        raw = a.tobytes()  # reads every byte of the view
        kind = str(t.dtype).split(".")[-1]
        if a.nbytes != len(raw) or a.flags.writeable or t.source != path:
            raise common.Finding(f"tensor '{n}': view {a.dtype} {a.shape} writeable={a.flags.writeable}")
        if kind in BLOCK_TYPES + GRID_TYPES:
            if list(a.shape[:-1]) != list(t.shape[:-1]):
                raise common.Finding(f"tensor '{n}': raw view {a.shape} for {kind} {t.shape}")
        elif list(a.shape) != list(t.shape):
            raise common.Finding(f"tensor '{n}': view {a.shape} for {kind} {t.shape}")
        ours[n] = (GGML[kind], list(t.shape), raw)
        common.feature("tensor", kind, a.ndim, common.bucket(a.size))
    return ours


def _compare(ours_t, meta, path):
    ref = _reference(path)
    common.feature("reference accepts", ref is not None)
    if ref is None:
        return
    rt, rmeta = ref
    if set(rt) != set(ours_t):
        raise common.Finding(f"tensor names differ from GGUFReader's: {sorted(set(rt) ^ set(ours_t))[:5]}")
    for n, (typ, shape, raw) in rt.items():
        if (typ, shape, raw) != ours_t[n]:
            o = ours_t[n]
            raise common.Finding(f"tensor '{n}': type {o[0]} shape {o[1]} here, type {typ} shape {shape} in "
                                 f"GGUFReader" + ("" if raw == o[2] else ", and the bytes differ"))
    for k, v in rmeta.items():
        mine = meta.get(k)
        if isinstance(mine, list) and any(isinstance(x, list) for x in mine):
            continue  # GGUFReader flattens arrays of arrays (its contents() says so): nothing to compare
        if k in meta and not _same(mine, v):
            raise common.Finding(f"metadata '{k}': {meta[k]!r:.100} here, {v!r:.100} in GGUFReader")


def _tokenizer(meta, path):
    tok = tokenizer_from_gguf(meta, path)
    t = tok.tokenizer
    enc = t.encode(SAMPLE)
    t.decode(enc.ids, skip_special_tokens=True)
    t.decode(list(range(min(t.get_vocab_size(), 64))), skip_special_tokens=False)
    tok.tokenizer_config()
    common.feature("tokenizer", tok.model, common.bucket(len(enc.ids)))


def _known(cfg) -> str:
    """An open, already reported bug this config would hit ("" for none; skipped while fuzzing, see
    common.SKIP_KNOWN). None is open now (a block count of 2**32 used to loop in hf_names_from_gguf)."""
    return ""


def _run(path: str) -> None:
    tm, meta, order, version = _core.TensorMap.open_gguf(path)
    common.feature("opened", version, common.bucket(len(meta)), common.bucket(len(order)))
    ours_t = _tensors(tm, order, path)
    _compare(ours_t, meta, path)
    rope = tm.get("rope_freqs.weight").numpy() if "rope_freqs.weight" in tm else None
    del tm
    cfg = None
    try:
        cfg = config_from_gguf(meta, order, path, rope_freqs=rope)
        common.feature("config", cfg.get("model_type"))
    except ValueError as e:
        common.feature("config", common.error_class(e, path))
    if "tokenizer.ggml.model" in meta:
        try:
            _tokenizer(meta, path)
        except ValueError as e:
            common.feature("tokenizer", common.error_class(e, path))
    if cfg is None:
        return
    if common.SKIP_KNOWN and _known(cfg):
        return
    model = edgeformer.load(path, threads=1, max_context=8)
    common.feature("loaded", cfg.get("model_type"))
    if model.is_encoder:
        model.hidden_states([0, model.spec.vocab_size - 1])
        if model.tokenizer is not None:
            model.embed(["ab"])
    else:
        prompt = "ab" if model.tokenizer is not None else [0]
        model.generate(prompt, max_new_tokens=2, temperature=0)
        model.logits([model.spec.vocab_size - 1])
    common.feature("ran", cfg.get("model_type"))


def check(data: bytes) -> None:
    path = common.scratch("fuzz.gguf")
    common.write_file(path, data)
    fds = common.open_fds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unknown tokenizer.ggml.pre warns
        try:
            _run(path)
        except ValueError as e:
            common.feature(common.error_class(e, path))
    common.assert_released(path, fds)


# -- seeds ---------------------------------------------------------------------------------------------------

def _tok_gpt2():
    toks = ["<s>", "</s>", "a", "b", "c", "ab", "abc", "\u0120", "\u0120a", "h", "e", "l", "o", "he", "ll", "hell"]
    merges = ["a b", "ab c", "\u0120 a", "h e", "l l", "he ll"]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.tokens": toks,
            "tokenizer.ggml.token_type": [3, 3] + [1] * 14, "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.add_bos_token": True}


def _tok_llama():
    toks = ["<unk>", "<s>", "</s>", "<0x20>", "<0xE6>", "<0x97>", "<0xA5>", "\u2581", "a", "b", "\u2581a", "ab",
            "\u2581ab", "c", "\u2581c", "<|user|>"]
    types = [2, 3, 3, 6, 6, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 4]
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": toks, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.scores": [0.0, 0.0, 0.0] + [-float(i) for i in range(13)],
            "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.add_space_prefix": True,
            "tokenizer.chat_template": "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"}


def _tok_bert():
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "\u2581a", "\u2581b", "ab", "\u2581ab", "c",
            "\u2581c", ".", "\u2581.", "!"]
    return {"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": toks,
            "tokenizer.ggml.token_type": [3, 2, 3, 3, 3] + [1] * 11, "tokenizer.ggml.padding_token_id": 0,
            "tokenizer.ggml.unknown_token_id": 1, "tokenizer.ggml.cls_token_id": 2,
            "tokenizer.ggml.seperator_token_id": 3}


def _write_model(path, config, tok_meta, types=None, extra_meta=None):
    """A GGUF file for a tiny config.json (random weights in llama.cpp's names and layouts)."""
    import gguf

    from edgeformer.archs import spec_from_config
    from edgeformer.gguf_io import GGUF_ARCH
    from edgeformer.gguf_config import add_metadata_to_writer, gguf_metadata_from_config
    from edgeformer.gguf_names import gguf_names_from_hf, to_gguf_layout

    arch = GGUF_ARCH[config["model_type"]]
    spec, names = spec_from_config(config, "seed", [])
    arrays = common.make_arrays(common.source_shapes(spec, names))
    h2g = gguf_names_from_hf(arch, spec.n_layers, config)
    meta = dict(gguf_metadata_from_config(config, "seed"))
    meta.update(tok_meta)
    meta.update(extra_meta or {})
    meta[f"{arch}.vocab_size"] = spec.vocab_size
    w = gguf.GGUFWriter(path, arch)
    add_metadata_to_writer(w, {k: v for k, v in meta.items() if k != "general.architecture"})
    qt = gguf.GGMLQuantizationType
    for hf, a in arrays.items():
        g = h2g[hf]
        a = to_gguf_layout(arch, g, a, config)
        kind = (types or {}).get(g, "f32" if a.ndim == 1 else "f16")
        if kind == "f32":
            w.add_tensor(g, a.astype(np.float32))
        elif kind == "f16":
            w.add_tensor(g, a.astype(np.float16))
        else:
            t = getattr(qt, kind.upper())
            w.add_tensor(g, _core.ops.quantize(a.astype(np.float32), getattr(_core.DType, kind)), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _write_quantized(path, config, dtype="f32"):
    """A GGUF file of a tiny config.json written by edgeformer.quantize (random weights): the writer's own layouts,
    where _write_model's per-tensor conversion does not apply (fused rows split, reshaped vectors)."""
    import json
    import tempfile

    from edgeformer.archs import spec_from_config
    from edgeformer.io import save_safetensors

    spec, names = spec_from_config(config, "seed", [])
    with tempfile.TemporaryDirectory() as d:
        save_safetensors(common.make_arrays(common.source_shapes(spec, names)), os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f)
        edgeformer.quantize(d, path, dtype)


def _write_bitnet(path):
    """A tiny BitNet (packed ternary projections, one scale each) as edgeformer.quantize writes it: q8_0 rows of
    -1, 0, 1 and a scale tensor per projection."""
    import json
    import tempfile

    import numpy as np

    from edgeformer.bitnet import pack_ternary
    from edgeformer.io import save_safetensors

    H, F, V = 32, 32, 16
    rng = np.random.default_rng(0)
    t = {"model.embed_tokens.weight": rng.standard_normal((V, H)).astype(np.float32),
         "model.norm.weight": np.ones(H, np.float32)}
    p = "model.layers.0."
    for n, size in (("input_layernorm", H), ("post_attention_layernorm", H), ("self_attn.attn_sub_norm", H),
                    ("mlp.ffn_sub_norm", F)):
        t[p + n + ".weight"] = np.ones(size, np.float32)
    for n, rows, cols in (("self_attn.q_proj", H, H), ("self_attn.k_proj", 16, H), ("self_attn.v_proj", 16, H),
                          ("self_attn.o_proj", H, H), ("mlp.gate_proj", F, H), ("mlp.up_proj", F, H),
                          ("mlp.down_proj", H, F)):
        t[p + n + ".weight"] = pack_ternary(rng.integers(-1, 2, size=(rows, cols), dtype=np.int8))
        t[p + n + ".weight_scale"] = np.asarray([3.0], np.float32)
    config = {"model_type": "bitnet", "vocab_size": V, "hidden_size": H, "intermediate_size": F,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "max_position_embeddings": 32, "tie_word_embeddings": True,
              "quantization_config": {"quant_method": "bitnet", "linear_class": "bitlinear",
                                      "quantization_mode": "offline"}}
    with tempfile.TemporaryDirectory() as d:
        save_safetensors(t, os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f)
        edgeformer.quantize(d, path, "q8_0")


def make_seeds(out_dir: str) -> None:
    import gguf

    os.makedirs(out_dir, exist_ok=True)
    o = lambda n: os.path.join(out_dir, n)  # noqa: E731
    V = 16
    llama = {"model_type": "llama", "vocab_size": V, "hidden_size": 8, "intermediate_size": 8,
             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
             "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}
    _write_model(o("llama_bpe.gguf"), llama, _tok_gpt2())
    _write_model(o("mistral_spm_untied.gguf"), dict(llama, model_type="mistral", sliding_window=4,
                                                   tie_word_embeddings=False, attention_bias=True,
                                                   rope_scaling={"rope_type": "linear", "factor": 2.0}), _tok_llama())
    q = dict(llama, hidden_size=32, intermediate_size=8, num_attention_heads=2)
    _write_model(o("llama_q8_q4.gguf"), q, {}, types={"blk.0.attn_q.weight": "q8_0", "blk.0.attn_k.weight": "q4_0",
                                                      "blk.0.attn_v.weight": "q4_0", "blk.0.ffn_up.weight": "q8_0",
                                                      "token_embd.weight": "q8_0"})
    _write_model(o("gpt2.gguf"), {"model_type": "gpt2", "vocab_size": V, "n_embd": 8, "n_layer": 1, "n_head": 2,
                                  "n_positions": 16, "n_inner": 8}, _tok_gpt2())
    _write_model(o("bloom.gguf"), {"model_type": "bloom", "vocab_size": V, "hidden_size": 4, "n_layer": 1,
                                   "n_head": 2, "seq_length": 16}, {})
    _write_model(o("falcon.gguf"), {"model_type": "falcon", "vocab_size": V, "hidden_size": 8,
                                    "num_hidden_layers": 1, "num_attention_heads": 2, "num_kv_heads": 1,
                                    "new_decoder_architecture": True, "ffn_hidden_size": 8,
                                    "max_position_embeddings": 16}, {})
    _write_model(o("bert_wpm.gguf"), {"model_type": "bert", "vocab_size": V, "hidden_size": 8,
                                      "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
                                      "max_position_embeddings": 16, "type_vocab_size": 2}, _tok_bert())
    _write_model(o("qwen35.gguf"), {"model_type": "qwen3_5_text", "vocab_size": V, "hidden_size": 8,
                                    "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                                    "num_key_value_heads": 1, "head_dim": 4, "linear_num_key_heads": 1,
                                    "linear_num_value_heads": 2, "linear_key_head_dim": 4, "linear_value_head_dim": 4,
                                    "linear_conv_kernel_dim": 2, "max_position_embeddings": 32, "partial_rotary_factor": 0.5,
                                    "layer_types": ["linear_attention", "full_attention"]}, {})
    _write_model(o("lfm2.gguf"), {"model_type": "lfm2", "vocab_size": V, "hidden_size": 8, "intermediate_size": 12,
                                  "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                                  "layer_types": ["conv", "full_attention"], "block_multiple_of": 4,
                                  "max_position_embeddings": 32}, {})
    hybrid = {"vocab_size": V, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "max_position_embeddings": 32}
    _write_quantized(o("qwen3next.gguf"), {**hybrid, "model_type": "qwen3_next", "head_dim": 4, "intermediate_size": 8,
                                           "linear_num_key_heads": 1, "linear_num_value_heads": 2,
                                           "linear_key_head_dim": 4, "linear_value_head_dim": 4,
                                           "linear_conv_kernel_dim": 2, "partial_rotary_factor": 0.5, "num_experts": 2,
                                           "num_experts_per_tok": 1, "moe_intermediate_size": 4,
                                           "shared_expert_intermediate_size": 4,
                                           "layer_types": ["linear_attention", "full_attention"]})
    _write_quantized(o("lfm2moe_q8.gguf"), {**hybrid, "model_type": "lfm2_moe", "intermediate_size": 8,
                                            "moe_intermediate_size": 32, "layer_types": ["conv", "full_attention"],
                                            "num_dense_layers": 1, "num_experts": 2, "num_experts_per_tok": 1},
                     "q8_0")
    _write_quantized(o("granitehybrid.gguf"), {**hybrid, "model_type": "granitemoehybrid", "intermediate_size": 8,
                                               "shared_intermediate_size": 8, "layer_types": ["mamba", "attention"],
                                               "mamba_n_heads": 4, "mamba_d_head": 4, "mamba_n_groups": 2,
                                               "mamba_d_state": 4, "mamba_d_conv": 3, "num_local_experts": 2,
                                               "num_experts_per_tok": 1})
    _write_quantized(o("nemotron_h_moe.gguf"), {
        "model_type": "nemotron_h", "vocab_size": V, "hidden_size": 8, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 8,
        "layers_block_type": ["linear_attention", "moe", "full_attention"], "mamba_num_heads": 4, "mamba_head_dim": 4,
        "n_groups": 2, "ssm_state_size": 4, "conv_kernel": 3, "n_routed_experts": 4, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32, "moe_shared_expert_intermediate_size": 32, "n_group": 2, "topk_group": 1})
    _write_quantized(o("mamba2.gguf"), {"model_type": "mamba2", "vocab_size": V, "hidden_size": 8,
                                        "num_hidden_layers": 2, "num_heads": 4, "head_dim": 4, "state_size": 4,
                                        "n_groups": 2, "conv_kernel": 3, "expand": 2})
    _write_quantized(o("falcon_mamba_q8.gguf"), {"model_type": "falcon_mamba", "vocab_size": V, "hidden_size": 32,
                                                 "num_hidden_layers": 1, "state_size": 4, "conv_kernel": 3,
                                                 "time_step_rank": 32}, "q8_0")
    _write_quantized(o("falcon_h1.gguf"), {"model_type": "falcon_h1", "vocab_size": V, "hidden_size": 8,
                                           "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                                           "num_key_value_heads": 1, "head_dim": 4, "mamba_d_ssm": 16,
                                           "mamba_n_heads": 4, "mamba_n_groups": 2, "mamba_d_state": 4,
                                           "mamba_d_conv": 3, "mamba_rms_norm": True,
                                           "mamba_norm_before_gate": False, "max_position_embeddings": 32})
    _write_quantized(o("jamba.gguf"), {"model_type": "jamba", "vocab_size": V, "hidden_size": 8,
                                       "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                                       "num_key_value_heads": 1, "num_experts": 2, "num_experts_per_tok": 1,
                                       "expert_layer_period": 2, "expert_layer_offset": 1, "attn_layer_period": 2,
                                       "attn_layer_offset": 0, "mamba_d_state": 4, "mamba_d_conv": 3,
                                       "mamba_dt_rank": 2})
    _write_quantized(o("starcoder.gguf"), {"model_type": "gpt_bigcode", "vocab_size": V, "n_embd": 8, "n_layer": 1,
                                           "n_head": 2, "n_positions": 32, "multi_query": True})
    g4 = {"model_type": "gemma4_text", "vocab_size": V, "hidden_size": 8, "intermediate_size": 16,
          "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
          "global_head_dim": 8, "layer_types": ["sliding_attention", "full_attention"] * 2, "sliding_window": 4,
          "max_position_embeddings": 32}
    _write_quantized(o("gemma4.gguf"), {**g4, "num_kv_shared_layers": 2, "use_double_wide_mlp": True,
                                        "hidden_size_per_layer_input": 4, "vocab_size_per_layer_input": V,
                                        "attention_k_eq_v": True, "num_global_key_value_heads": 1})
    _write_quantized(o("gemma4_moe_q8.gguf"), {**g4, "hidden_size": 32, "hidden_size_per_layer_input": 0,
                                               "enable_moe_block": True, "num_experts": 3, "top_k_experts": 2,
                                               "moe_intermediate_size": 32}, "q8_0")
    _write_quantized(o("gemma3n.gguf"), {"model_type": "gemma3n_text", "vocab_size": V, "hidden_size": 8,
                                         "intermediate_size": 16, "num_hidden_layers": 21, "num_attention_heads": 2,
                                         "num_key_value_heads": 1, "head_dim": 4, "sliding_window": 4,
                                         "num_kv_shared_layers": 1, "hidden_size_per_layer_input": 256,
                                         "vocab_size_per_layer_input": V, "laurel_rank": 64, "altup_num_inputs": 4,
                                         "max_position_embeddings": 32}, "f16")
    _write_bitnet(o("bitnet_q8.gguf"))
    # every tensor type and every metadata value type, no usable architecture
    w = gguf.GGUFWriter(o("types.gguf"), "llama")
    w.add_uint8("u8", 200), w.add_int8("i8", -5), w.add_uint16("u16", 60000), w.add_int16("i16", -300)
    w.add_uint32("u32", 7), w.add_int32("i32", -7), w.add_float32("f32", 0.5), w.add_bool("b", True)
    w.add_uint64("u64", 2**63 + 1), w.add_int64("i64", -(2**40)), w.add_float64("f64", 1e300)
    w.add_string("s", "h\u00e9llo"), w.add_array("as", ["x", "yz"]), w.add_array("ai", [1, 2, 3])
    w.add_key_value("nested", [[1, 2], [3]], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.ARRAY)
    w.add_custom_alignment(64)
    rng = np.random.default_rng(1)
    row = rng.standard_normal((1, 256)).astype(np.float32)
    for t in BLOCK_TYPES:
        qt = gguf.GGMLQuantizationType[t.upper()]
        w.add_tensor(t, _core.ops.quantize(row, getattr(_core.DType, t)), raw_dtype=qt)
    for t in GRID_TYPES:  # random bytes are valid i-quant blocks (no quantizer for them)
        nb = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.upper()]][1]
        w.add_tensor(t, rng.integers(0, 256, (1, nb), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType[t.upper()])
    w.add_tensor("bf16", np.array([0x3F80, 0x4000], np.uint16), raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.add_tensor("f64", np.arange(3, dtype=np.float64))
    w.add_tensor("i8_3d", np.arange(8, dtype=np.int8).reshape(2, 2, 2))
    w.add_tensor("i32", np.arange(2, dtype=np.int32))
    w.add_tensor("empty", np.zeros((0, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # a T5 header (config_from_gguf knows it; loading says not yet supported) and a bare header
    w = gguf.GGUFWriter(o("t5_meta.gguf"), "t5")
    for k, v in {"t5.context_length": 512, "t5.embedding_length": 8, "t5.feed_forward_length": 16,
                 "t5.block_count": 1, "t5.attention.head_count": 2, "t5.attention.key_length": 4,
                 "t5.attention.value_length": 4, "t5.attention.layer_norm_epsilon": 1e-6,
                 "t5.attention.relative_buckets_count": 32, "t5.decoder_start_token_id": 0}.items():
        (w.add_float32 if isinstance(v, float) else w.add_uint32)(k, v)
    w.add_array("tokenizer.ggml.tokens", ["<pad>", "</s>", "<unk>", "\u2581a"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["--make-seeds"]:
        make_seeds(os.path.join(common.CORPUS_DIR, NAME))
    else:
        common.fuzz_main(NAME, check)
