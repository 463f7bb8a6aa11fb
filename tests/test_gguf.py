"""GGUF out and back in: `edgeformer quantize` writes llama.cpp's format; loading the file gives logits
bit-identical to quantize-at-load; transformers' own GGUF reader (built to read llama.cpp's files) reads
our files and agrees; tokenizers survive the trip; an interrupted conversion leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import edgeformer

from conftest import hf_logits, make_llama, make_model, prompt_ids

PROMPT = prompt_ids(32)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf_llama")
    ref = make_llama(str(d), hidden_size=256, intermediate_size=512, num_attention_heads=8, num_key_value_heads=2)
    return str(d), ref


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_k", "q6_k"])
def test_roundtrip_bit_identical(llama, qtype, tmp_path):
    path, _ = llama
    out = str(tmp_path / f"m-{qtype}.gguf")
    edgeformer.quantize(path, out, qtype)
    direct = edgeformer.load(path, dtype=qtype, threads=2, max_context=64)
    from_file = edgeformer.load(out, threads=2, max_context=64)
    np.testing.assert_array_equal(from_file.logits(PROMPT), direct.logits(PROMPT))
    # the tokenizer rebuilt from the file's metadata encodes and decodes alike
    text = "Hello world, café 日本語 🙂 123"
    assert from_file.tokenizer.encode(text).ids == direct.tokenizer.encode(text).ids
    assert from_file.generate(text, max_new_tokens=6, temperature=0, ignore_eos=True).text == \
        direct.generate(text, max_new_tokens=6, temperature=0, ignore_eos=True).text
    # quantized tensors keep their type in the file: a 4-bit file is about a third of the f16 size
    f16_bytes = os.path.getsize(os.path.join(path, "model.safetensors")) / 2  # the checkpoint is f32
    assert os.path.getsize(out) < {"q8_0": 0.6, "q4_0": 0.35, "q4_k": 0.35, "q6_k": 0.45}[qtype] * f16_bytes


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "f16"])
def test_transformers_reads_our_gguf(llama, qtype, tmp_path):
    """transformers dequantizes GGUF with gguf-py and undoes llama.cpp's q/k permutation: if our layout
    were not llama.cpp's, its logits would be garbage."""
    import transformers

    path, ref = llama
    out = tmp_path / f"m-{qtype}.gguf"
    edgeformer.quantize(path, str(out), qtype)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name).eval()
    theirs = hf_logits(hf, PROMPT)
    # both activation levels: the product then carries the weights' error alone, as transformers' does
    # (and an f32 KV cache: this compares layouts, not the f16 cache's rounding)
    ours = edgeformer.load(str(out), threads=2, max_context=64, exact_q8_prompts=True, kv_dtype="f32").logits(PROMPT)
    rel = float(((theirs - ours) ** 2).sum() / (theirs**2).sum())
    assert rel < {"q8_0": 1e-6, "q4_0": 5e-3, "f16": 1e-9}[qtype], rel


@pytest.mark.parametrize("family", ["gpt2", "bloom", "falcon"])
def test_fused_qkv_families_roundtrip(family, tmp_path):
    import transformers as tf

    cls, cfg = {
        "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config(n_embd=128, n_layer=2, n_head=4, n_positions=64, vocab_size=320)),
        "bloom": (tf.BloomForCausalLM, tf.BloomConfig(hidden_size=128, n_layer=2, n_head=4, vocab_size=320)),
        "falcon": (tf.FalconForCausalLM, tf.FalconConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                                       new_decoder_architecture=True, num_kv_heads=2,
                                                       max_position_embeddings=64, vocab_size=320)),
    }[family]
    src = tmp_path / "src"
    make_model(str(src), cls, cfg)
    out = str(tmp_path / "m.gguf")
    edgeformer.quantize(str(src), out, "q8_0")
    a = edgeformer.load(str(src), dtype="q8_0", threads=2, max_context=64).logits(PROMPT)
    b = edgeformer.load(out, threads=2, max_context=64).logits(PROMPT)
    np.testing.assert_array_equal(a, b)


def test_cli_quantize_and_nothing_lost(llama, tmp_path):
    path, _ = llama
    before = {f: os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path)}
    out = tmp_path / "cli.gguf"
    r = subprocess.run([sys.executable, "-m", "edgeformer", "quantize", path, str(out), "--type", "q4_0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.exists() and "q4_0" in r.stdout
    assert {f: os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path)} == before  # source untouched
    # a failing conversion (unsupported type) leaves no output and no temporary file
    bad = tmp_path / "bad.gguf"
    with pytest.raises(ValueError, match="type"):
        edgeformer.quantize(path, str(bad), "q3_x")
    with pytest.raises(ValueError, match="overwrite"):
        edgeformer.quantize(path, path, "q4_0")
    assert not bad.exists() and not (tmp_path / "bad.gguf.tmp").exists()


def test_interrupted_write_leaves_no_output(llama, tmp_path, monkeypatch):
    import gguf

    path, _ = llama
    out = tmp_path / "x.gguf"

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(KeyboardInterrupt):
        edgeformer.quantize(path, str(out), "q8_0")
    assert not out.exists() and not (tmp_path / "x.gguf.tmp").exists()


def test_t5_from_gguf(tmp_path):
    """A T5 GGUF (llama.cpp's enc.* / dec.* names and t5 metadata, written with gguf-py) loads and matches
    transformers: decoder logits and greedy generation."""
    import gguf
    import torch
    import transformers as tf

    from edgeformer.gguf_config import add_metadata_to_writer, gguf_metadata_from_config
    from edgeformer.gguf_names import gguf_names_from_hf

    # (GGUF has no key for relative_attention_max_distance: llama.cpp assumes 128, the default)
    cfg = tf.T5Config(vocab_size=320, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                      relative_attention_num_buckets=16,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, feed_forward_proj="gated-gelu",
                      tie_word_embeddings=False)
    from test_families import untie_t5_head

    src = tmp_path / "src"
    ref = make_model(str(src), tf.T5ForConditionalGeneration, cfg)
    untie_t5_head(ref, str(src))  # v1.1: its own head, no output scaling (llama.cpp's T5 files say neither)
    import json

    config = json.loads((src / "config.json").read_text())
    meta = gguf_metadata_from_config(config, str(src / "config.json"))
    meta["t5.vocab_size"] = 320  # no tokenizer in this file: the vocabulary size says it
    h2g = gguf_names_from_hf("t5", 2, config)
    out = tmp_path / "t5.gguf"
    w = gguf.GGUFWriter(str(out), "t5")
    add_metadata_to_writer(w, {k: v for k, v in meta.items() if k != "general.architecture"})
    for name, t in ref.state_dict().items():
        if name in h2g and not (name.startswith(("encoder.embed_tokens", "decoder.embed_tokens"))):
            w.add_tensor(h2g[name], t.detach().float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    model = edgeformer.load(str(out), threads=2)
    src_ids = prompt_ids(20, seed=3)[1:]
    dec = [0] + prompt_ids(8, seed=4)[1:]
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor([src_ids]), decoder_input_ids=torch.tensor([dec])).logits[0].numpy()
    ours = model.logits(src_ids, decoder_input_ids=dec)
    assert np.abs(ours - hf).max() <= 1e-4 + 2e-3 * np.abs(hf).max()
    direct = edgeformer.load(str(src), threads=2)
    assert model.generate(src_ids, max_new_tokens=8, temperature=0).token_ids == \
        direct.generate(src_ids, max_new_tokens=8, temperature=0).token_ids
