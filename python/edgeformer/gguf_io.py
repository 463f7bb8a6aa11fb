"""GGUF in and out: load llama.cpp's files (weights stay memory-mapped, quantized ones used as stored) and
write our models as GGUF with llama.cpp's tensor names, metadata keys and tokenizer."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import numpy as np

from . import _core, gguf_hybrid
from .archs import ENCODER_DECODERS, Derived, spec_from_config
from .tokenizer import TokenizerInfo

from .gguf_common import _ARCH_OF_MODEL_TYPE as GGUF_ARCH  # HF model_type -> llama.cpp architecture

QKV_PARTS = {"q": 0, "k": 1, "v": 2}
# llama.cpp's architectures whose q and k rows its converter permutes for adjacent rotary pairs (LlamaModel's)
PERMUTED_QK = ("llama", "granite", "granitemoe", "granitehybrid", "smollm3", "internlm2", "arcee", "mistral3", "olmo")


def gguf_rotary_layout(spec: "_core.ArchSpec", names: Dict[str, Any]) -> None:
    """llama.cpp stores a Llama's q and k rows permuted so that rotary pairs are adjacent (GPT-J style). A
    quantized Llama is laid out the same way, so that its GGUF file (written by `edgeformer quantize`) holds
    exactly the tensors computed with here and loads back to bit-identical logits."""
    if GGUF_ARCH.get(spec.model_type) not in PERMUTED_QK or spec.pos != _core.PosKind.rotary:
        return
    if spec.rope.style != _core.RopeStyle.half or spec.rope.rotary_dim not in (0, spec.head_dim):
        return
    for i in range(spec.n_layers):
        for part, heads in (("q", spec.n_heads), ("k", spec.n_kv_heads)):
            rows = llama_qk_permutation(heads, spec.head_dim)
            for kind in ("weight", "bias"):
                src = names.get(f"layers.{i}.attn.{part}.{kind}")
                if isinstance(src, str):  # llama's q and k are plain checkpoint tensors
                    names[f"layers.{i}.attn.{part}.{kind}"] = Derived(src, rows)
    r = spec.rope
    r.style = _core.RopeStyle.interleaved
    spec.rope = r


def llama_qk_permutation(n_heads: int, head_dim: int) -> List[int]:
    """Row order of llama.cpp's permute(): within each head, row 2i+s takes row s*head_dim/2 + i."""
    half = head_dim // 2
    return [h * head_dim + s * half + i for h in range(n_heads) for i in range(half) for s in range(2)]


def _qkv_rows(spec: "_core.ArchSpec", canonical: str):
    """Rows of q, k or v in a fused GGUF attn_qkv ([all q, all k, all v], as llama.cpp's converter writes)."""
    part = canonical.split(".attn.")[-1][:1]
    q, kv = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
    rows = {"q": (0, q), "k": (q, q + kv), "v": (q + kv, q + 2 * kv)}
    if part not in rows:
        raise ValueError(f"{canonical}: not a row group of a fused q/k/v tensor")
    return rows[part]


