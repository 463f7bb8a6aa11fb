"""Sequence classification on an encoder (cross-encoder rerankers, sentiment and NLI classifiers): the head of
transformers' BertForSequenceClassification / RobertaForSequenceClassification (MPNet's is RoBERTa's) /
DistilBertForSequenceClassification / ModernBertForSequenceClassification over the first token's state (or, for
ModernBERT's classifier_pooling "mean", the mean of the tokens')."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _core
from .archs import tensor_f32

def _gelu(x: np.ndarray) -> np.ndarray:  # (exact, erf: the encoders' own kernel)
    return _core.ops.act(np.ascontiguousarray(x, np.float32), _core.Act.gelu)


# (the dense layers of each form before the classifier, in order; their activation; the classifier's names)
_FORMS = {
    # BERT: the pooler (tanh) then the classifier
    "bert": ((("bert.pooler.dense", "pooler.dense"),), np.tanh, ("classifier",)),
    # RoBERTa (and MPNet): the classification head's own dense layer (tanh) then its out_proj
    "roberta": ((("classifier.dense",),), np.tanh, ("classifier.out_proj",)),
    # DistilBERT: pre_classifier (ReLU) then the classifier
    "distilbert": ((("pre_classifier",),), lambda x: np.maximum(x, 0), ("classifier",)),
    # ModernBERT: head.dense (bias where classifier_bias), its activation, head.norm (a LayerNorm), the classifier
    "modernbert": ((("head.dense",),), _gelu, ("classifier",)),
}


class ClassifierHead:
    """pooled hidden states [N, hidden] -> logits [N, labels]: act(x W1^T + b1) ... (then a LayerNorm where the form
    has one), then W^T + b. The pooled state is the first token's, or the mean of the tokens' (pooling "mean")."""

    def __init__(self, dense: List[Tuple[np.ndarray, np.ndarray]], out: Tuple[np.ndarray, np.ndarray],
                 labels: Dict[int, str], act=np.tanh, norm: Optional[Tuple[np.ndarray, np.ndarray, float]] = None,
                 pooling: str = "cls"):
        self.dense, self.out, self.labels, self.act = dense, out, labels, act
        self.norm, self.pooling = norm, pooling

    def pool(self, h: np.ndarray) -> np.ndarray:
        """One input's hidden states [T, hidden] -> the state the head reads."""
        return h.astype(np.float64).mean(0).astype(np.float32) if self.pooling == "mean" else h[0]

    def __call__(self, first: np.ndarray) -> np.ndarray:
        x = first.astype(np.float32)
        for w, b in self.dense:
            x = self.act(x @ w.T + b)
        if self.norm is not None:
            w, b, eps = self.norm
            mu = x.mean(-1, keepdims=True)
            x = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b
        w, b = self.out
        return (x @ w.T + b).astype(np.float32)


