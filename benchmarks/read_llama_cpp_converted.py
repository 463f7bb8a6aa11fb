#!/usr/bin/env python3
"""Do we read the GGUF files people download as transformers computes the checkpoint? llama.cpp's own converter
(convert_hf_to_gguf.py from a llama.cpp source tree) on tiny random checkpoints of the test suite's cases (its
tokenizer check and Jamba's and Gemma 4's vocabularies bypassed: the checkpoints carry make_checkpoints' byte-level BPE),
written as f32, then loaded by edgeformer: the NMSE of our logits against transformers'. A convention we read
wrong shows as an NMSE near 1. (agree_llama_cpp_archs.py checks the other direction: llama.cpp on our files.)

    python benchmarks/read_llama_cpp_converted.py [CASE ...] --llama-cpp-src .../vendor/llama.cpp

CASEs: tests/test_hybrid.py's cases, gpt_bigcode and gemma4_{e2b,31b,rows} (tests/test_gemma4.py's). Not a test: llama.cpp's source is not a test dependency.
Session 17's run: benchmarks/results/read-llama-cpp-converted-s17.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

DEFAULT = ["nemotron_h_moe", "mamba2", "mamba", "falcon_mamba", "falcon_h1", "falcon_h1_norm", "jamba", "gpt_bigcode",
           "granite_hybrid", "lfm2"]
# the layer type names the published checkpoints use where transformers 5 saves others (llama.cpp's converter
# looks for these: with transformers' own it marks no layer as attention)
HUB_NAMES = {"granite_hybrid": {"layer_types": {"full_attention": "attention", "linear_attention": "mamba"}}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--llama-cpp-src", required=True, help="a llama.cpp source tree (convert_hf_to_gguf.py)")
    ap.add_argument("--out", default=None, help="markdown file for the table")
    a = ap.parse_args()
    import transformers as tf

    import edgeformer
    import test_hybrid
    from conftest import hf_logits, make_model, prompt_ids
    from make_checkpoints import make_tokenizer

    cases = test_hybrid._cases()
    cases["gpt_bigcode"] = (tf.GPTBigCodeForCausalLM, tf.GPTBigCodeConfig(
        n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=320, multi_query=True, bos_token_id=0,
        eos_token_id=1))
    import test_gemma4

    for c in test_gemma4.CASES:  # (E2B's and 31B's shapes, and heads of 24 and 40)
        cases["gemma4_" + c] = (tf.Gemma4ForCausalLM, tf.Gemma4TextConfig(**{**test_gemma4.BASE,
                                                                            **test_gemma4.CASES[c]}))
    sys.path.insert(0, a.llama_cpp_src)
    import convert_hf_to_gguf as conv
    from conversion import base, gemma, jamba

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
    jamba.JambaModel.set_vocab = lambda self: self._set_vocab_gpt2()
    gemma.Gemma4Model.set_vocab = lambda self: self._set_vocab_gpt2()
    prompt = prompt_ids(32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.cases or DEFAULT:
            cls, cfg = cases[name]
            d = os.path.join(tmp, name)
            model = make_model(d, cls, cfg)
            make_tokenizer(d, cfg.vocab_size if hasattr(cfg, "vocab_size") else cfg.text_config.vocab_size)
            if name in HUB_NAMES:
                with open(os.path.join(d, "config.json")) as f:
                    config = json.load(f)
                for field, rename in HUB_NAMES[name].items():
                    config[field] = [rename.get(v, v) for v in config[field]]
                with open(os.path.join(d, "config.json"), "w") as f:
                    json.dump(config, f)
            ref = hf_logits(model, prompt)
            sys.argv = ["convert_hf_to_gguf.py", d, "--outfile", d + ".gguf", "--outtype", "f32"]
            try:
                conv.main()
                ours = edgeformer.load(d + ".gguf", threads=2, max_context=64, kv_dtype="f32").logits(prompt)
            except (Exception, SystemExit) as e:  # (reported, not raised: one case's failure is a finding)
                rows.append((name, f"{type(e).__name__}: {e}"[:160].replace("|", "/")))
                print(*rows[-1], flush=True)
                continue
            ours = ours[:, :ref.shape[1]]
            rows.append((name, f"{float(((ours - ref) ** 2).sum() / (ref ** 2).sum()):.2g}"))
            print(*rows[-1], flush=True)
    md = [f"llama.cpp's convert_hf_to_gguf.py ({a.llama_cpp_src}), f32 files of tiny random checkpoints, read by "
          f"edgeformer {edgeformer.__version__}; a 32-token prompt, logits NMSE against transformers", "",
          "| case | ours (llama.cpp's file) vs transformers |", "|---|---|"]
    md += [f"| {n} | {v} |" for n, v in rows]
    print("\n".join(md))
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