def load_gguf(path: str, dtype: Optional[str], opts: "_core.ModelOptions"):
    from .gguf_config import config_from_gguf
    from .gguf_names import expert_tensor, hf_names_from_gguf
    from .model import Model

    tmap, meta, order, _version = _core.TensorMap.open_gguf(path)
    rope_freqs = tmap.get("rope_freqs.weight").numpy() if "rope_freqs.weight" in tmap else None
    if meta.get("general.architecture") == "phi3":  # longrope's factors, as tensors
        rope_freqs = {n: tmap.get(n).numpy() for n in ("rope_factors_long.weight", "rope_factors_short.weight")
                      if n in tmap}
    config = config_from_gguf(meta, order, path, rope_freqs=rope_freqs)
    arch = meta["general.architecture"]
    if config["model_type"] in ENCODER_DECODERS:
        return _load_gguf_seq2seq(path, tmap, meta, order, config, arch, opts)
    if "token_embd.weight" in tmap:  # the embedding's rows are the vocabulary (it may exceed the token list)
        config["vocab_size"] = int(tmap.get("token_embd.weight").shape[0])
    if "per_layer_token_embd.weight" in tmap:  # (Gemma 4's per-layer inputs: their table's rows)
        config["vocab_size_per_layer_input"] = int(tmap.get("per_layer_token_embd.weight").shape[0])
    n_layers = int(next((config[k] for k in ("num_hidden_layers", "n_layer", "n_layers", "num_layers") if k in config), 0))
    if not 0 < n_layers <= len(order):  # each layer has tensors: a larger count is a corrupt header
        raise ValueError(f"{path}: {arch}.block_count = {n_layers} does not match the {len(order)} tensors of the file")
    g2h = hf_names_from_gguf(arch, n_layers, config)
    h2g = {h: g for g, h in g2h.items()}
    spec, names = spec_from_config(config, path, [g2h[n] for n in order if n in g2h])
    hybrid = arch in gguf_hybrid.HYBRID_ARCHS
    if arch in gguf_hybrid.TILED_ARCHS:
        spec.lin_v_tiled = True  # (llama.cpp's order of the value heads, read as stored)
    mapped: Dict[str, str] = {}
    for canonical, v in names.items():
        expert = expert_tensor(canonical)
        if expert is not None:  # one matrix of the layer's stacked experts (or an older file's own tensor)
            stacked, index, legacy = expert
            count, items, key = (spec.n_experts, "experts", "expert_count") if legacy else (
                spec.altup - 1, "AltUp projections", "altup.num_inputs") if canonical.startswith("altup.") else (
                spec.n_heads, "heads", "attention.head_count")
            fused = stacked.replace("ffn_gate_exps", "ffn_gate_up_exps").replace("ffn_up_exps", "ffn_gate_up_exps")
            if stacked not in tmap and fused != stacked and fused in tmap:  # (gate rows, then up rows, per expert)
                key = f"{fused}[{index}]"
                if key not in tmap:
                    tmap.add_index_view(key, fused, index)
                half = tmap.get(key).shape[0] // 2
                part = key + ("[gate]" if "ffn_gate_exps" in stacked else "[up]")
                if part not in tmap:
                    tmap.add_rows_view(part, key, 0 if "ffn_gate_exps" in stacked else half,
                                       half if "ffn_gate_exps" in stacked else 2 * half)
                mapped[canonical] = part
                continue
            if stacked in tmap and index == 0 and tmap.get(stacked).shape[0] != count:
                raise ValueError(f"{path}: {stacked} holds {tmap.get(stacked).shape[0]} {items}, the metadata's "
                                 f"{arch}.{key} says {count}")
            if stacked in tmap:
                key = f"{stacked}[{index}]"
                if key not in tmap:
                    tmap.add_index_view(key, stacked, index)
                mapped[canonical] = key
            elif legacy and legacy in tmap:
                mapped[canonical] = legacy
            elif canonical.startswith("altup."):
                raise ValueError(f"{path}: no tensor '{stacked}' (Gemma 3n's AltUp projections)")
            elif not legacy:  # (latent attention: files before llama.cpp split attn_kv_b into attn_k_b and attn_v_b)
                raise ValueError(f"{path}: no '{stacked}': a latent-attention file of an older converter (one "
                                 "attn_kv_b); convert the checkpoint again with a current llama.cpp, or load the "
                                 "checkpoint itself")
            else:
                raise ValueError(f"{path}: no GGUF tensor holds {canonical} ('{stacked}' or '{legacy}')")
            continue
        src = v.src if isinstance(v, Derived) else v
        g = gguf_hybrid.direct_name(spec, canonical) if hybrid else None  # (a split of one checkpoint tensor)
        if g is not None and g in tmap:
            mapped[canonical] = g
            continue
        if src not in h2g:
            raise ValueError(f"{path}: no GGUF tensor corresponds to '{src}' (for {canonical})")
        g = h2g[src]
        special = gguf_hybrid.read_tensor(tmap, spec, canonical, v, g, path) if hybrid else None
        if special is not None:  # (hybrids' rows of fused tensors, reshaped vectors, decay rates)
            mapped[special[0]] = special[1]
            continue
        if isinstance(v, Derived) and v.rows is not None:  # a fused matrix: a zero-copy view of its rows
            # (Phi-3's qkv and gate_up keep the checkpoint's rows; BLOOM's and Falcon's are [all q, all k, all v])
            r0, r1 = (v.rows.start, v.rows.stop) if isinstance(v.rows, slice) else _qkv_rows(spec, canonical)
            key = f"{g}[{canonical}]"
            if g in tmap and key not in tmap:
                tmap.add_rows_view(key, g, r0, r1)
            g = key
        mapped[canonical] = g  # Conv1D transposes are already undone in GGUF files
    nextn = meta.get(f"{arch}.nextn_predict_layers") or 0  # (GLM-4.5's multi-token prediction: blocks left unread)
    # tensors a file holds that nothing reads: multi-token-prediction blocks, Gemma 3n's shared layers' k and v
    unread = tuple(f"blk.{i}." for i in range(n_layers, n_layers + int(nextn)))
    if arch == "gemma3n":  # (llama.cpp's converter keeps the shared layers' keys and values, which nothing reads)
        shared = [i for i, s in enumerate(spec.layer_kv_source) if s >= 0]
        unread += tuple(f"blk.{i}.attn_{p}" for i in shared for p in ("k.", "v.", "k_norm."))
    _check_all_read(path, arch, [n for n in order if not n.startswith(unread)] if unread else order, mapped.values())
    if arch == "bitnet":  # (float projections as ternary rows and their scale)
        from .bitnet import gguf_ternary

        gguf_ternary(tmap, spec, mapped, path)
    if arch in PERMUTED_QK and spec.pos == _core.PosKind.rotary and spec.rope.rotary_dim in (0, spec.head_dim):
        r = spec.rope
        r.style = _core.RopeStyle.interleaved  # llama.cpp stores q and k rows permuted for adjacent pairs
        spec.rope = r
    core = _core.Model(spec, tmap, mapped, opts)
    model = Model(core, config, _tokenizer(meta, path), path)
    model.gguf_metadata = meta
    return model


