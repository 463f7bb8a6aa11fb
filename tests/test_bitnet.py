"""BitNet b1.58 (model_type bitnet) against transformers' BitNet quantization on tiny random checkpoints in each of
its forms (packed BitLinear, AutoBitLinear offline and online), under every ISA; the ternary panels (2 bits a value)
against a NumPy product of per-token int8 activations."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import edgeformer
from edgeformer import _core
from edgeformer.bitnet import pack_ternary, ternary_q8_0

from conftest import (assert_logits_close, copy_gguf, ef_greedy, make_tokenizer, prompt_ids, reference_cache,
                      scale_weights)

PROMPT = prompt_ids(24)
N_GREEDY = 12
FORMS = {"bitlinear": ("bitlinear", "offline"), "auto_offline": ("autobitlinear", "offline"),
         "auto_online": ("autobitlinear", "online")}


def _ternarize(w):
    import torch

    s = w.abs().mean().clamp(min=1e-5)
    return (w / s).round().clamp(-1, 1), s


def make_bitnet(out_dir: str, form: str, skip=(), **overrides):
    """A tiny random BitNet saved in one of transformers' forms (FORMS; "float": no quantization_config) with a
    tokenizer; returns transformers' model loaded from it (its BitLinear layers: the reference)."""
    import torch
    import transformers as tf

    torch._dynamo.config.disable = True  # (transformers compiles its BitLinear helpers: not needed here)
    kw = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=None,
              pad_token_id=None, tie_word_embeddings=True)
    kw.update(overrides)
    torch.manual_seed(0)
    model = tf.BitNetForCausalLM(tf.BitNetConfig(**kw)).eval()
    scale_weights(model)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    if form != "float":
        lc, mode = FORMS[form]
        for k in [k for k in sd if k.endswith("_proj.weight")]:
            if any(k.startswith(m + ".") for m in skip):
                continue
            t, s = _ternarize(sd[k])
            base = k[: -len(".weight")]
            if mode == "online":
                continue  # (float master weights)
            sd[k] = torch.from_numpy(pack_ternary(t.to(torch.int8).numpy()))
            sd[base + ".weight_scale"] = (1 / s if lc == "bitlinear" else s).reshape(1)
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out_dir, "model.safetensors"))
    cfg = model.config.to_dict()
    if form != "float":
        lc, mode = FORMS[form]
        cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": lc, "quantization_mode": mode,
                                      "modules_to_not_convert": list(skip) or None}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f)
    make_tokenizer(out_dir)
    return tf.AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()


CASES = {**{f: (f, ()) for f in FORMS}, "float": ("float", ()),
         # a projection transformers keeps as a float Linear (modules_to_not_convert)
         # (transformers adds no lm_head of its own to a list given: a tied head must be named)
         "skip_down": ("bitlinear", ("lm_head", "model.layers.1.mlp.down_proj")),
         "untied": ("bitlinear", ())}


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    def make(d, name):
        form, skip = CASES[name]
        return make_bitnet(d, form, skip, **({"tie_word_embeddings": False} if name == "untied" else {}))

    return reference_cache(tmp_path_factory, None, PROMPT, N_GREEDY, make=make)


def _nmse(a, b):
    return float(((a - b) ** 2).mean() / (b ** 2).mean())


@pytest.mark.parametrize("name", list(CASES))
def test_bitnet_matches_transformers(isa, ref, name):
    """Logits as transformers' BitLinear layers compute them (int8 activations per token, ternary weights), with
    an f32 KV cache; greedy tokens identical."""
    path, logits, greedy = ref(name)
    m = edgeformer.load(path, threads=2, max_context=64, kv_dtype="f32")
    ours = m.logits(PROMPT)
    assert_logits_close(ours, logits, rel=2e-4)
    assert _nmse(ours, logits) < 1e-8
    assert ef_greedy(m, PROMPT, N_GREEDY) == greedy


def test_bitnet_default_kv_cache(ref):
    """The default KV cache beside quantized matrices is f16 (as for any quantized model): close, not equal (the
    int8 activations turn its rounding into a few flipped steps: NMSE 2e-4 on this tiny model)."""
    path, logits, _ = ref("bitlinear")
    ours = edgeformer.load(path, threads=2, max_context=64).logits(PROMPT)
    assert 0 < _nmse(ours, logits) < 2e-3
    assert (ours.argmax(1) == logits.argmax(1)).mean() >= 0.9


