"""Shared fixtures: tiny random checkpoints made with transformers (never downloaded), and the ISA
parametrization that runs model tests under every kernel set this CPU supports."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import edgeformer
from edgeformer import _core

# Every ISA this CPU supports; EDGEFORMER_ISA=name restricts the whole suite to that one.
ISAS = [os.environ["EDGEFORMER_ISA"]] if os.environ.get("EDGEFORMER_ISA") else _core.cpu_info()["supported_isas"]
_DEFAULT_ISA = _core.active_isa()


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per ISA (generic, avx2, avx512 where the CPU has them)."""
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(_DEFAULT_ISA)


CORPUS = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. "
    "To be or not to be, that is the question. All that glitters is not gold. Hello world, hello edge devices! "
    "Numbers 0123456789 and symbols: {}[]()<>+-*/=. Unicode: café, naïve, 日本語, emoji 🙂."
)


def pytest_configure(config):
    """The reference models are tiny: one torch thread is fastest, and never fights our threads for cores."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def make_tokenizer(out_dir: str, vocab_size: int = 300) -> None:
    """A byte-level BPE tokenizer trained on a few sentences, with <s> and </s> specials and a BOS template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    tmpl = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "chat_template": tmpl}, f)


def scale_weights(model, std: float = 0.08, seed: int = 0) -> None:
    """Random weights large enough that logits are not near zero (norm weights around 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # norm scales: every 1-D weight, and per-head q/k norms ([heads, head_dim], named *norm*)
            if name.endswith("weight") and (p.dim() == 1 or "norm" in name.split(".")[-2]):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def make_llama(out_dir: str, dtype: str = "float32", seed: int = 0, **overrides):
    """Saves a tiny random llama/mistral checkpoint (with tokenizer) and returns the HF model in float32
    holding exactly the saved (rounded) weights."""
    import torch
    import transformers

    kw = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False,
              bos_token_id=0, eos_token_id=None, pad_token_id=None)
    model_type = overrides.pop("model_type", "llama")
    kw.update(overrides)
    cls_cfg = transformers.MistralConfig if model_type == "mistral" else transformers.LlamaConfig
    cls = transformers.MistralForCausalLM if model_type == "mistral" else transformers.LlamaForCausalLM
    return make_model(out_dir, cls, cls_cfg(**kw), dtype=dtype, seed=seed)


def make_model(out_dir: str, cls, cfg, dtype: str = "float32", seed: int = 0):
    """Saves a random model of transformers class cls (weights scaled up) with a tokenizer; returns it in
    float32 holding exactly the saved (rounded) weights."""
    import torch

    torch.manual_seed(seed)
    model = cls(cfg).eval()
    scale_weights(model, seed=seed)
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(out_dir, safe_serialization=True)
    make_tokenizer(out_dir)
    return model.to(torch.float32).eval()


def reference_cache(tmp_path_factory, cases, prompt, n_greedy: int, make=None):
    """get(name) -> (checkpoint dir, transformers' logits on prompt, its n_greedy greedy tokens) for the tiny model
    cases()[name] = (transformers class, config) makes (or make(dir, name) saves and returns), each made once per
    module."""
    cache = {}

    def get(name):
        if name not in cache:
            d = tmp_path_factory.mktemp(name)
            ref = make(str(d), name) if make else make_model(str(d), *cases()[name])
            cache[name] = (str(d), hf_logits(ref, prompt), hf_greedy(ref, prompt, n_greedy))
        return cache[name]

    return get


def hf_logits(model, ids) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def hf_greedy(model, ids, n: int):
    import torch

    x = torch.tensor([ids])
    with torch.no_grad():  # an explicit mask: pad_token_id must not mask out real tokens
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=model.config.get_text_config().vocab_size - 1)
    return out[0, len(ids):].tolist()


def ef_greedy(model, ids, n: int):
    """Our model's n greedy tokens after ids (EOS ignored), as hf_greedy gives transformers'."""
    return model.generate(ids, max_new_tokens=n, temperature=0, ignore_eos=True).token_ids


def assert_logits_close(ours: np.ndarray, ref: np.ndarray, rel: float = 2e-3, abs_: float = 1e-4) -> None:
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    bound = abs_ + rel * float(np.abs(ref).max())
    err = float(np.abs(ours - ref).max())
    assert err <= bound, f"max |ours - transformers| = {err:.3g} > bound {bound:.3g}"


def gguf_roundtrip(path: str, tmp_path, prompt, kind: str = "q8_0"):
    """A checkpoint written as GGUF of `kind` and loaded back: (the checkpoint quantized at load, the file loaded,
    the file's path), the two models' logits on prompt asserted equal."""
    out = tmp_path / "m.gguf"
    edgeformer.quantize(path, str(out), kind)
    direct = edgeformer.load(path, dtype=kind, threads=2, max_context=64)
    back = edgeformer.load(str(out), threads=2, max_context=64)
    np.testing.assert_array_equal(back.logits(prompt), direct.logits(prompt))
    return direct, back, out


def prompt_ids(n: int = 32, vocab: int = 300, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [0] + rng.integers(2, vocab, size=n - 1).tolist()


# llama.cpp's 1- to 3-bit i-quants and their block bytes (256 elements each)
GRID_BYTES = {"iq2_xxs": 66, "iq2_xs": 74, "iq2_s": 82, "iq3_xxs": 98, "iq3_s": 110, "iq1_s": 50, "iq1_m": 56}


def random_grid_blocks(name: str, rows: int, blocks: int, d_scale: float = 0.01, seed: int = 0) -> np.ndarray:
    """Random i-quant blocks: every bit pattern of indices, signs and scales is a valid block; the f16 d set to a
    finite value of about d_scale (iq1_m spreads its d over the top nibbles of its four u16 scales)."""
    g = np.random.default_rng(seed)
    nbytes = GRID_BYTES[name]
    raw = g.integers(0, 256, size=(rows * blocks, nbytes), dtype=np.uint8)
    d = (g.standard_normal(rows * blocks) * d_scale).astype(np.float16).view(np.uint16)
    if name == "iq1_m":
        sc = raw[:, 48:56].copy().view(np.uint16)
        for w in range(4):
            sc[:, w] = (sc[:, w] & 0x0FFF) | (((d >> (4 * w)) & 0xF) << 12)
        raw[:, 48:56] = sc.view(np.uint8)
    else:
        raw[:, 0:2] = d.view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, blocks * nbytes)


def copy_gguf(src, dst, meta=None, tensors=lambda name, data, kind: [(name, data, kind)]):
    """Rewrites a GGUF file: metadata values replaced from meta (None: dropped; keys the file lacks: added, as
    uint32), each tensor through tensors(name, raw data, GGML type) -> [(name, raw data, GGML type)]."""
    import gguf

    r = gguf.GGUFReader(str(src))
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    w = gguf.GGUFWriter(str(dst), arch)
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        v = (meta or {}).get(f.name, f.contents())
        if v is None:
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_array(f.name, list(v))
        else:
            w.add_key_value(f.name, v, f.types[0])
    for k, v in (meta or {}).items():
        if k not in r.fields and v is not None:
            w.add_key_value(k, v, gguf.GGUFValueType.UINT32)
    for t in r.tensors:
        for name, data, kind in tensors(t.name, np.array(t.data), t.tensor_type):
            w.add_tensor(name, np.ascontiguousarray(data), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