# tensors a file may hold that no canonical weight takes: rotary tables read on their own (and the per-layer
# attn_rot_embd tables of early conversions, which llama.cpp ignores too)
_SIDE_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


def _check_all_read(path: str, arch: str, order, used) -> None:
    """Every tensor of the file is one the model reads: one left over means a variant of the architecture that
    the metadata does not tell apart and we do not compute (Command R+'s q/k norms, a shared expert beside
    Granite MoE's experts, ...), which would load and answer wrongly; it fails instead, naming the tensors."""
    read = {key.split("[", 1)[0] for key in used}  # (a view's key is "<tensor>[...]")
    left = [n for n in order if n not in read and n not in _SIDE_TENSORS and not n.endswith(".attn_rot_embd.weight")]
    if left:
        more = f" and {len(left) - 4} more" if len(left) > 4 else ""
        raise ValueError(f"{path}: tensors {', '.join(repr(n) for n in left[:4])}{more} are not read by the {arch} "
                         "model its metadata describes (a variant edgeformer does not support)")


def _tokenizer(meta: Dict[str, Any], path: str) -> TokenizerInfo:
    from .gguf_tokenizer import tokenizer_from_gguf

    tok = tokenizer_from_gguf(meta, path) if "tokenizer.ggml.model" in meta else None
    return TokenizerInfo.from_parts(tok.tokenizer if tok else None, tok.tokenizer_config() if tok else {},
                                    tok.chat_template if tok else None)


def _load_gguf_seq2seq(path, tmap, meta, order, config, arch, opts):
    """T5 from GGUF: two stacks (enc.* and dec.* tensors) sharing the token embedding."""
    from .archs import Config
    from .gguf_names import hf_names_from_gguf
    from .seq2seq import Seq2SeqModel

    n = max(int(config.get("num_layers", 0)), int(config.get("num_decoder_layers", 0) or 0))
    if not 0 < n <= len(order):
        raise ValueError(f"{path}: {arch}.block_count = {n} does not match the {len(order)} tensors of the file")
    g2h = hf_names_from_gguf(arch, n, config)
    h2g = {h: g for g, h in g2h.items() if g in tmap}
    enc_spec, enc_names, dec_spec, dec_names = ENCODER_DECODERS[config["model_type"]](
        Config(config, path), [g2h[x] for x in order if x in g2h])

    def mapped(names):
        out = {}
        for canonical, hf in names.items():
            if hf not in h2g:
                raise ValueError(f"{path}: no GGUF tensor corresponds to '{hf}' (for {canonical})")
            out[canonical] = h2g[hf]
        return out

    for spec in (enc_spec, dec_spec):
        spec.validate()
    enc = _core.Model(enc_spec, tmap, mapped(enc_names), opts)
    dec_map = mapped(dec_names)
    tok = _tokenizer(meta, path)
    return Seq2SeqModel(enc, lambda: _core.Model(dec_spec, tmap, dec_map, opts), config, tok, path)