def test_bitnet_matrices_stay_ternary(ref):
    """The projections are ternary q8_0 rows with their own scale, kept at 2 bits a value whatever dtype= asks
    (the embeddings follow it)."""
    path, logits, _ = ref("bitlinear")
    m = edgeformer.load(path, threads=2, max_context=64, kv_dtype="f32")
    w = dict(m._core.weights())
    q = w["layers.0.attn.q.weight"]
    assert q.dtype == _core.DType.q8_0 and q.scale != 1.0
    assert set(np.unique(q.numpy().reshape(64, -1, 34)[..., 2:].view(np.int8))) <= {-1, 0, 1}
    assert w["layers.0.attn.sub_norm.weight"].shape == [64] and w["layers.0.mlp.sub_norm.weight"].shape == [96]
    # 2 bits a value (+ a 64-byte header per 16 rows): far below the int8 rows' 8.5 bits
    layer_values = 2 * (3 * 64 * 64 + 64 * 64 + 3 * 64 * 96)  # q, o, k + v at half, gate, up, down
    emb = 320 * 64 * 4
    assert m._core.weight_bytes - emb < layer_values * 0.3
    q4 = edgeformer.load(path, dtype="q4_0", threads=2, max_context=64, kv_dtype="f32")
    wq = dict(q4._core.weights())
    assert wq["layers.0.attn.q.weight"].dtype == _core.DType.q8_0
    assert wq["tok_embeddings.weight"].dtype != _core.DType.f32
    ours = q4.logits(PROMPT)  # (q8_0 embeddings: NMSE 1e-3 on this tiny model)
    assert 0 < _nmse(ours, logits) < 5e-3 and (ours.argmax(1) == logits.argmax(1)).mean() >= 0.9


def test_ternary_panels(isa):
    """The ternary layout's product equals int8 activations (one scale per token, round half away) times the
    values, times the matrix's scale, for decode steps and prompts, whole and partial panels."""
    rng = np.random.default_rng(3)
    O, K = 40, 160
    vals = rng.integers(-1, 2, size=(O, K)).astype(np.int8)
    w = ternary_q8_0(vals)
    for T in (1, 2, 5, 9, 17):
        x = rng.standard_normal((T, K)).astype(np.float32)
        d = np.abs(x).max(1, keepdims=True) / 127
        q = np.sign(x / d) * np.floor(np.abs(x / d) + 0.5)
        want = (q @ vals.T.astype(np.float64)) * d * 0.37
        y, layout = _core.ops.linear_packed(x, w, _core.DType.q8_0, 0.37, isa)
        assert layout == "ternary"
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    wide = ternary_q8_0(vals)  # values past one: the row-scaled int8 layout
    wide.reshape(O, -1, 34)[0, 0, 2] = 5
    assert _core.ops.linear_packed(x, wide, _core.DType.q8_0, 1.0, isa)[1] == "row_scaled"


def test_bitnet_config_errors(ref, tmp_path):
    path, _, _ = ref("bitlinear")
    cfg = json.load(open(os.path.join(path, "config.json")))

    def attempt(change, match):
        d = tmp_path / "bad"
        d.mkdir(exist_ok=True)
        for f in os.listdir(path):
            if f != "config.json":
                src, dst = os.path.join(path, f), d / f
                if not dst.exists():
                    os.symlink(src, dst)
        c = json.loads(json.dumps(cfg))
        change(c)
        with open(d / "config.json", "w") as f:
            json.dump(c, f)
        with pytest.raises(ValueError, match=match):
            edgeformer.load(str(d), max_context=16)

    attempt(lambda c: c["quantization_config"].update(quant_method="gptq"), "quant_method")
    attempt(lambda c: c["quantization_config"].update(use_rms_norm=True), "use_rms_norm")
    attempt(lambda c: c["quantization_config"].update(linear_class="bitnet"), "linear_class")
    # the packed weights read as online master weights: named
    attempt(lambda c: c["quantization_config"].update(linear_class="autobitlinear", quantization_mode="online"),
            "master weights")


def test_bitnet_tensor_errors(ref, tmp_path):
    """A packed value of 3 and a missing weight_scale are named, never computed with."""
    from safetensors.numpy import load_file, save_file

    path, _, _ = ref("bitlinear")
    for bad, match in (("value3", "value 3"), ("noscale", "weight_scale")):
        d = tmp_path / bad
        d.mkdir()
        sd = load_file(os.path.join(path, "model.safetensors"))
        if bad == "value3":
            sd["model.layers.0.self_attn.q_proj.weight"][0, 0] = 0xFF
        else:
            del sd["model.layers.1.mlp.up_proj.weight_scale"]
        save_file(sd, str(d / "model.safetensors"))
        for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            os.symlink(os.path.join(path, f), d / f)
        with pytest.raises(ValueError, match=match):
            edgeformer.load(str(d), max_context=16)


# ---- GGUF: llama.cpp's bitnet ---------------------------------------------------------------------------------------

def _gguf_tensors(path):
    import gguf

    r = gguf.GGUFReader(str(path))
    return r, {t.name: t for t in r.tensors}


