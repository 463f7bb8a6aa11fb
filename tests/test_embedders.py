"""Decoder embedders (Qwen3-Embedding, gte-Qwen2, e5-mistral: a decoder saved by sentence-transformers as its bare
base model, no head) and sentence-transformers' pooling modes, against sentence-transformers' encode() on tiny
random checkpoints."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import edgeformer

from conftest import make_model
from test_encoders import pair_tokenizer

TEXTS = ["the quick brown fox", "a tokenizer trained on a few sentences", "x", "jumps over the lazy dog " * 5]


def st_modules():
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # (sentence-transformers before 6)
        from sentence_transformers import models as modules
    return modules


def bare_decoder(path: str, arch: str):
    """A base model without its head (Qwen3Model / MistralModel), untied, with a byte-level BPE tokenizer."""
    import transformers as tf

    kw = dict(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=96, max_position_embeddings=128, tie_word_embeddings=False)
    cfg, cls = ((tf.Qwen3Config(head_dim=16, **kw), tf.Qwen3Model) if arch == "qwen3" else
                (tf.MistralConfig(sliding_window=None, **kw), tf.MistralModel))
    make_model(path, cls, cfg)
    pair_tokenizer(path, False)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                   "pad_token": "<pad>"}, f)


@pytest.mark.parametrize("arch,pooling", [("qwen3", "lasttoken"), ("qwen3", "mean"), ("mistral", "lasttoken"),
                                          ("qwen3", "weightedmean"), ("qwen3", "mean_sqrt_len_tokens"),
                                          ("qwen3", "max"), ("qwen3", "cls")])
def test_bare_decoder_embedders(tmp_path, arch, pooling):
    """The bare base model loads (its unprefixed tensors found, no head: generate() refused by name) and embed()
    equals sentence-transformers' encode() for each pooling mode it writes (6.x's "pooling_mode")."""
    from sentence_transformers import SentenceTransformer

    m = st_modules()
    src = str(tmp_path / "base")
    bare_decoder(src, arch)
    st = SentenceTransformer(modules=[m.Transformer(src), m.Pooling(64, pooling), m.Normalize()], device="cpu")
    path = str(tmp_path / "st")
    st.save(path)
    model = edgeformer.load(path, threads=2)
    assert model.spec.no_head and not model.is_encoder
    np.testing.assert_allclose(model.embed(TEXTS), st.encode(TEXTS), rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="no language-model head"):
        model.generate([5, 6, 7], max_new_tokens=2)


def test_pooling_configs(tmp_path):
    """Pooling configs as sentence-transformers 2-5 wrote them (one pooling_mode_<name> flag), and the ones we do
    not compute (several modes concatenated, an unknown mode) named with the file."""
    from edgeformer.embeddings import sentence_transformers_config

    d = tmp_path / "m"
    (d / "1_Pooling").mkdir(parents=True)
    (d / "modules.json").write_text(json.dumps([{"path": "", "type": "sentence_transformers.models.Transformer"},
                                                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    cfg = d / "1_Pooling" / "config.json"
    for flags, want in (({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
                        ({"pooling_mode_lasttoken": True}, "last"), ({}, "mean"),
                        ({"pooling_mode_weightedmean_tokens": True, "pooling_mode_mean_tokens": False}, "weighted_mean"),
                        ({"pooling_mode": "max"}, "max")):
        cfg.write_text(json.dumps({"word_embedding_dimension": 64, **flags}))
        assert sentence_transformers_config(str(d))[0] == want
    for flags, match in (({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, "cls_token \\+ mean"),
                         ({"pooling_mode": "attention"}, "attention")):
        cfg.write_text(json.dumps(flags))
        with pytest.raises(ValueError, match=f"1_Pooling.config.json: pooling {match}"):
            sentence_transformers_config(str(d))


def test_prompts(tmp_path):
    """Prompts as sentence-transformers' encode() applies them: prompt_name from config_sentence_transformers.json,
    its default_prompt_name when none is given, an explicit prompt over both; unknown names and a pooling that
    leaves the prompt out are named."""
    from sentence_transformers import SentenceTransformer

    m = st_modules()
    src = str(tmp_path / "base")
    bare_decoder(src, "qwen3")
    st = SentenceTransformer(modules=[m.Transformer(src), m.Pooling(64, "lasttoken"), m.Normalize()], device="cpu",
                             prompts={"query": "Instruct: find the passage\nQuery: ", "document": ""},
                             default_prompt_name="query")
    path = str(tmp_path / "st")
    st.save(path)
    model = edgeformer.load(path, threads=2)
    for kw in ({}, {"prompt_name": "document"}, {"prompt": "passage: "}, {"prompt_name": "query"}):
        np.testing.assert_allclose(model.embed(TEXTS, **kw), st.encode(TEXTS, **kw), rtol=0, atol=2e-5)
    assert np.abs(model.embed(TEXTS) - model.embed(TEXTS, prompt="")).max() > 1e-3  # (the default prompt counts)
    with pytest.raises(ValueError, match="prompt_name.*'search'.*'document', 'query'"):
        model.embed(TEXTS, prompt_name="search")


@pytest.mark.parametrize("pooling", ["lasttoken", "mean", "weightedmean", "cls", "max", "mean_sqrt_len_tokens"])
def test_prompt_left_out_of_the_pooling(tmp_path, pooling):
    """include_prompt: false (INSTRUCTOR-style checkpoints): the prompt's tokens, as sentence-transformers counts
    them (the prompt tokenized alone, less a closing special token), are not pooled: cls takes the first token
    after them, weightedmean keeps each token's weight by its position; token-id inputs take no prompt."""
    from sentence_transformers import SentenceTransformer

    m = st_modules()
    src = str(tmp_path / "base")
    bare_decoder(src, "qwen3")
    st = SentenceTransformer(modules=[m.Transformer(src), m.Pooling(64, pooling, include_prompt=False), m.Normalize()],
                             device="cpu", prompts={"query": "Instruct: find the passage\nQuery: "},
                             default_prompt_name="query")
    path = str(tmp_path / "st")
    st.save(path)
    model = edgeformer.load(path, threads=2)
    ours = model.embed(TEXTS)
    np.testing.assert_allclose(ours, st.encode(TEXTS), rtol=0, atol=2e-5)
    with_prompt = SentenceTransformer(modules=[m.Transformer(src), m.Pooling(64, pooling), m.Normalize()],
                                      device="cpu").encode(TEXTS, prompt="Instruct: find the passage\nQuery: ")
    if pooling != "lasttoken":  # (leaving the prompt out changes the embedding, but for the last token's)
        assert np.abs(ours - with_prompt).max() > 1e-3
    np.testing.assert_allclose(model.embed(TEXTS, prompt=""), st.encode(TEXTS, prompt=""), rtol=0, atol=2e-5)


