"""RoBERTa, XLM-RoBERTa and CamemBERT encoders, and sequence classification heads (BERT's and RoBERTa's), against
transformers on tiny random checkpoints: hidden states of padded batches (positions counted past the padding, as
transformers counts them), embed(), and classify() on token ids, texts and text pairs."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import edgeformer

from conftest import CORPUS, assert_logits_close, make_model

ENCODERS = {  # model_type -> (config class, model class, classification class)
    "roberta": ("RobertaConfig", "RobertaModel", "RobertaForSequenceClassification"),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", "XLMRobertaForSequenceClassification"),
    "camembert": ("CamembertConfig", "CamembertModel", "CamembertForSequenceClassification"),
    "bert": ("BertConfig", "BertModel", "BertForSequenceClassification"),
    "mpnet": ("MPNetConfig", "MPNetModel", "MPNetForSequenceClassification"),
    "distilbert": ("DistilBertConfig", "DistilBertModel", "DistilBertForSequenceClassification"),
    "modernbert": ("ModernBertConfig", "ModernBertModel", "ModernBertForSequenceClassification"),
}
PAD = 1


def encoder_config(model_type: str, **kw):
    import transformers as tf

    base = dict(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                max_position_embeddings=66, pad_token_id=PAD, bos_token_id=0, eos_token_id=2,
                type_vocab_size=2 if model_type == "bert" else 1)
    if model_type == "distilbert":  # (its own field names)
        for a, b in (("hidden_size", "dim"), ("num_hidden_layers", "n_layers"), ("num_attention_heads", "n_heads"),
                     ("intermediate_size", "hidden_dim")):
            base[b] = base.pop(a)
        base.pop("type_vocab_size")
    if model_type == "modernbert":  # (4 layers: the first and the fourth global, the others see 4 keys either way;
        # a rotary base per kind, biases in the norms and on the classifier's dense layer)
        base.pop("type_vocab_size")
        base.update(num_hidden_layers=4, local_attention=8, global_rope_theta=1000.0, local_rope_theta=100.0,
                    cls_token_id=0, sep_token_id=2, norm_bias=True, classifier_bias=True)
    base.update(kw)
    return getattr(tf, ENCODERS[model_type][0])(**base)


def pair_tokenizer(out_dir: str, bert: bool) -> None:
    """A BPE tokenizer with RoBERTa's specials (<s> 0, <pad> 1, </s> 2) and its pair template, or BERT's (one
    separator, second text of token type 1)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer)
    specials = [("<s>", 0), ("</s>", 2)]
    if bert:
        post = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1", special_tokens=specials)
    else:
        post = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=specials)
    tok.post_processor = post
    tok.save(os.path.join(out_dir, "tokenizer.json"))


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    cache = {}

    def get(model_type, head=False):
        key = (model_type, head)
        if key not in cache:
            import transformers as tf

            d = str(tmp_path_factory.mktemp(model_type + ("_cls" if head else "")))
            names = ENCODERS[model_type]
            cfg = encoder_config(model_type, num_labels=3 if model_type == "bert" else 1)
            if head and model_type == "bert":
                cfg.id2label = {0: "contradiction", 1: "entailment", 2: "neutral"}
                cfg.label2id = {v: k for k, v in cfg.id2label.items()}
            ref = make_model(d, getattr(tf, names[2] if head else names[1]), cfg)
            pair_tokenizer(d, model_type in ("bert", "distilbert"))
            cache[key] = (d, ref)
        return cache[key]

    return get


def padded_batch(rng, lengths, left=False):
    T = max(lengths)
    ids = np.full((len(lengths), T), PAD, np.int64)
    mask = np.zeros((len(lengths), T), np.int64)
    for b, n in enumerate(lengths):
        sl = slice(T - n, T) if left else slice(0, n)
        ids[b, sl] = rng.integers(3, 300, n)
        mask[b, sl] = 1
    return ids, mask


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "camembert"])
def test_roberta_family_hidden_states(isa, encoders, model_type):
    """Every position of right- and left-padded batches (padding included: its position is the padding row, as in
    transformers), and a sequence that holds the padding id among its tokens."""
    import torch

    path, ref = encoders(model_type)
    model = edgeformer.load(path, threads=2)
    assert model.max_context == 64  # 66 rows: the padding id's row and the one before it are no token's
    rng = np.random.default_rng(3)
    for left in (False, True):
        ids, mask = padded_batch(rng, [23, 9, 64 if not left else 17], left)
        with torch.no_grad():
            hf = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
        ours = model.hidden_states(ids, attention_mask=mask)
        assert_logits_close(ours, hf)
    ids = rng.integers(3, 300, 12)
    ids[5] = PAD  # counted as padding by its position (transformers'), attended as a token
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor(ids[None])).last_hidden_state.numpy()[0]
    assert_logits_close(model.hidden_states(ids), hf)
    with pytest.raises(ValueError, match="64"):
        model.hidden_states(rng.integers(3, 300, 65))


