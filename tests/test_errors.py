"""Bad input raises a clear ValueError that names the file, tensor, field or argument; never a crash.

Checkpoints here are tiny and written with NumPy (no torch): config.json + model.safetensors, no tokenizer,
so prompts are lists of token ids.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import edgeformer
from edgeformer import _core
from edgeformer.io import save_safetensors

CONFIG = {
    "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
}
V, H, F, L = CONFIG["vocab_size"], CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["num_hidden_layers"]
KD = CONFIG["num_key_value_heads"] * (H // CONFIG["num_attention_heads"])  # 16


def make_tensors(seed: int = 0):
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    t = {"model.embed_tokens.weight": w(V, H), "model.norm.weight": 1 + w(H), "lm_head.weight": w(V, H)}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + w(H)
        t[p + "post_attention_layernorm.weight"] = 1 + w(H)
        t[p + "self_attn.q_proj.weight"] = w(H, H)
        t[p + "self_attn.k_proj.weight"] = w(KD, H)
        t[p + "self_attn.v_proj.weight"] = w(KD, H)
        t[p + "self_attn.o_proj.weight"] = w(H, H)
        t[p + "mlp.gate_proj.weight"] = w(F, H)
        t[p + "mlp.up_proj.weight"] = w(F, H)
        t[p + "mlp.down_proj.weight"] = w(H, F)
    return t


def write_config(d, config=None):
    with open(os.path.join(str(d), "config.json"), "w") as f:
        json.dump(CONFIG if config is None else config, f)


def write_checkpoint(d, tensors=None, config=None) -> str:
    os.makedirs(str(d), exist_ok=True)
    write_config(d, config)
    save_safetensors(make_tensors() if tensors is None else tensors, os.path.join(str(d), "model.safetensors"))
    return str(d)


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def model(good_dir):
    return edgeformer.load(good_dir, threads=2, max_context=16)


def esc(s: str) -> str:
    return re.escape(str(s))


# -- config.json --------------------------------------------------------------------------------------

def test_no_config_json(tmp_path):
    save_safetensors(make_tensors(), str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=esc(tmp_path) + r".*config\.json"):
        edgeformer.load(str(tmp_path))


@pytest.mark.parametrize("text, why", [
    ('{"model_type": "llama", "hidden_size": ', "not valid JSON"),
    ("this is not json", "not valid JSON"),
    ("[1, 2, 3]", "JSON object"),
    ('"llama"', "JSON object"),
])
def test_config_not_a_json_object(tmp_path, text, why):
    write_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=esc(tmp_path / "config.json") + ".*" + why):
        edgeformer.load(str(tmp_path))


def test_config_not_utf8(tmp_path):
    write_checkpoint(tmp_path)
    (tmp_path / "config.json").write_bytes(b'\xff\xfe{"model_type": "llama"}')
    with pytest.raises(ValueError, match=esc(tmp_path / "config.json")):
        edgeformer.load(str(tmp_path))


def test_unknown_model_type(tmp_path):
    write_checkpoint(tmp_path, config=dict(CONFIG, model_type="gpt_neo_x9"))
    with pytest.raises(ValueError, match=r"config\.json.*'model_type'.*gpt_neo_x9"):
        edgeformer.load(str(tmp_path))


def test_missing_model_type(tmp_path):
    cfg = dict(CONFIG)
    del cfg["model_type"]
    write_checkpoint(tmp_path, config=cfg)
    with pytest.raises(ValueError, match=r"config\.json.*'model_type'.*missing"):
        edgeformer.load(str(tmp_path))


@pytest.mark.parametrize("field, value, named", [
    ("hidden_size", "abc", "hidden_size"),
    ("hidden_size", 32.5, "hidden_size"),
    ("hidden_size", True, "hidden_size"),
    ("num_attention_heads", 0, "num_attention_heads"),
    ("num_attention_heads", -4, "num_attention_heads"),
    ("num_attention_heads", 5, "num_attention_heads"),  # does not divide hidden_size 32
    ("num_key_value_heads", 3, "num_key_value_heads"),  # does not divide num_attention_heads 4
    ("vocab_size", None, "vocab_size"),  # required
    ("intermediate_size", [64], "intermediate_size"),
    ("rms_norm_eps", "tiny", "rms_norm_eps"),
    ("rms_norm_eps", 0.0, "rms_norm_eps"),
    ("rope_theta", -1.0, "rope_theta"),
    ("hidden_act", "swishy", "hidden_act"),
    ("tie_word_embeddings", "yes", "tie_word_embeddings"),
    ("rope_scaling", {"type": "foo", "factor": 2.0}, "rope_scaling"),
    ("rope_scaling", {"rope_type": "foo", "factor": 2.0}, "rope_scaling"),
    ("rope_scaling", {"rope_type": "linear"}, r"rope_scaling\.factor"),
    ("rope_scaling", {"rope_type": "linear", "factor": "x"}, r"rope_scaling\.factor"),
    ("rope_scaling", {"rope_type": "linear", "factor": -2.0}, r"rope_scaling\.factor"),
    ("rope_scaling", "linear", "rope_scaling"),
    # integers beyond what the engine holds (int32 fields): a clear error, not pybind11's TypeError
    ("hidden_size", 2**40, "hidden_size"),
    ("vocab_size", 2**33, "vocab_size"),
    ("max_position_embeddings", 2**31 + 5, "max_position_embeddings"),
])
def test_malformed_config_field(tmp_path, field, value, named):
    write_checkpoint(tmp_path, config=dict(CONFIG, **{field: value}))
    with pytest.raises(ValueError, match=r"config\.json.*" + named):
        edgeformer.load(str(tmp_path))


# -- tensors -------------------------------------------------------------------------------------------

def test_missing_tensor(tmp_path):
    t = make_tensors()
    del t["model.layers.1.mlp.up_proj.weight"]
    write_checkpoint(tmp_path, t)
    with pytest.raises(ValueError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight'.*missing"):
        edgeformer.load(str(tmp_path))


def test_wrong_shape_tensor(tmp_path):
    t = make_tensors()
    t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((KD + 1, H), np.float32)
    path = os.path.join(write_checkpoint(tmp_path, t), "model.safetensors")
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight'.*" + esc(path)
                       + r".*expected shape \[16, 32\], got \[17, 32\]"):
        edgeformer.load(str(tmp_path))


def test_wrong_shape_vector(tmp_path):
    t = make_tensors()
    t["model.norm.weight"] = np.ones(H + 3, np.float32)
    write_checkpoint(tmp_path, t)
    with pytest.raises(ValueError, match=r"'model\.norm\.weight'.*expected shape \[32\], got \[35\]"):
        edgeformer.load(str(tmp_path))


@pytest.mark.parametrize("name, np_dtype, code", [
    ("model.layers.1.mlp.down_proj.weight", np.int32, "I32"),
    ("model.embed_tokens.weight", np.int64, "I64"),
    ("model.layers.0.input_layernorm.weight", np.int32, "I32"),
    ("lm_head.weight", np.float64, "F64"),
])
def test_wrong_dtype_tensor(tmp_path, name, np_dtype, code):
    t = make_tensors()
    t[name] = t[name].astype(np_dtype)
    write_checkpoint(tmp_path, t)
    with pytest.raises(ValueError, match="(?i)" + esc(name) + r".*dtype.*" + code):
        edgeformer.load(str(tmp_path))


# -- safetensors files --------------------------------------------------------------------------------

def st_bytes(header: dict, data: bytes, header_size=None) -> bytes:
    raw = json.dumps(header).encode()
    n = len(raw) if header_size is None else header_size
    return n.to_bytes(8, "little") + raw + data


def _good_file_bytes(tmp_path) -> bytes:
    p = str(tmp_path / "src.safetensors")
    save_safetensors(make_tensors(), p)
    with open(p, "rb") as f:
        b = f.read()
    os.remove(p)
    return b


_BAD_NAME_HDR = b'{"x\xff": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
ONE = {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}

# name -> (bytes maker(tmp_path), regex for the rest of the message after the path)
BAD_FILES = {
    "truncated_data": (lambda tp: _good_file_bytes(tp)[:-100], r"past the end.*truncated"),
    "truncated_in_header": (lambda tp: _good_file_bytes(tp)[:200], r"header size .* does not fit"),
    "header_size_past_end": (lambda tp: st_bytes(ONE, bytes(16), header_size=10_000), r"header size 10000 does not fit"),
    "header_size_huge": (lambda tp: (2**63 + 5).to_bytes(8, "little") + b"{}", r"header size .* does not fit"),
    "offsets_past_end": (lambda tp: st_bytes({"x": {"dtype": "F32", "shape": [250], "data_offsets": [0, 1000]}},
                                             bytes(16)), r"'x'.*data_offsets.*past the end"),
    "offsets_reversed": (lambda tp: st_bytes({"x": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}},
                                             bytes(16)), r"'x'.*data_offsets"),
    "offsets_negative": (lambda tp: st_bytes({"x": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}},
                                             bytes(16)), r"'x'.*data_offsets"),
    "offsets_not_pair": (lambda tp: st_bytes({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0]}},
                                             bytes(16)), r"'x'.*data_offsets"),
    "header_not_json": (lambda tp: (12).to_bytes(8, "little") + b"{not json!!}" + bytes(16), r"header.*JSON"),
    "header_json_list": (lambda tp: (6).to_bytes(8, "little") + b"[1, 2]", r"header is not a JSON object"),
    "size_mismatch": (lambda tp: st_bytes({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, bytes(16)),
                      r"'x'.*shape \[3\].*12 bytes.*span 16"),
    "size_mismatch_dtype": (lambda tp: st_bytes({"x": {"dtype": "F16", "shape": [4], "data_offsets": [0, 16]}},
                                                bytes(16)), r"'x'.*F16.*span 16"),
    "negative_shape": (lambda tp: st_bytes({"x": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}},
                                           bytes(16)), r"'x'.*shape.*non-negative integers"),
    "float_shape": (lambda tp: st_bytes({"x": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 10]}},
                                        bytes(16)), r"'x'.*shape.*non-negative integers"),
    "string_shape": (lambda tp: st_bytes({"x": {"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}},
                                         bytes(16)), r"'x'.*shape.*non-negative integers"),
    "overflowing_shape": (lambda tp: st_bytes({"x": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}},
                                              bytes(16)), r"'x'.*shape"),
    "unknown_dtype": (lambda tp: st_bytes({"x": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}, bytes(16)),
                      r"'x'.*dtype 'Q4'"),
    "missing_dtype": (lambda tp: st_bytes({"x": {"shape": [4], "data_offsets": [0, 16]}}, bytes(16)), r"'x'.*dtype"),
    "entry_not_object": (lambda tp: st_bytes({"x": [1, 2]}, bytes(16)), r"'x'.*not an object"),
    "name_not_utf8": (lambda tp: (len(_BAD_NAME_HDR)).to_bytes(8, "little") + _BAD_NAME_HDR + bytes(16),
                      r"([Uu][Tt][Ff]-?8|JSON)"),
    "shorter_than_8_bytes": (lambda tp: b"\x10\0\0", r"too short"),
    "empty_file": (lambda tp: b"", r"0 bytes.*too short"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_safetensors_open(tmp_path, case):
    make, rest = BAD_FILES[case]
    path = str(tmp_path / "bad.safetensors")
    with open(path, "wb") as f:
        f.write(make(tmp_path))
    with pytest.raises(ValueError, match=esc(path) + ".*" + rest):
        _core.TensorMap.open_safetensors([path]).names()  # names(): the header's strings reach Python


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_safetensors_load(tmp_path, case):
    make, rest = BAD_FILES[case]
    write_config(tmp_path)
    path = os.path.join(str(tmp_path), "model.safetensors")
    with open(path, "wb") as f:
        f.write(make(tmp_path))
    with pytest.raises(ValueError, match=esc(path) + ".*" + rest):
        edgeformer.load(str(tmp_path))


def test_bad_file_among_good_ones(tmp_path):
    """The error names the bad file, not the first of the list."""
    good = str(tmp_path / "a.safetensors")
    save_safetensors({"y": np.zeros(4, np.float32)}, good)
    bad = str(tmp_path / "b.safetensors")
    with open(bad, "wb") as f:
        f.write(b"1234")
    with pytest.raises(ValueError, match=esc(bad)):
        _core.TensorMap.open_safetensors([good, bad])


def test_safetensors_missing_file_and_directory(tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match=esc(missing)):
        _core.TensorMap.open_safetensors([missing])
    with pytest.raises(ValueError, match=esc(tmp_path)):
        _core.TensorMap.open_safetensors([str(tmp_path)])


def test_duplicate_tensor_across_files(tmp_path):
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    save_safetensors({"y": np.zeros(4, np.float32)}, a)
    save_safetensors({"y": np.ones(4, np.float32)}, b)
    with pytest.raises(ValueError, match=r"'y'.*twice"):
        _core.TensorMap.open_safetensors([a, b])


def test_no_weights(tmp_path):
    write_config(tmp_path)
    with pytest.raises(ValueError, match=esc(tmp_path) + r".*safetensors"):
        edgeformer.load(str(tmp_path))


def test_not_a_directory(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match=esc(f)):
        edgeformer.load(str(f))
    with pytest.raises(ValueError, match=esc(tmp_path / "no_such_dir")):
        edgeformer.load(str(tmp_path / "no_such_dir"))


# -- sharded checkpoints ------------------------------------------------------------------------------

def write_sharded(d, tensors, drop_shard: bool = False) -> str:
    os.makedirs(str(d), exist_ok=True)
    write_config(d)
    names = list(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, ns in shards.items():
        for n in ns:
            weight_map[n] = fname
        if not (drop_shard and fname.startswith("model-00002")):
            save_safetensors({n: tensors[n] for n in ns}, os.path.join(str(d), fname))
    with open(os.path.join(str(d), "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}, f)
    return str(d)


def test_sharded_missing_shard(tmp_path):
    write_sharded(tmp_path, make_tensors(), drop_shard=True)
    pat = r"model\.safetensors\.index\.json.*'model-00002-of-00002\.safetensors'.*missing"
    with pytest.raises(ValueError, match=pat):
        edgeformer.load(str(tmp_path))


@pytest.mark.parametrize("index, why", [
    ({"weight_map": {}}, "weight_map"),
    ({"metadata": {}}, "weight_map"),
    ({"weight_map": {"lm_head.weight": "../evil.safetensors"}}, "evil"),
    ({"weight_map": {"lm_head.weight": 7}}, "shard"),
])
def test_bad_index(tmp_path, index, why):
    write_checkpoint(tmp_path)
    with open(tmp_path / "model.safetensors.index.json", "w") as f:
        json.dump(index, f)
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json.*" + why):
        edgeformer.load(str(tmp_path))


def test_index_not_json(tmp_path):
    write_checkpoint(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json.*JSON"):
        edgeformer.load(str(tmp_path))


def test_sharded_checkpoint_matches_single_file(tmp_path, good_dir):
    d = write_sharded(tmp_path / "sharded", make_tensors())
    assert not os.path.exists(os.path.join(d, "model.safetensors"))
    ids = [0, 5, 9, 33, 2, 60, 1, 17]
    single = edgeformer.load(good_dir, threads=2, max_context=16)
    sharded = edgeformer.load(d, threads=2, max_context=16)
    a, b = single.logits(ids), sharded.logits(ids)
    assert a.shape == (len(ids), V)
    np.testing.assert_array_equal(a, b)
    ga = single.generate(ids, max_new_tokens=6, temperature=0, ignore_eos=True).token_ids
    gb = sharded.generate(ids, max_new_tokens=6, temperature=0, ignore_eos=True).token_ids
    assert ga == gb and len(ga) == 6


# -- prompts and generation arguments -----------------------------------------------------------------

def test_prompt_longer_than_max_context(model):
    assert model.max_context == 16
    ids = list(range(20))
    with pytest.raises(ValueError, match=r"max_context.*16|16.*max_context"):
        model.generate(ids, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"max_context"):
        model.logits(ids)
    with pytest.raises(ValueError, match=r"max_context"):
        model.logits(np.array([ids, ids]))


@pytest.mark.parametrize("bad", [V, V + 1000, -1, 2**40])
def test_token_ids_outside_vocab(model, bad):
    pat = r"token id " + esc(bad) + r".*vocabulary"
    with pytest.raises(ValueError, match=r"prompt.*" + pat):
        model.generate([1, 2, bad], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"input_ids.*" + pat):
        model.logits([1, bad, 2])


def test_non_integer_token_ids(model):
    with pytest.raises(ValueError, match=r"prompt.*integer"):
        model.generate([1.5, 2.0], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"input_ids.*integer"):
        model.logits(["a", "b"])
    with pytest.raises(ValueError, match=r"input_ids"):
        model.logits(np.zeros((1, 2, 3), np.int32))


@pytest.mark.parametrize("bad", [5, None, 3.5, np.array(7)], ids=["int", "None", "float", "0-d array"])
def test_prompt_wrong_type(model, bad):
    with pytest.raises(ValueError, match=r"prompt"):
        model.generate(bad, max_new_tokens=2)


def test_ragged_input_ids(model):
    with pytest.raises(ValueError, match=r"input_ids"):
        model.logits([[1, 2], [3]])


def test_error_reports_top_k_as_given(model):
    """The message shows what the caller passed, not a value it was converted to."""
    with pytest.raises(ValueError, match=r"top_k.*-3"):
        model.generate([1, 2], max_new_tokens=2, temperature=1.0, top_k=-3)


def test_error_reports_token_id_as_given(model):
    with pytest.raises(ValueError, match=r"input_ids.*token id 9223372036854775808 .*vocabulary"):
        model.logits(np.array([1, 2**63], dtype=np.uint64))


def test_empty_prompt(model):
    with pytest.raises(ValueError, match=r"prompt.*empty"):
        model.generate([], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"prompt.*empty"):
        model.generate(np.array([], np.int32), max_new_tokens=2)
    with pytest.raises(ValueError, match=r"input_ids.*non-empty"):
        model.logits([])


@pytest.mark.parametrize("kwargs, arg", [
    ({"temperature": -1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -3}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"min_p": 2}, "min_p"),
    ({"min_p": -0.1}, "min_p"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"repetition_penalty": -1.2}, "repetition_penalty"),
    ({"max_new_tokens": -1}, "max_new_tokens"),
    ({"max_new_tokens": 2.0}, "max_new_tokens"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": [1]}, "stop"),
    ({"stop": 5}, "stop"),
    ({"stop": [None]}, "stop"),
])
def test_invalid_sampling_args(model, kwargs, arg):
    kw = dict(max_new_tokens=2, temperature=0.8)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=r"\b" + arg + r"\b"):
        model.generate([1, 2, 3], **kw)
    with pytest.raises(ValueError, match=r"\b" + arg + r"\b"):  # the stream form checks before the first token
        model.generate([1, 2, 3], stream=True, **kw)


@pytest.mark.parametrize("kwargs, arg", [
    ({"threads": 0}, "threads"),
    ({"threads": -2}, "threads"),
    ({"threads": 1.5}, "threads"),
    ({"max_context": -5}, "max_context"),
    ({"max_context": 0}, "max_context"),
    ({"max_context": "16"}, "max_context"),
    ({"max_context": 2**40}, "max_context"),
    ({"threads": 2**40}, "threads"),
    ({"dtype": "int3"}, "dtype"),
    ({"dtype": "iq2_xxs"}, "dtype"),  # not a type edgeformer has
    ({"exact_q8_prompts": 1}, "exact_q8_prompts"),
    ({"exact_q8_prompts": "yes"}, "exact_q8_prompts"),
])
def test_invalid_load_args(good_dir, kwargs, arg):
    with pytest.raises(ValueError, match=r"argument '" + arg + "'"):
        edgeformer.load(good_dir, **kwargs)


def test_model_still_works_after_errors(good_dir):
    m = edgeformer.load(good_dir, threads=2, max_context=16)
    ids = [3, 1, 4, 1, 5]
    ref_logits = m.logits(ids)
    ref_tokens = m.generate(ids, max_new_tokens=5, temperature=0, ignore_eos=True).token_ids
    assert len(ref_tokens) == 5
    bad_calls = [
        lambda: m.generate(list(range(20)), max_new_tokens=3),
        lambda: m.logits(list(range(20))),
        lambda: m.generate([1, V], max_new_tokens=3),
        lambda: m.generate([], max_new_tokens=3),
        lambda: m.generate(ids, max_new_tokens=3, top_p=0),
        lambda: m.generate(ids, max_new_tokens=3, stop=[1]),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()
        out = m.generate(ids, max_new_tokens=5, temperature=0, ignore_eos=True)
        assert out.token_ids == ref_tokens
        np.testing.assert_array_equal(m.logits(ids), ref_logits)
    # a prompt that fills the context exactly still runs (its last position gives one token); generation
    # stops at the context limit rather than failing
    out = m.generate(list(range(16)), max_new_tokens=4, temperature=0, ignore_eos=True)
    assert out.finish_reason == "context" and len(out.token_ids) == 1
    out = m.generate(list(range(14)), max_new_tokens=4, temperature=0, ignore_eos=True)
    assert out.finish_reason == "context" and len(out.token_ids) == 3
    assert m.generate(ids, max_new_tokens=5, temperature=0, ignore_eos=True).token_ids == ref_tokens


# -- EDGEFORMER_ISA -----------------------------------------------------------------------------------

def run_py(code: str, isa: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EDGEFORMER_ISA=isa)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


ISA_BOGUS = r"""
import sys, edgeformer
try:
    edgeformer.cpu_info()
    print("NO ERROR: cpu_info")