def write_gguf(model, out_path: str, source_dir: str, name: Optional[str] = None) -> None:
    """Writes a loaded model (a decoder, BERT, or T5's two stacks) as GGUF: exactly the tensors it computes
    with, under llama.cpp's names, with its metadata and tokenizer."""
    from .gguf_config import gguf_metadata_from_config
    from .gguf_names import expert_tensor, gguf_names_from_hf, permute_qk
    from .gguf_tokenizer import gguf_tokenizer_metadata
    from .bitnet import gguf_projection

    config = model.config
    text_type = {"mistral3": "mistral", "gemma4": "gemma4_text", "gemma3n": "gemma3n_text",
                 **gguf_hybrid.TEXT_MODEL_TYPE}.get(config.get("model_type"))
    if text_type and isinstance(config.get("text_config"), dict):
        # (an image-and-text checkpoint: its language model, as llama.cpp's converter writes it; the head tied as
        # the loaded model ties it)
        config = {"model_type": text_type, **config["text_config"],
                  "tie_word_embeddings": bool(model._core.spec.tie_embeddings)}
    mt = config.get("model_type")
    if mt not in GGUF_ARCH:
        raise ValueError(f"{source_dir}: writing {mt!r} as GGUF is not supported (supported: "
                         f"{', '.join(GGUF_ARCH)})")
    meta: Dict[str, Any] = dict(gguf_metadata_from_config(config, os.path.join(source_dir, "config.json")))
    arch = meta["general.architecture"]  # (a model type's variant may be another: Nemotron 3's experts)
    tok_json = os.path.join(source_dir, "tokenizer.json")
    if os.path.exists(tok_json):
        cfg_path = os.path.join(source_dir, "tokenizer_config.json")
        meta.update(gguf_tokenizer_metadata(tok_json, cfg_path if os.path.exists(cfg_path) else None,
                                            vocab_size=int(model._core.spec.vocab_size),
                                            spm_model="gemma4" if arch == "gemma4" else "llama"))
    meta["general.name"] = name or os.path.basename(os.path.normpath(source_dir))
    meta["general.quantization_version"] = 2
    meta[f"{arch}.vocab_size"] = int(model._core.spec.vocab_size)
    tensors: Dict[str, tuple] = {}
    if mt in ENCODER_DECODERS:  # the encoder's and the decoder's tensors; the token embedding is shared
        from .archs import Config

        dec = model._core
        present = [] if dec.spec.tie_embeddings else ["lm_head.weight"]
        _, enc_names, _, dec_names = ENCODER_DECODERS[mt](Config(config, source_dir), present)
        h2g = gguf_names_from_hf(arch, max(model._encoder.spec.n_layers, dec.spec.n_layers), config)
        for core, names in ((model._encoder, enc_names), (dec, dec_names)):
            for canonical, t in core.weights():
                src = names.get(canonical)
                if src is None and canonical == "lm_head.weight" and dec.spec.tie_embeddings:
                    continue  # the tied head is the token embedding
                if src is None or src not in h2g:
                    raise ValueError(f"{source_dir}: no GGUF name for tensor '{canonical}' ({src})")
                tensors.setdefault(h2g[src], (t.numpy(), t.dtype))
        layers_main = model._encoder
    else:
        spec = model._core.spec
        _, hf_names = spec_from_config(config, "config.json", [])
        h2g = gguf_names_from_hf(arch, spec.n_layers, config)
        permuted = spec.rope.style == _core.RopeStyle.interleaved
        rotary = spec.pos == _core.PosKind.rotary
        hybrid = arch in gguf_hybrid.HYBRID_ARCHS
        fused: Dict[str, List[tuple]] = {}
        experts: Dict[str, Dict[int, tuple]] = {}
        for canonical, t in model._core.weights():
            expert = expert_tensor(canonical)
            if expert is not None:  # stacked per layer and part: [n_experts, rows, columns]
                experts.setdefault(expert[0], {})[expert[1]] = (t.numpy(), t.dtype)
                continue
            v = hf_names.get(canonical)
            if v is None and canonical.endswith(".lin.A"):  # (hybrids' decay rates, from A_log)
                v = hf_names.get(canonical + "_log")
            direct = gguf_hybrid.direct_name(spec, canonical) if hybrid else None
            if direct is not None:  # (a split of one checkpoint tensor)
                tensors[direct] = (t.numpy(), t.dtype)
                continue
            src = v.src if isinstance(v, Derived) else v
            if src is None or src not in h2g:
                raise ValueError(f"{source_dir}: no GGUF name for tensor '{canonical}' ({src})")
            g = h2g[src]
            a = t.numpy()
            if hybrid and gguf_hybrid.write_tensor(spec, canonical, v, a, t.dtype, g, tensors):
                continue  # (hybrids' layouts)
            if canonical == "pos_embeddings.weight" and arch == "bert":
                a = a[spec.pos_offset:]  # (RoBERTa's: llama.cpp's BERT counts positions from 0)
            # (llama.cpp's rows for rotary pairs; without positions, Granite 4.0-H's, any order is one model)
            if arch in PERMUTED_QK and not permuted and rotary and (".attn.q." in canonical or ".attn.k." in canonical):
                a = permute_qk(a, spec.n_heads if ".attn.q." in canonical else spec.n_kv_heads)  # llama.cpp's rows
            if arch == "bitnet" and gguf_projection(a, t.dtype, t.scale, g, tensors):
                continue  # (TQ2_0 and a scale tensor)
            if isinstance(v, Derived) and v.rows is not None:
                at = v.rows.start if isinstance(v.rows, slice) else QKV_PARTS[canonical.split(".attn.")[1][0]]
                fused.setdefault(g, []).append((at, a, t.dtype))
                continue
            tensors[g] = (a, t.dtype)
        if spec.rope.scaling == _core.RopeScaling.llama3:  # (Llama 3.1-3.3, EXAONE 4: per-frequency factors)
            from .gguf_config import llama3_rope_freqs_from_config

            freqs = llama3_rope_freqs_from_config(config, os.path.join(source_dir, "config.json"))
            tensors["rope_freqs.weight"] = (np.asarray(freqs, np.float32), _core.DType.f32)
        if mt == "gemma4_text":  # (the full layers' proportional rotary, as factors)
            from .gguf_gemma import gemma4_rope_freqs

            tensors["rope_freqs.weight"] = (gemma4_rope_freqs(spec), _core.DType.f32)
        if mt == "gemma3n_text":  # (llama.cpp's gemma3n requires the shared layers' keys and values: unread zeros)
            from .gguf_gemma import gemma3n_shared_kv

            tensors.update(gemma3n_shared_kv(spec))
        if mt == "phi3" and spec.rope.scaling == _core.RopeScaling.longrope:  # its factors, as llama.cpp's tensors
            for n, v in (("rope_factors_long.weight", spec.rope.long_factor),
                         ("rope_factors_short.weight", spec.rope.short_factor)):
                tensors[n] = (np.asarray(v, np.float32), _core.DType.f32)
        for g, by_index in experts.items():
            parts = [by_index[i] for i in range(len(by_index))]
            if len({str(p[1]) for p in parts}) != 1:
                raise ValueError(f"{g}: the experts of a layer differ in type")
            tensors[g] = (np.stack([p[0] for p in parts]), parts[0][1])
        for g, parts in fused.items():  # [all q, all k, all v] (or as the rows were)
            parts.sort(key=lambda p: p[0])
            if len({str(p[2]) for p in parts}) != 1:
                raise ValueError(f"{g}: the parts of a fused QKV matrix differ in type")
            tensors[g] = (np.concatenate([p[1] for p in parts], axis=0), parts[0][2])
        layers_main = model._core
    main = {str(t.dtype).split(".")[1] for n, t in layers_main.weights()
            if (".mlp." in n or ".moe.experts." in n) and n.endswith(".weight")}
    # llama.cpp's llama_ftype ("mostly" that type; q4_k keeps the Q4_K_M value it has always been written with,
    # q3_k and q5_k take the _S values)
    file_types = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k": 11,
                  "q4_k": 15, "q5_k": 16, "q6_k": 18, "iq4_nl": 25, "iq4_xs": 30, "bf16": 32}
    from .model import BLOCK_TYPES

    if "per_layer_token_embd.weight" in tensors and main and all(m in BLOCK_TYPES for m in main):
        # (the model keeps Gemma's per-layer table as stored: a quantized file holds it at 8 bits, as the token
        # embedding)
        tensors["per_layer_token_embd.weight"] = _q8_0_table(*tensors["per_layer_token_embd.weight"])
    if arch == "bitnet" and any(str(dt).endswith("tq2_0") for _, dt in tensors.values()):
        main = {"tq2_0"}  # (llama.cpp's MOSTLY_TQ2_0)
        file_types["tq2_0"] = 37
    if len(main) == 1:
        meta["general.file_type"] = file_types[main.pop()]
    _write_file(out_path, arch, meta, tensors)