def test_bitnet_gguf_roundtrip(ref, tmp_path):
    """Written as llama.cpp's bitnet (q8_0 rows where rows are not whole blocks of 256, each projection's scale its
    own tensor, the activation as a key) and read back: the same logits."""
    from conftest import gguf_roundtrip

    path, logits, _ = ref("bitlinear")
    _, back, out = gguf_roundtrip(path, tmp_path, PROMPT, "q8_0")
    r, t = _gguf_tensors(out)
    assert "blk.0.attn_q.scale" in t and "output.weight" not in t and "blk.1.ffn_sub_norm.weight" in t
    assert r.fields["bitnet.hidden_activation"].contents() == "relu2"


def _llama_cpp_style(src, dst, form):
    """src (our bitnet GGUF) rewritten as llama.cpp's converter and quantizer write BitNet: projections as their
    values times the scale (f32), or those quantized to TQ1_0 / TQ2_0 (the scale in each block's f16 d); no scale
    tensors, no activation key."""
    import gguf
    import gguf.quants

    _, t = _gguf_tensors(src)
    scales = {n[: -len("scale")] + "weight": float(np.asarray(v.data).reshape(-1)[0]) for n, v in t.items()
              if n.endswith(".scale")}

    def projection(name, data, kind):
        if name.endswith(".scale"):
            return []
        if name not in scales:
            return [(name, data, kind)]
        vals = gguf.quants.dequantize(data, kind).astype(np.float32) * np.float32(scales[name])
        if form == "f32":
            return [(name, vals, gguf.GGMLQuantizationType.F32)]
        qt = gguf.GGMLQuantizationType[form.upper()]
        return [(name, gguf.quants.quantize(vals, qt), qt)]

    copy_gguf(src, dst, {"bitnet.hidden_activation": None}, projection)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A BitNet whose rows are whole blocks of 256 (TQ2_0 in the files we write) and its reference logits."""
    from conftest import hf_logits

    d = tmp_path_factory.mktemp("bitnet_wide")
    m = make_bitnet(str(d), "bitlinear", hidden_size=256, intermediate_size=512, num_attention_heads=4,
                    num_key_value_heads=2)
    return str(d), hf_logits(m, PROMPT)


def test_bitnet_gguf_tq2_0_and_llama_cpp_forms(wide, tmp_path):
    """Rows of whole blocks of 256 are written as TQ2_0 (scales of 1, the matrix's scale beside them) and read back
    bit for bit; the forms llama.cpp's own tools make (float values times the scale; TQ1_0 and TQ2_0 whose block
    scales hold it, in f16; no activation key: squared ReLU beside a Llama 3-style tokenizer) read as BitLinear
    layers, within the f16 rounding of the scale."""
    path, logits = wide
    out = tmp_path / "w.gguf"
    edgeformer.quantize(path, str(out), "q8_0")
    r, t = _gguf_tensors(out)
    assert t["blk.0.ffn_up.weight"].tensor_type.name == "TQ2_0" and r.fields["general.file_type"].contents() == 37
    direct = edgeformer.load(path, dtype="q8_0", threads=2, max_context=64, kv_dtype="f32").logits(PROMPT)
    back = edgeformer.load(str(out), threads=2, max_context=64, kv_dtype="f32").logits(PROMPT)
    np.testing.assert_array_equal(back, direct)
    for form in ("f32", "tq2_0", "tq1_0"):
        dst = tmp_path / f"{form}.gguf"
        _llama_cpp_style(out, dst, form)
        ours = edgeformer.load(str(dst), threads=2, max_context=64, kv_dtype="f32").logits(PROMPT)
        if form == "f32":
            np.testing.assert_allclose(ours, direct, rtol=1e-4, atol=1e-4)
        else:
            assert _nmse(ours, logits) < 5e-3 and (ours.argmax(1) == logits.argmax(1)).mean() >= 0.9, form


def test_bitnet_gguf_not_ternary(wide, tmp_path):
    """A bitnet file's float projection that is not ternary is named, not computed with."""
    path, _ = wide
    out = tmp_path / "w.gguf"
    edgeformer.quantize(path, str(out), "q8_0")
    dst = tmp_path / "f.gguf"
    _llama_cpp_style(out, dst, "f32")

    def halve_one(name, data, kind):
        if name == "blk.1.attn_k.weight":
            data[0, 0] *= 0.5
        return [(name, data, kind)]

    copy_gguf(dst, tmp_path / "bad.gguf", tensors=halve_one)
    with pytest.raises(ValueError, match="blk.1.attn_k.weight.*ternary"):
        edgeformer.load(str(tmp_path / "bad.gguf"), max_context=16)