except ValueError as e:
    print("cpu_info ValueError:", e)
try:
    m = edgeformer.load(sys.argv[1], threads=1, max_context=8)
    m.logits([1, 2, 3])
    print("NO ERROR: load")
except ValueError as e:
    print("load ValueError:", e)
"""


# a known ISA name this CPU cannot run (neon on x86-64, avx2/avx512 on aarch64), if there is one
_UNAVAILABLE = [i for i in ("neon", "avx512", "avx2") if i not in _core.cpu_info()["supported_isas"]][:1]


@pytest.mark.parametrize("value", ["bogus", "AVX9000"] + _UNAVAILABLE)
def test_isa_env_bogus_or_unavailable(good_dir, value):
    r = subprocess.run([sys.executable, "-c", ISA_BOGUS, good_dir], env=dict(os.environ, EDGEFORMER_ISA=value),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr  # an exception, never a crash (no SIGILL, no abort)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2, r.stdout
    for line in lines:
        assert "NO ERROR" not in line, r.stdout
        assert "EDGEFORMER_ISA" in line and value in line, line


def test_isa_env_generic():
    code = "import edgeformer; print(edgeformer._core.active_isa()); print(edgeformer.cpu_info()['isa'])"
    r = run_py(code, "generic")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["generic", "generic"]


@pytest.mark.parametrize("isa", _core.cpu_info()["supported_isas"])
def test_isa_env_each_supported(good_dir, isa):
    code = ("import sys, numpy as np, edgeformer\n"
            "print(edgeformer._core.active_isa())\n"
            "m = edgeformer.load(sys.argv[1], threads=1, max_context=8)\n"
            "x = m.logits([1, 2, 3])\n"
            "print(x.shape == (3, %d) and bool(np.isfinite(x).all()))\n" % V)
    r = subprocess.run([sys.executable, "-c", code, good_dir], env=dict(os.environ, EDGEFORMER_ISA=isa),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [isa, "True"]


def test_set_isa_unknown_name():
    with pytest.raises(ValueError, match=r"bogus"):
        _core.set_isa("bogus")