def _q8_0_table(a: np.ndarray, dtype) -> tuple:
    """A float table ([rows, K], f32 / f16 / bf16 bits) as q8_0 rows, a few thousand rows at a time."""
    if dtype not in (_core.DType.f32, _core.DType.f16, _core.DType.bf16) or a.shape[-1] % 32:
        return a, dtype
    out = np.empty((a.shape[0], a.shape[1] // 32 * 34), np.uint8)
    for r in range(0, a.shape[0], 4096):
        c = a[r:r + 4096]
        f = (c.astype(np.uint32) << 16).view(np.float32) if dtype == _core.DType.bf16 else c.astype(np.float32)
        out[r:r + 4096] = _core.ops.quantize(f, _core.DType.q8_0)
    return out, _core.DType.q8_0


def _write_file(out_path: str, arch: str, meta: Dict[str, Any], tensors: Dict[str, tuple]) -> None:
    """The GGUF file itself, through a temporary name: never a truncated output under the final one."""
    import gguf

    from .gguf_config import add_metadata_to_writer

    from .model import BLOCK_TYPES, GRID_TYPES

    tmp = out_path + ".tmp"
    try:
        w = gguf.GGUFWriter(tmp, arch)
        add_metadata_to_writer(w, {k: v for k, v in meta.items() if k != "general.architecture"})
        for g, (a, dt) in tensors.items():
            kind = str(dt).split(".")[1]
            if kind == "bf16":
                w.add_tensor(g, np.ascontiguousarray(a).view(np.uint16), raw_dtype=gguf.GGMLQuantizationType.BF16)
            elif kind in BLOCK_TYPES + GRID_TYPES + ("tq1_0", "tq2_0"):  # blocks as stored, under their GGML type
                w.add_tensor(g, np.ascontiguousarray(a), raw_dtype=gguf.GGMLQuantizationType[kind.upper()])
            else:
                w.add_tensor(g, np.ascontiguousarray(a))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def quantize(src: str, out_path: str, type: str = "q4_0", threads: Optional[int] = None) -> str:
    """Loads a checkpoint directory quantized to `type` and writes it as a GGUF file. Returns out_path."""
    from .model import QUANTIZED, load

    if type not in QUANTIZED + ("f16", "bf16", "f32"):
        raise ValueError(f"argument 'type' must be one of {', '.join(QUANTIZED + ('f16', 'bf16', 'f32'))}, got {type!r}")
    if not os.path.isdir(src):
        raise ValueError(f"{src}: expected a checkpoint directory (config.json + *.safetensors)")
    if os.path.abspath(out_path) == os.path.abspath(src):
        raise ValueError(f"{out_path}: the output would overwrite the source")
    model = load(src, dtype=type, threads=threads, max_context=16)
    write_gguf(model, out_path, src)
    return out_path
