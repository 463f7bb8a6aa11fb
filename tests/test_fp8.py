"""FP8 checkpoints (e4m3 weights with block scales, DeepSeek's and Qwen3-FP8's layout, or per-row scales,
compressed-tensors'): each matrix dequantized at load to bf16, the logits transformers computes on the same
dequantized weights; bad scales name their tensor."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgeformer

from conftest import hf_logits, make_model, prompt_ids

PROMPT = prompt_ids(24)


def test_e4m3_table_is_torchs():
    import torch

    from edgeformer.fp8 import e4m3_table

    want = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()
    got = e4m3_table()
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def _fp8_checkpoint(tmp_path, per_row: bool, case=None, b: int = 32):
    """A tiny Qwen3 (or test_moe's case) whose layer matrices are FP8 with scales (b x b blocks, or one per row),
    and the transformers model holding the weights edgeformer dequantizes them to (bf16-rounded)."""
    import torch
    import transformers as tf
    from safetensors.torch import load_file, save_file

    from edgeformer.fp8 import bf16_bits

    if case is None:
        cls, cfg = tf.Qwen3ForCausalLM, tf.Qwen3Config(
            vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=64, bos_token_id=0, eos_token_id=None,
            pad_token_id=None)
    else:
        from test_moe import _cases

        cls, cfg = _cases()[case]
    src = tmp_path / "src"
    ref = make_model(str(src), cls, cfg)
    tensors = load_file(str(src / "model.safetensors"))
    state = ref.state_dict()
    for name in [n for n in tensors if ".layers." in n and n.endswith(("proj.weight", "proj_with_mqa.weight"))]:
        w = tensors[name].float()
        if per_row:
            scale = w.abs().amax(dim=1, keepdim=True) / 448
            q = (w / scale).to(torch.float8_e4m3fn)
            deq = q.float() * scale
            tensors[name[: -len("weight")] + "weight_scale"] = scale
        else:
            r, c = w.shape
            blocks = w.reshape(r // b, b, c // b, b)
            scale = blocks.abs().amax(dim=(1, 3)) / 448
            full = scale.repeat_interleave(b, 0).repeat_interleave(b, 1)
            q = (w / full).to(torch.float8_e4m3fn)
            deq = q.float() * full
            tensors[name + "_scale_inv"] = scale
        tensors[name] = q
        bits = bf16_bits(deq.numpy())
        state[name] = torch.from_numpy((bits.astype(np.uint32) << 16).view(np.float32))
    if case is None:  # (test_moe's MoE models stack their experts in memory, not in the file: no reference there)
        ref.load_state_dict(state)
    # the same checkpoint with those matrices stored as bf16 (exactly: they are bf16 values), the rest as it was
    (tmp_path / "bf16").mkdir()
    plain = load_file(str(src / "model.safetensors"))
    save_file({n: state[n].to(torch.bfloat16) if n in tensors and tensors[n].dtype == torch.float8_e4m3fn else t
               for n, t in plain.items()}, str(tmp_path / "bf16" / "model.safetensors"))
    for f in ("config.json", "tokenizer.json"):
        (tmp_path / "bf16" / f).write_text((src / f).read_text())
    out = tmp_path / ("row" if per_row else "block")
    out.mkdir()
    save_file(tensors, str(out / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [b, b]}
    (out / "config.json").write_text(json.dumps(config))
    (out / "tokenizer.json").write_text((src / "tokenizer.json").read_text())
    return out, ref


@pytest.mark.parametrize("per_row", [False, True], ids=["blocks", "rows"])
def test_fp8_checkpoint_matches_transformers_on_its_dequantized_weights(per_row, tmp_path):
    """The FP8 checkpoint computes exactly as a bf16 checkpoint of the weights it dequantizes to, and within bf16's
    error (activations rounded to bf16 by the bf16 kernels) of transformers on them."""
    out, ref = _fp8_checkpoint(tmp_path, per_row)
    model = edgeformer.load(str(out), threads=2, max_context=64)
    types = {n: str(t.dtype).split(".")[-1] for n, t in model._core.weights()}
    assert types["layers.0.attn.q.weight"] == "bf16" and types["layers.1.mlp.down.weight"] == "bf16"
    ours = model.logits(PROMPT)
    np.testing.assert_array_equal(ours, edgeformer.load(str(tmp_path / "bf16"), threads=2, max_context=64).logits(PROMPT))
    want = hf_logits(ref, PROMPT)
    assert float(((ours - want) ** 2).mean() / (want**2).mean()) < 1e-4
    q8 = edgeformer.load(str(out), threads=2, max_context=64, dtype="q8_0")  # (and on from bf16, as any checkpoint)
    assert {t for n, t in q8._core.weights() if n.endswith("q.weight")} and q8.logits(PROMPT).shape == (24, 320)


def test_fp8_deepseek_v3(tmp_path):
    """DeepSeek-V3's released layout: every projection FP8 in blocks, kv_b_proj too (each head's k_b, transposed,
    and v_b rows cut from the dequantized matrix), experts and shared expert included."""
    out, _ = _fp8_checkpoint(tmp_path, per_row=False, case="deepseek_v3", b=16)
    model = edgeformer.load(str(out), threads=2, max_context=64)
    assert str(dict(model._core.weights())["layers.1.attn.k_b.3.weight"].dtype).endswith("bf16")
    want = edgeformer.load(str(tmp_path / "bf16"), threads=2, max_context=64).logits(PROMPT)
    np.testing.assert_array_equal(model.logits(PROMPT), want)


def test_fp8_weight_without_its_scale_names_the_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    out, _ = _fp8_checkpoint(tmp_path, per_row=False)
    tensors = load_file(str(out / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight_scale_inv"]
    save_file(tensors, str(out / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight' is FP8 without a scale"):
        edgeformer.load(str(out), threads=2, max_context=64)


def test_fp8_scales_by_shape():
    """Block scales of a matrix one block wide are not taken for row scales; rows and a single scale work; another
    shape names the tensor."""
    from edgeformer.fp8 import dequantize

    raw = np.full((256, 64), 0x38, np.uint8)  # e4m3 1.0
    np.testing.assert_array_equal(dequantize(raw, np.array([[2.0], [3.0]]), (128, 128), "t")[[0, 255], 0], [2, 3])
    np.testing.assert_array_equal(dequantize(raw, np.arange(256.0).reshape(256, 1), (128, 128), "t")[5, 0], 5)
    np.testing.assert_array_equal(dequantize(raw, np.array(4.0), (128, 128), "t")[0, 0], 4)
    with pytest.raises(ValueError, match="tensor 'x'.*got \\[3, 1\\]"):
        dequantize(raw, np.ones((3, 1)), (128, 128), "tensor 'x'")
