"""Sentence embeddings: pooling over the last hidden states, configured by sentence-transformers files."""

from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Tuple

import numpy as np

POOLINGS = ("mean", "cls", "last", "max", "mean_sqrt_len", "weighted_mean")
# sentence-transformers' pooling modes (6.x: "pooling_mode"; before: one pooling_mode_<name> flag each) -> ours
_ST_POOLINGS = {"cls": "cls", "cls_token": "cls", "mean": "mean", "mean_tokens": "mean", "max": "max",
                "max_tokens": "max", "lasttoken": "last", "mean_sqrt_len_tokens": "mean_sqrt_len",
                "weightedmean": "weighted_mean", "weightedmean_tokens": "weighted_mean"}


def _modules(path: str) -> List[dict]:
    """modules.json's entries (none without the file)."""
    modules_path = os.path.join(path, "modules.json")
    if not os.path.exists(modules_path):
        return []
    with open(modules_path, encoding="utf-8") as f:
        try:
            modules = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{modules_path}: not valid JSON ({e})") from None
    if not isinstance(modules, list):
        raise ValueError(f"{modules_path}: expected a list of modules")
    return [m if isinstance(m, dict) else {} for m in modules]


def transformer_dir(path: str) -> str:
    """Where a checkpoint folder keeps its model: the folder itself, or, in the older sentence-transformers layout
    (no config.json at the top), the folder its Transformer module names in modules.json (0_Transformer/)."""
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, "config.json")):
        return path
    for m in _modules(path):
        if str(m.get("type", "")).endswith("Transformer") and m.get("path"):
            d = os.path.join(path, str(m["path"]))
            if os.path.exists(os.path.join(d, "config.json")):
                return d
    return path


def resolve_prompt(path: str, prompt: Optional[str], prompt_name: Optional[str]) -> Optional[str]:
    """The text put before each input, as sentence-transformers' encode() resolves it: `prompt` as given, else
    config_sentence_transformers.json's prompts[prompt_name], else its default_prompt_name's prompt, else none."""
    from .tokenizer import _read_json

    if prompt is not None:
        if not isinstance(prompt, str):
            raise ValueError(f"argument 'prompt' must be a string, got {prompt!r}")
        return prompt
    cfg_path = os.path.join(path, "config_sentence_transformers.json")
    cfg = _read_json(cfg_path) if os.path.exists(cfg_path) else {}
    prompts = cfg.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ValueError(f"{cfg_path}: field 'prompts' must map names to strings")
    name = prompt_name if prompt_name is not None else cfg.get("default_prompt_name")
    if name is None:
        return None
    if name not in prompts:
        if prompt_name is None:
            raise ValueError(f"{cfg_path}: default_prompt_name {name!r} is not one of its prompts {sorted(prompts)}")
        raise ValueError(f"argument 'prompt_name': {name!r} is not one of the checkpoint's prompts {sorted(prompts)}"
                         f" ({cfg_path})")
    return prompts[name]


def sentence_transformers_config(path: str) -> Tuple[str, bool, Optional[int]]:
    """(pooling, normalize, max_seq_length) declared by modules.json / 1_Pooling / sentence_bert_config.json (or the
    tokenizer's model_max_length)."""
    from .tokenizer import _read_json

    normalize = any(str(m.get("type", "")).endswith("Normalize") for m in _modules(path))
    pooling_cfg, cfg_path = _pooling_config(path)
    pooling = "mean" if cfg_path is None else _st_pooling(pooling_cfg, cfg_path)
    max_len = None
    # max_seq_length: sentence_bert_config.json's, else (as sentence-transformers falls back, and 6.x saves it) the
    # tokenizer's model_max_length where it is a length rather than transformers' "unset" sentinel
    model_dir = transformer_dir(path)
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        f = os.path.join(model_dir, name)
        v = _read_json(f).get(key) if os.path.exists(f) else None
        if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 24:
            max_len = v
            break
    return pooling, normalize, max_len