def _linear(checkpoint, name: str, cols: int, rows: Optional[int] = None,
            bias: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a head's layer; bias=False: its bias where the checkpoint has one, else zeros."""
    have = set(checkpoint.names())
    for part in ("weight", "bias") if bias else ("weight",):
        if f"{name}.{part}" not in have:
            raise ValueError(f"checkpoint: tensor '{name}.{part}' of the classification head is missing")
    w = tensor_f32(checkpoint, name + ".weight")
    b = tensor_f32(checkpoint, name + ".bias") if name + ".bias" in have else np.zeros(w.shape[:1], np.float32)
    if w.ndim != 2 or w.shape[1] != cols or (rows is not None and w.shape[0] != rows) or b.shape != (w.shape[0],):
        want = f"[{rows if rows is not None else 'labels'}, {cols}]"
        raise ValueError(f"tensor '{name}.weight': expected {want} with a bias of its rows, got "
                         f"{list(w.shape)} and {list(b.shape)}")
    return w, b


def _head_norm(checkpoint, name: str, hidden: int) -> Tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a head's LayerNorm (zeros where it has no bias)."""
    have = set(checkpoint.names())
    if name + ".weight" not in have:
        raise ValueError(f"checkpoint: tensor '{name}.weight' of the classification head is missing")
    out = []
    for part in ("weight", "bias"):
        if name + "." + part not in have:
            out.append(np.zeros(hidden, np.float32))
            continue
        a = tensor_f32(checkpoint, name + "." + part)
        if a.shape != (hidden,):
            raise ValueError(f"tensor '{name}.{part}': expected [{hidden}], got {list(a.shape)}")
        out.append(a)
    return out[0], out[1]


def classifier_head(config: Dict[str, Any], checkpoint, hidden: int) -> Optional[ClassifierHead]:
    """The checkpoint's sequence-classification head, or None when it is not a *ForSequenceClassification."""
    archs = config.get("architectures") or []
    if not any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in archs):
        return None
    kind = config.get("model_type")
    form = kind if kind in ("bert", "distilbert", "modernbert") else "roberta"
    dense_names, act, (out_name,) = _FORMS[form]
    modern = form == "modernbert"
    have = set(checkpoint.names())
    dense = []
    for choices in dense_names:
        name = next((c for c in choices if c + ".weight" in have), choices[0])
        dense.append(_linear(checkpoint, name, hidden, hidden, bias=not modern))
    out = _linear(checkpoint, out_name, hidden)
    norm, pooling = None, "cls"
    if modern:
        if config.get("classifier_activation", "gelu") != "gelu":
            raise ValueError(f"config.json: field 'classifier_activation' names an unsupported activation "
                             f"{config.get('classifier_activation')!r} (supported: gelu)")
        pooling = config.get("classifier_pooling", "cls")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"config.json: field 'classifier_pooling' must be cls or mean, got {pooling!r}")
        norm = _head_norm(checkpoint, "head.norm", hidden) + (float(config.get("norm_eps", 1e-5)),)
    raw = config.get("id2label") or {}
    labels = {}
    for k, v in raw.items() if isinstance(raw, dict) else ():
        try:
            labels[int(k)] = str(v)
        except (TypeError, ValueError):
            raise ValueError(f"config.json: field 'id2label' has a key {k!r} that is not an integer") from None
    n = out[0].shape[0]
    return ClassifierHead(dense, out, {i: labels.get(i, f"LABEL_{i}") for i in range(n)}, act, norm, pooling)


def classify(model, inputs: Any) -> np.ndarray:
    """Model.classify: logits [N, labels] of texts, (text, text) pairs or lists of token ids."""
    head = model._head
    if head is None:
        raise ValueError(f"this checkpoint has no sequence-classification head (architectures: "
                         f"{model.config.get('architectures')}); use embed() or hidden_states()")
    if isinstance(inputs, (str, tuple)):
        inputs = [inputs]
    items = list(inputs)
    if not items:
        raise ValueError("inputs: empty")
    limit = model.max_context
    seqs, type_rows = [], []
    for i, it in enumerate(items):
        types = None
        if isinstance(it, str) or (isinstance(it, tuple) and len(it) == 2 and all(isinstance(x, str) for x in it)):
            tok = model._tok.truncating(limit)
            try:
                enc = tok.encode(*it) if isinstance(it, tuple) else tok.encode(it)
            except (TypeError, UnicodeEncodeError) as e:
                raise ValueError(f"inputs[{i}]: not valid Unicode text ({e})") from None
            ids, types = enc.ids, enc.type_ids
        elif isinstance(it, tuple):
            raise ValueError(f"inputs[{i}]: expected a text, a (text, text) pair or a list of token ids")
        else:
            ids = model._ids(it, f"inputs[{i}]").tolist()
            if isinstance(ids, int) or not ids:
                raise ValueError(f"inputs[{i}]: expected a text, a (text, text) pair or a non-empty list of token ids")
        seqs.append(np.asarray(ids, np.int32))
        type_rows.append(None if types is None or model.spec.n_token_types < 2 else np.asarray(types, np.int32))
    # (all of them packed into few passes; the head reads each one's first token's state, or their mean)
    return head(np.stack([head.pool(h) for h in model._encode(seqs, type_rows)]))