def test_roberta_embed_mean_pooling(encoders):
    import torch

    path, ref = encoders("xlm-roberta")
    model = edgeformer.load(path, threads=2)
    texts = ["the quick brown fox", "a tokenizer trained on a few sentences"]
    vecs = model.embed(texts, pooling="mean", normalize=True)
    tok = model.tokenizer
    for i, t in enumerate(texts):
        ids = tok.encode(t).ids
        assert ids[0] == 0 and ids[-1] == 2
        with torch.no_grad():
            h = ref(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0).numpy()
        h /= np.linalg.norm(h)
        assert float(vecs[i] @ h) > 0.99999


@pytest.mark.parametrize("model_type", ["mpnet", "distilbert", "modernbert"])
def test_mpnet_distilbert_modernbert_hidden_states(isa, encoders, model_type):
    """MPNet (positions past the padding, a bucketed relative bias beside them), DistilBERT and ModernBERT (rotary
    with a base per layer kind, windows both ways on the local layers, no norm before layer 0's attention): every
    position of right- and left-padded batches, and a sequence as long as the model."""
    import torch

    path, ref = encoders(model_type)
    model = edgeformer.load(path, threads=2)
    assert model.max_context == {"mpnet": 64}.get(model_type, 66)
    rng = np.random.default_rng(5)
    for left in (False, True):
        ids, mask = padded_batch(rng, [23, 9, 5, 17], left)
        with torch.no_grad():
            hf = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
        assert_logits_close(model.hidden_states(ids, attention_mask=mask), hf)
    ids = rng.integers(3, 300, model.max_context)
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor(ids[None])).last_hidden_state.numpy()[0]
    assert_logits_close(model.hidden_states(ids), hf)


def test_modernbert_configs(encoders, tmp_path):
    """transformers 4's fields (global_attn_every_n_layers, global_rope_theta, local_rope_theta) read as the same
    model; no biases (norm_bias false, as ModernBERT's checkpoints have them); fields checked by name."""
    import json

    import torch
    import transformers as tf

    path, ref = encoders("modernbert")
    ids = np.random.default_rng(8).integers(3, 300, 30)
    want = edgeformer.load(path).hidden_states(ids)
    d = tmp_path / "old"
    shutil.copytree(path, d)
    cfg = json.loads((d / "config.json").read_text())
    for k in ("layer_types", "rope_parameters"):
        del cfg[k]
    cfg.update(global_attn_every_n_layers=3, global_rope_theta=1000.0, local_rope_theta=100.0)
    (d / "config.json").write_text(json.dumps(cfg))
    np.testing.assert_array_equal(edgeformer.load(str(d)).hidden_states(ids), want)
    for field, value, match in (("layer_types", ["full_attention"] * 3, "layer_types"),
                                ("global_attn_every_n_layers", 0, "global_attn_every_n_layers"),
                                ("local_attention", -8, "local_attention")):
        bad = dict(cfg, **{field: value})
        (d / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            edgeformer.load(str(d))
    nb = str(tmp_path / "nobias")
    ref2 = make_model(nb, tf.ModernBertModel, encoder_config("modernbert", norm_bias=False))
    with torch.no_grad():
        hf = ref2(input_ids=torch.tensor(ids[None])).last_hidden_state.numpy()[0]
    assert_logits_close(edgeformer.load(nb).hidden_states(ids), hf)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "mpnet", "modernbert"])
def test_packed_batches(isa, encoders, model_type):
    """Short inputs run packed several to a pass (each attending within itself, its positions from 0): a batch of
    many padded rows agrees with transformers row by row, and the packed pass with each input run alone."""
    import torch

    path, ref = encoders(model_type)
    model = edgeformer.load(path, threads=2)
    rng = np.random.default_rng(6)
    ids, mask = padded_batch(rng, [int(n) for n in rng.integers(1, 20, 12)], left=True)  # (20 a pass: 3 rows)
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    ours = model.hidden_states(ids, attention_mask=mask)
    for b in range(len(ids)):
        assert_logits_close(ours[b][mask[b] == 1], hf[b][mask[b] == 1])
    seqs = [rng.integers(3, 300, n).astype(np.int32) for n in (5, 17, 1, 30)]
    alone = [model.hidden_states(x) for x in seqs]
    packed = model._encode(seqs)
    for a, p in zip(alone, packed):
        np.testing.assert_allclose(p, a, rtol=0, atol=1e-5)
    core = model._core
    for bad, what in (([5, 17], "sum to 22"), ([0, 53], "length 0"), ([60, -7], "past the 53"),
                      ([50, -7, 10], "sequence 1 has length -7")):
        with pytest.raises(ValueError, match=f"seg_lens: .*{what}"):
            core.hidden_states(np.concatenate(seqs), seg_lens=np.asarray(bad, np.int32))


