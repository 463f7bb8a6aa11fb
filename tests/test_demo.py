"""The bundled demo model: it loads, equals transformers greedily for 32 tokens, and `edgeformer demo`
and `edgeformer run` (no model: the bundled one) work."""

from __future__ import annotations

import os
import subprocess
import sys

import edgeformer

from conftest import hf_greedy


def test_bundled_model_is_shipped_and_small():
    path = edgeformer.demo_model_path()
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert os.path.exists(os.path.join(path, f)), f
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    assert size <= 16 * 2**20, size


def test_bundled_model_greedy_equals_transformers():
    import transformers

    path = edgeformer.demo_model_path()
    model = edgeformer.load(path, threads=2)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    for prompt in ("The Python interpreter", "A list comprehension"):
        ids = model.tokenizer.encode(prompt).ids
        ours = model.generate(ids, max_new_tokens=32, temperature=0, ignore_eos=True).token_ids
        assert ours == hf_greedy(ref, ids, 32)
    text = model.generate("The Python interpreter", max_new_tokens=32, temperature=0).text
    words = text.split()
    assert len(words) >= 8 and sum(w.strip(".,:;()").isalpha() for w in words) >= 0.6 * len(words), text


def test_demo_command_runs():
    r = subprocess.run([sys.executable, "-m", "edgeformer", "demo", "--threads", "2"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Text generation" in r.stdout and "tok/s" in r.stdout
    assert "Semantic search" in r.stdout
    assert "readlines()" in r.stdout or "pip install" in r.stdout


def test_run_without_a_model_uses_the_bundled_one():
    r = subprocess.run([sys.executable, "-m", "edgeformer", "run", "The Python", "-n", "8", "--temperature", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The Python") and len(r.stdout.split()) > 3
    assert "decode: 8 tokens" in r.stderr