def _st_pooling(cfg: dict, where: str) -> str:
    """The pooling a sentence-transformers Pooling config names: "pooling_mode" (6.x), else its one true
    pooling_mode_<name> flag (mean where none is); ValueError naming the file for modes we do not compute
    (several at once: sentence-transformers concatenates them)."""
    mode = cfg.get("pooling_mode")
    if mode is not None:
        modes = [mode]
    else:
        modes = [k[len("pooling_mode_"):] for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
        modes = modes or ["mean_tokens"]
    if len(modes) != 1 or modes[0] not in _ST_POOLINGS:
        raise ValueError(f"{where}: pooling {' + '.join(map(str, modes))} is not supported (supported: "
                         f"{', '.join(sorted(set(_ST_POOLINGS)))}, one at a time)")
    return _ST_POOLINGS[modes[0]]


def _pooling_config(path: str) -> Tuple[dict, Optional[str]]:
    """The Pooling module's config.json and its path ({} and None without one)."""
    from .tokenizer import _read_json

    for m in _modules(path):
        if str(m.get("type", "")).endswith("Pooling"):
            cfg_path = os.path.join(path, m.get("path", "1_Pooling"), "config.json")
            if os.path.exists(cfg_path):
                return _read_json(cfg_path), cfg_path
    return {}, None


# sentence-transformers' Dense activations, by the class name its config.json records
_DENSE_ACTS = {"Identity": lambda x: x, "Tanh": np.tanh, "ReLU": lambda x: np.maximum(x, 0),
               "Sigmoid": lambda x: 1 / (1 + np.exp(-x))}


def dense_layers(path: str, width: int) -> List[Tuple[np.ndarray, Optional[np.ndarray], Any]]:
    """The Dense modules modules.json lists after the pooling (EmbeddingGemma's 768 -> 3072 -> 768, LaBSE's tanh
    layer ...), in order: (weight [out, in], bias or None, activation), each read from its model.safetensors and
    checked to take the previous width (the first: the pooled hidden state's). ValueError naming the file."""
    from . import _core
    from .archs import tensor_f32
    from .tokenizer import _read_json

    out = []
    for m in _modules(path):
        if not str(m.get("type", "")).endswith("Dense"):
            continue
        d = os.path.join(path, str(m.get("path", "")))
        cfg_path = os.path.join(d, "config.json")
        cfg = _read_json(cfg_path) if os.path.exists(cfg_path) else {}
        act = str(cfg.get("activation_function", "torch.nn.modules.activation.Tanh")).rsplit(".", 1)[-1]
        if act not in _DENSE_ACTS:
            raise ValueError(f"{cfg_path}: activation_function {cfg.get('activation_function')!r} is not supported "
                             f"(supported: {', '.join(sorted(_DENSE_ACTS))})")
        f = os.path.join(d, "model.safetensors")
        if not os.path.exists(f):
            raise ValueError(f"{d}: a Dense module without model.safetensors (a pytorch_model.bin needs PyTorch to "
                             f"read: save the module with safe_serialization)")
        tm = _core.TensorMap.open_safetensors([f])
        have = set(tm.names())
        if "linear.weight" not in have:
            raise ValueError(f"{f}: tensor 'linear.weight' of the Dense module is missing")
        w = tensor_f32(tm, "linear.weight")
        b = tensor_f32(tm, "linear.bias") if "linear.bias" in have else None
        if w.ndim != 2 or w.shape[1] != width or (b is not None and b.shape != (w.shape[0],)):
            raise ValueError(f"{f}: tensor 'linear.weight' must be [out, {width}] (with a bias of out), got "
                             f"{list(w.shape)}" + ("" if b is None else f" and {list(b.shape)}"))
        out.append((w, b, _DENSE_ACTS[act]))
        width = w.shape[0]
    return out


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """hidden [T, H], mask [T] (1 = pooled; a prompt's tokens may be 0) -> [H], as sentence-transformers pools:
    cls the first pooled token, last the last (zeros where none), weighted_mean each token weighted by its position
    in the sequence (from 1), the means zero where no token is pooled."""
    idx = np.flatnonzero(mask)
    if pooling == "cls":
        return hidden[idx[0] if len(idx) else 0]
    if not len(idx):  # (a text that is all prompt)
        return np.full(hidden.shape[1], -np.inf if pooling == "max" else 0.0, np.float32)
    if pooling == "last":
        return hidden[idx[-1]]
    valid = hidden[idx]
    if pooling == "max":
        return valid.max(0)
    v = valid.astype(np.float64)
    if pooling == "mean_sqrt_len":  # (the sum over sqrt of the count)
        return (v.sum(0) / np.sqrt(len(v))).astype(np.float32)
    if pooling == "weighted_mean":  # (token i weighs i + 1: SGPT's position-weighted mean)
        w = (idx + 1).astype(np.float64)
        return ((v * w[:, None]).sum(0) / w.sum()).astype(np.float32)
    return v.mean(0).astype(np.float32)


def prompt_length(model, prompt: str) -> int:
    """The tokens of `prompt` that a pooling with include_prompt: false leaves out, as sentence-transformers counts
    them: the prompt tokenized alone (its special tokens included), less a closing special token."""
    ids = model._tok.encode(prompt)
    tok = model._tok.require()
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    return len(ids) - (1 if ids and ids[-1] in special else 0)


def token_lists(model, texts_or_ids: Any, max_len: Optional[int] = None, what: str = "texts_or_ids") -> List[List[int]]:
    """The token ids embed() runs: texts tokenized and cut to the checkpoint's max_seq_length (and the model's
    context), keeping the closing special token; lists of ids as given (checked). ValueError naming `what`."""
    if max_len is None:
        max_len = sentence_transformers_config(model.path)[2]
    if isinstance(texts_or_ids, str):
        texts_or_ids = [texts_or_ids]
    items: List[Any] = list(texts_or_ids)
    if not items:
        raise ValueError(f"{what}: empty")
    limit = min(max_len or model.max_context, model.max_context)
    seqs = []
    for i, it in enumerate(items):
        if isinstance(it, str):
            ids = model._tok.encode(it)
            ids = ids[: limit - 1] + ids[-1:] if len(ids) > limit else ids  # keep the closing special token
        else:
            ids = model._ids(it, f"{what}[{i}]").tolist()
            if isinstance(ids, int) or not ids:
                raise ValueError(f"{what}[{i}]: expected a text or a non-empty list of token ids")
        seqs.append(ids)
    return seqs


def embed(model, texts_or_ids: Any, pooling: Optional[str], normalize: Optional[bool], batch_size: int,
          prompt: Optional[str] = None, prompt_name: Optional[str] = None) -> np.ndarray:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"argument 'batch_size' must be a positive integer, got {batch_size!r}")
    prompt = resolve_prompt(model.path, prompt, prompt_name)
    skip: List[int] = []  # (per item: its leading tokens left unpooled)
    if prompt:  # (texts only: token ids are taken as given)
        texts_or_ids = [texts_or_ids] if isinstance(texts_or_ids, str) else list(texts_or_ids)
        # include_prompt false: the prompt's tokens (as sentence-transformers counts them) are not pooled
        n = prompt_length(model, prompt) if _pooling_config(model.path)[0].get("include_prompt", True) is False else 0
        skip = [n if isinstance(t, str) else 0 for t in texts_or_ids]
        texts_or_ids = [prompt + t if isinstance(t, str) else t for t in texts_or_ids]
    st_pool, st_norm, max_len = sentence_transformers_config(model.path)
    pooling = st_pool if pooling is None else pooling
    normalize = st_norm if normalize is None else normalize
    if pooling not in POOLINGS:
        raise ValueError(f"argument 'pooling' must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    seqs = token_lists(model, texts_or_ids, max_len)
    cache = model.__dict__.setdefault("_st_dense", {})  # (read once per model)
    if model.path not in cache:
        cache[model.path] = dense_layers(model.path, model.spec.hidden_size)
    out = np.zeros((len(seqs), model.spec.hidden_size), np.float32)
    for b0 in range(0, len(seqs), batch_size):
        batch = [np.asarray(ids, np.int32) for ids in seqs[b0 : b0 + batch_size]]
        # (an encoder runs the batch packed into few passes; a decoder each text alone)
        hs = model._encode(batch) if model.is_encoder else [model.hidden_states(ids) for ids in batch]
        for j, (ids, h) in enumerate(zip(batch, hs)):
            mask = np.ones(len(ids), np.int32)
            mask[: skip[b0 + j] if skip else 0] = 0
            out[b0 + j] = pool(h, mask, pooling)
    for w, b, act in cache[model.path]:  # (sentence-transformers' Dense modules, after the pooling)
        out = act(out @ w.T + (0 if b is None else b)).astype(np.float32)
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out