def test_packing_is_for_encoders(tmp_path):
    import transformers as tf

    path = str(tmp_path / "llama")
    make_model(path, tf.LlamaForCausalLM, tf.LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                         num_attention_heads=2, intermediate_size=64))
    core = edgeformer.load(path)._core
    with pytest.raises(ValueError, match="encoders only"):
        core.hidden_states(np.arange(6, dtype=np.int32), seg_lens=np.asarray([3, 3], np.int32))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_modernbert_classify(encoders, tmp_path, pooling):
    """ModernBERT's head: a dense layer, GELU and a LayerNorm over the first token's state or the tokens' mean."""
    import torch
    import transformers as tf

    path = str(tmp_path / pooling)
    ref = make_model(path, tf.ModernBertForSequenceClassification,
                     encoder_config("modernbert", num_labels=2, classifier_pooling=pooling))
    pair_tokenizer(path, False)
    model = edgeformer.load(path, threads=2)
    rng = np.random.default_rng(9)
    seqs = [list(rng.integers(3, 300, n)) for n in (5, 21, 40)]
    ours = model.classify(seqs)
    for i, ids in enumerate(seqs):
        with torch.no_grad():
            hf = ref(input_ids=torch.tensor([ids])).logits.numpy()[0]
        assert_logits_close(ours[i], hf)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "xlm-roberta", "mpnet", "distilbert"])
def test_classify_pairs_and_ids(isa, encoders, model_type):
    """Logits of token ids, texts and (query, passage) pairs (BERT's second text of token type 1), and a pair
    longer than the model, cut as transformers' tokenizer cuts it (the longer text first)."""
    import torch
    from tokenizers import Tokenizer

    path, ref = encoders(model_type, head=True)
    model = edgeformer.load(path, threads=2)
    n_labels = 3 if model_type == "bert" else 1
    if model_type == "bert":
        assert model.labels == {0: "contradiction", 1: "entailment", 2: "neutral"}
    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tok.enable_truncation(model.max_context)  # (BERT: 66 positions; the RoBERTas 64)
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)
    inputs = ["the quick brown fox", ("what jumps?", "the quick brown fox jumps"), ("a short query", long),
              (long, long + " again")]
    ours = model.classify(inputs)
    assert ours.shape == (len(inputs), n_labels)
    for i, it in enumerate(inputs):
        enc = tok.encode(*it) if isinstance(it, tuple) else tok.encode(it)
        assert len(enc.ids) <= model.max_context
        kw = {"token_type_ids": torch.tensor([enc.type_ids])} if model_type == "bert" else {}
        with torch.no_grad():
            hf = ref(input_ids=torch.tensor([enc.ids]), **kw).logits.numpy()[0]
        assert_logits_close(ours[i], hf)
    if model_type == "bert":  # the token types matter: without them the pair gives other logits
        enc = tok.encode(*inputs[1])
        with torch.no_grad():
            hf0 = ref(input_ids=torch.tensor([enc.ids])).logits.numpy()[0]
        assert np.abs(hf0 - ours[1]).max() > 1e-3
    ids = [0, 57, 88, 190, 2]
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor([ids])).logits.numpy()[0]
    assert_logits_close(model.classify([ids])[0], hf)


def test_classify_errors(encoders, tmp_path):
    path, _ = encoders("roberta")
    model = edgeformer.load(path, threads=2)
    with pytest.raises(ValueError, match="no sequence-classification head"):
        model.classify("text")
    assert model.labels == {}
    path, _ = encoders("roberta", head=True)
    model = edgeformer.load(path, threads=2)
    for bad in ([], [("a", "b", "c")], [("a", 3)], [[]]):
        with pytest.raises(ValueError, match="inputs"):
            model.classify(bad)
    # a head tensor missing from the checkpoint is named at load
    import json

    from safetensors.numpy import load_file, save_file

    d = tmp_path / "broken"
    d.mkdir()
    for f in os.listdir(path):
        if f != "model.safetensors":
            (d / f).write_bytes(open(os.path.join(path, f), "rb").read())
    tensors = load_file(os.path.join(path, "model.safetensors"))
    del tensors["classifier.out_proj.bias"]
    save_file(tensors, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match="classifier.out_proj.bias"):
        edgeformer.load(str(d))
    cfg = json.loads((d / "config.json").read_text())
    cfg["pad_token_id"] = 70
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="pad_token_id"):
        edgeformer.load(str(d))


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
def test_roberta_gguf_roundtrip(encoders, model_type, tmp_path):
    """Written as llama.cpp writes them (its BERT architecture, the position rows before the first token's
    dropped): read back, the same states as transformers for a sequence without padding, and the same tokens."""
    import gguf
    import torch

    path, ref = encoders(model_type)
    out = str(tmp_path / "m.gguf")
    edgeformer.quantize(path, out, "f32")
    r = gguf.GGUFReader(out)
    assert bytes(r.fields["general.architecture"].parts[-1]).decode() == "bert"
    assert int(r.fields["bert.context_length"].parts[-1][0]) == 64
    pos = next(t for t in r.tensors if t.name == "position_embd.weight")
    assert list(pos.shape)[::-1] == [64, 64]
    model = edgeformer.load(out, threads=2)
    assert model.spec.model_type == "bert" and model.max_context == 64
    ids = np.random.default_rng(4).integers(3, 300, 64)
    with torch.no_grad():
        hf = ref(input_ids=torch.tensor(ids[None])).last_hidden_state.numpy()[0]
    assert_logits_close(model.hidden_states(ids), hf)
    text = "the quick brown fox"
    assert model.tokenizer.encode(text).ids == edgeformer.load(path).tokenizer.encode(text).ids