def test_older_sentence_transformers_layout(tmp_path):
    """The layout sentence-transformers 0.x-2.x wrote (distiluse-base-multilingual-cased ...): modules.json at the
    top, the model, its tokenizer and sentence_bert_config.json in 0_Transformer/, then Pooling, a Dense with tanh
    and Normalize: loaded from the top folder, embed() equals encode()."""
    import shutil

    from sentence_transformers import SentenceTransformer

    m = st_modules()
    src = str(tmp_path / "base")
    bare_decoder(src, "qwen3")
    st = SentenceTransformer(modules=[m.Transformer(src, max_seq_length=12), m.Pooling(64, "mean"),
                                      m.Dense(64, 32, activation_function=__import__("torch").nn.Tanh()),
                                      m.Normalize()], device="cpu")
    path = tmp_path / "st"
    st.save(str(path))
    sub = path / "0_Transformer"
    sub.mkdir()
    for f in os.listdir(path):
        if os.path.isfile(path / f) and f not in ("modules.json", "config_sentence_transformers.json", "README.md"):
            shutil.move(str(path / f), str(sub / f))
    mods = json.loads((path / "modules.json").read_text())
    mods[0]["path"] = "0_Transformer"
    (path / "modules.json").write_text(json.dumps(mods))
    ref = SentenceTransformer(str(path), device="cpu")
    model = edgeformer.load(str(path), threads=2)
    ours = model.embed(TEXTS)
    assert ours.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(ours, ref.encode(TEXTS), rtol=0, atol=2e-5)  # (max_seq_length 12: the long text cut)