def embedding_gemma(path: str):
    """A tiny EmbeddingGemma: Gemma 3 with use_bidirectional_attention (sliding layers see |i - j| <= 4)."""
    import json

    import transformers as tf

    cfg = tf.Gemma3TextConfig(vocab_size=320, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, intermediate_size=96, max_position_embeddings=128,
                              sliding_window=8, use_bidirectional_attention=True, pad_token_id=PAD,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                           "sliding_attention"])
    ref = make_model(path, tf.Gemma3TextModel, cfg)
    pair_tokenizer(path, False)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                   "pad_token": "<pad>"}, f)
    return ref


def test_embedding_gemma_hidden_states(isa, tmp_path):
    """Gemma 3 with use_bidirectional_attention runs as an encoder: full layers see every token, sliding layers the
    keys within half the configured window either side; padded batches and packed inputs as transformers."""
    import torch

    path = str(tmp_path / "eg")
    ref = embedding_gemma(path)
    model = edgeformer.load(path, threads=2)
    assert model.is_encoder and list(model.spec.layer_windows) == [5, 5, 0, 5]
    rng = np.random.default_rng(10)
    for left in (False, True):
        ids, mask = padded_batch(rng, [20, 9, 3, 14], left)
        with torch.no_grad():
            hf = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
        ours = model.hidden_states(ids, attention_mask=mask)
        for b in range(len(ids)):
            assert_logits_close(ours[b][mask[b] == 1], hf[b][mask[b] == 1])
    with pytest.raises(ValueError, match="encoder"):
        model.generate([5, 6, 7], max_new_tokens=2)


def test_sentence_transformers_dense_modules(tmp_path):
    """Dense modules after the pooling (EmbeddingGemma's projections): embed() equals sentence-transformers'
    encode(); a Dense module that cannot be read is named."""
    import json

    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # (sentence-transformers before 6)
        from sentence_transformers import models

    src = str(tmp_path / "eg")
    embedding_gemma(src)
    st = SentenceTransformer(modules=[models.Transformer(src), models.Pooling(64, "mean"),
                                      models.Dense(64, 96, bias=False, activation_function=torch.nn.Identity()),
                                      models.Dense(96, 48, bias=True, activation_function=torch.nn.Tanh()),
                                      models.Normalize()], device="cpu")
    path = str(tmp_path / "st")
    st.save(path)
    texts = ["the quick brown fox", "a tokenizer trained on a few sentences", "x", "jumps over the lazy dog " * 5]
    ref = st.encode(texts)
    ours = edgeformer.load(path, threads=2).embed(texts)
    assert ours.shape == (4, 48)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5)
    dense = os.path.join(path, "3_Dense")
    cfg = json.loads(open(os.path.join(dense, "config.json")).read())
    for change, match in (({"activation_function": "torch.nn.modules.activation.Softsign"}, "Softsign"),):
        with open(os.path.join(dense, "config.json"), "w") as f:
            json.dump(dict(cfg, **change), f)
        with pytest.raises(ValueError, match=match):
            edgeformer.load(path).embed(texts)
    with open(os.path.join(dense, "config.json"), "w") as f:
        json.dump(cfg, f)
    shutil.copy(os.path.join(path, "2_Dense", "model.safetensors"), os.path.join(dense, "model.safetensors"))
    with pytest.raises(ValueError, match=r"3_Dense.*linear.weight.*\[out, 96\]"):
        edgeformer.load(path).embed(texts)
    os.remove(os.path.join(dense, "model.safetensors"))
    with pytest.raises(ValueError, match="3_Dense: a Dense module without model.safetensors"):
        edgeformer.load(path).embed(texts)
