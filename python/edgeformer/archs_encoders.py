"""Encoders and encoder-decoders as data: BERT, RoBERTa, MPNet, DistilBERT, ModernBERT, T5 (see archs.py)."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import _core
from .archs import Config, Derived, NameMap, _activation, _common, _layer_types_ok, _layernorm_pair, _prefix
from .archs_llama import layer_type_ropes


# RoBERTa's family: positions count from pad_token_id + 1, past the padding (position_rows); MPNet's from 2
PADDED_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")


class EncoderForm:
    """Where a BERT-like checkpoint keeps what BERT keeps: its config fields (hidden, heads, layers, MLP width,
    activation and its default, the norms' epsilon field or None for a fixed one), the prefixes of its tensors and
    layers, and each layer's tensors (canonical -> the checkpoint's, under the layer's prefix)."""

    def __init__(self, fields, prefixes, layer, linears, norms, eps=1e-12, token_types=True):
        self.fields, self.prefixes, self.layer, self.linears, self.norms = fields, prefixes, layer, linears, norms
        self.eps, self.token_types = eps, token_types


BERT_FORM = EncoderForm(
    ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "hidden_act", "gelu",
     "layer_norm_eps"), ["bert.", ""], "encoder.layer.{}.",
    {"attn.q": "attention.self.query", "attn.k": "attention.self.key", "attn.v": "attention.self.value",
     "attn.o": "attention.output.dense", "mlp.up": "intermediate.dense", "mlp.down": "output.dense"},
    {"attn_norm": "attention.output.LayerNorm", "mlp_norm": "output.LayerNorm"})
# MPNet: BERT's block under its own names, no token types, and T5's bucketed relative bias (one table for every
# layer) added to the scaled scores beside the learned positions
MPNET_FORM = EncoderForm(
    BERT_FORM.fields, ["mpnet.", ""], "encoder.layer.{}.",
    {"attn.q": "attention.attn.q", "attn.k": "attention.attn.k", "attn.v": "attention.attn.v",
     "attn.o": "attention.attn.o", "mlp.up": "intermediate.dense", "mlp.down": "output.dense"},
    {"attn_norm": "attention.LayerNorm", "mlp_norm": "output.LayerNorm"}, token_types=False)
# DistilBERT: BERT's block with six layers under other names and fields, no token types, norms of epsilon 1e-12
DISTILBERT_FORM = EncoderForm(
    ("dim", "n_heads", "n_layers", "hidden_dim", "activation", "gelu", None), ["distilbert.", ""],
    "transformer.layer.{}.",
    {"attn.q": "attention.q_lin", "attn.k": "attention.k_lin", "attn.v": "attention.v_lin",
     "attn.o": "attention.out_lin", "mlp.up": "ffn.lin1", "mlp.down": "ffn.lin2"},
    {"attn_norm": "sa_layer_norm", "mlp_norm": "output_layer_norm"}, token_types=False)


def _roberta(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """RoBERTa, XLM-RoBERTa, CamemBERT: BERT under the "roberta." prefix whose position table starts after the
    padding id's row (the first pad_token_id + 1 rows are never a token's)."""
    return _bert(cfg, tensor_names, "roberta.", cfg.get("pad_token_id", int, 1) + 1)


def _mpnet(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """MPNet (all-mpnet-base-v2 ...): positions past the padding row 1 (transformers fixes it whatever
    pad_token_id says), and a relative bias of 32 buckets up to distance 128 (fixed too: a larger
    relative_attention_num_buckets only makes rows no bucket reads)."""
    s, names = _bert(cfg, tensor_names, pos_offset=2, form=MPNET_FORM)
    rows = cfg.positive("relative_attention_num_buckets", 32)
    if rows < 32:
        raise cfg.error("relative_attention_num_buckets", f"is {rows}: MPNet reads buckets up to 31")
    s.rel_bias, s.rel_buckets, s.rel_max_distance = True, 32, 128
    p = _prefix(tensor_names, MPNET_FORM.prefixes, "embeddings.word_embeddings.weight")
    src = p + "encoder.relative_attention_bias.weight"
    names["rel_bias.weight"] = src if rows == 32 else Derived(src, rows=slice(0, 32))
    return s, names


def _distilbert(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    return _bert(cfg, tensor_names, form=DISTILBERT_FORM)


def _modernbert(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    """ModernBERT (ModernBERT-base / -large, gte-modernbert, modernbert-embed ...): a pre-norm encoder with rotary
    positions (a base per layer type), GeGLU from one input matrix, LayerNorms and projections without biases by
    default; every global_attn_every_n_layers-th layer global, the others attending to keys within local_attention / 2
    both ways; layer 0 reads the embeddings' norm without a norm of its own; a final norm."""
    s = _core.ArchSpec()
    _common(cfg, s, "hidden_size", "num_attention_heads", "num_hidden_layers")
    s.kind = _core.ModelKind.encoder
    s.ffn_size = F = cfg.positive("intermediate_size")
    s.max_position = cfg.positive("max_position_embeddings", 8192)
    s.pos = _core.PosKind.rotary
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get("norm_eps", float, 1e-5)
    s.emb_norm = s.final_norm = True
    s.first_attn_norm = False
    s.act = _activation(cfg, "hidden_activation", "gelu")
    s.gated_mlp = True
    s.attn_bias = s.attn_out_bias = cfg.get("attention_bias", bool, False)
    s.mlp_bias = cfg.get("mlp_bias", bool, False)
    n, kinds = s.n_layers, ("full_attention", "sliding_attention")
    every = cfg.positive("global_attn_every_n_layers", 3)
    types = cfg.data.get("layer_types") or [kinds[1] if i % every else kinds[0] for i in range(n)]
    if not _layer_types_ok(types, n):
        raise cfg.error("layer_types", f"expected {n} of 'sliding_attention' / 'full_attention'")
    local = cfg.positive("local_attention", 128)
    s.layer_windows = [local // 2 + 1 if t == kinds[1] else 0 for t in types]  # (|i - j| <= local / 2)
    # a rotary table per layer kind, as Gemma 3's (transformers 5's rope_parameters, or the older fields: the full
    # layers' base global_rope_theta, the local ones' local_rope_theta)
    params = cfg.get("rope_parameters", dict, None) or {}
    for kind in kinds:
        p = params.get(kind) or {}
        if not isinstance(p, dict) or p.get("rope_type", "default") != "default":
            raise cfg.error(f"rope_parameters.{kind}", "names an unsupported rotary kind (supported: default)")
    if cfg.data.get("rope_scaling") is not None:
        raise cfg.error("rope_scaling", "is set: scaled rotary tables are not supported for ModernBERT")
    full, local = (cfg.get(f, float, d) for f, d in (("global_rope_theta", 160_000.0), ("local_rope_theta", 10_000.0)))
    for field, theta in (("global_rope_theta", full), ("local_rope_theta", local)):
        if not theta > 0:
            raise cfg.error(field, f"must be positive, got {theta}")
    layer_type_ropes(Config({**cfg.data, "rope_theta": full}, cfg.source), s, types, 160_000.0, 10_000.0,
                     {"rope_type": "default", "rope_theta": local})

    have = set(tensor_names)
    p = _prefix(tensor_names, ["model.", ""], "embeddings.tok_embeddings.weight")
    names: NameMap = {"tok_embeddings.weight": p + "embeddings.tok_embeddings.weight"}

    def norm(dst: str, src: str) -> None:
        names[dst + ".weight"] = src + ".weight"
        if src + ".bias" in have:  # (norm_bias: none by default)
            names[dst + ".bias"] = src + ".bias"

    def linear(dst: str, src: str, rows=None) -> None:
        names[dst + ".weight"] = src + ".weight" if rows is None else Derived(src + ".weight", rows)
        if src + ".bias" in have:
            names[dst + ".bias"] = src + ".bias" if rows is None else Derived(src + ".bias", rows)

    norm("emb_norm", p + "embeddings.norm")
    norm("norm", p + "final_norm")
    H = s.hidden_size
    for i in range(n):
        src, dst = f"{p}layers.{i}.", f"layers.{i}."
        if i > 0:
            norm(dst + "attn_norm", src + "attn_norm")
        norm(dst + "mlp_norm", src + "mlp_norm")
        for j, a in enumerate("qkv"):
            linear(dst + f"attn.{a}", src + "attn.Wqkv", slice(j * H, (j + 1) * H))
        linear(dst + "attn.o", src + "attn.Wo")
        linear(dst + "mlp.gate", src + "mlp.Wi", slice(0, F))  # (Wi's first half goes through the activation)
        linear(dst + "mlp.up", src + "mlp.Wi", slice(F, 2 * F))
        linear(dst + "mlp.down", src + "mlp.Wo")
    return s, names


def position_rows(config, ids: np.ndarray) -> Optional[np.ndarray]:
    """The position table rows of a RoBERTa-family sequence (transformers' create_position_ids_from_input_ids:
    pad_token_id + the count of non-padding tokens so far, pad_token_id at padding); None for other models."""
    kind = config.get("model_type")
    if kind not in PADDED_POSITIONS:
        return None
    pad = 1 if kind == "mpnet" else config.get("pad_token_id")
    pad = 1 if pad is None else pad  # (an explicit null: the default, as the builder reads it)
    real = ids != pad
    return np.where(real, np.cumsum(real) + pad, pad).astype(np.int32)


def _bert(cfg: Config, tensor_names, prefix: Optional[str] = None, pos_offset: int = 0,
          form: EncoderForm = BERT_FORM) -> Tuple["_core.ArchSpec", NameMap]:
    """BERT encoder: learned positions, token types, embedding LayerNorm, post-LN blocks (and the encoders that
    share its block under other names: `form`)."""
    hidden, heads, layers, ffn, act, act_default, eps = form.fields
    s = _core.ArchSpec()
    _common(cfg, s, hidden, heads, layers)
    s.kind = _core.ModelKind.encoder
    s.ffn_size = cfg.positive(ffn)
    s.max_position = cfg.positive("max_position_embeddings", 512)
    if pos_offset:
        if pos_offset < 1 or s.max_position <= pos_offset:
            raise cfg.error("pad_token_id", f"leaves no positions in a table of {s.max_position} "
                                            f"(max_position_embeddings)")
        s.max_position -= pos_offset
        s.pos_offset = pos_offset
    pos_type = cfg.get("position_embedding_type", str, "absolute")
    if pos_type != "absolute":
        raise cfg.error("position_embedding_type", f"names an unsupported kind {pos_type!r} (supported: absolute)")
    s.pos = _core.PosKind.learned
    s.n_token_types = cfg.positive("type_vocab_size", 2) if form.token_types else 0
    s.norm = _core.NormKind.layer
    s.norm_eps = cfg.get(eps, float, form.eps) if eps else form.eps
    s.norm_position = _core.NormPosition.post
    s.final_norm = False
    s.emb_norm = True
    s.act = _activation(cfg, act, act_default)
    s.gated_mlp = False
    s.attn_bias = s.attn_out_bias = s.mlp_bias = True
    prefixes = form.prefixes if prefix is None else [prefix, ""]
    p = _prefix(tensor_names, prefixes, "embeddings.word_embeddings.weight")
    e = p + "embeddings."
    names: NameMap = {"tok_embeddings.weight": e + "word_embeddings.weight",
                      "pos_embeddings.weight": e + "position_embeddings.weight"}
    if form.token_types:
        names["token_type_embeddings.weight"] = e + "token_type_embeddings.weight"
    _layernorm_pair(names, "emb_norm", e + "LayerNorm", tensor_names)
    for i in range(s.n_layers):
        src, dst = p + form.layer.format(i), f"layers.{i}."
        for a, b in form.linears.items():
            names[dst + a + ".weight"] = src + b + ".weight"
            names[dst + a + ".bias"] = src + b + ".bias"
        for a, b in form.norms.items():
            _layernorm_pair(names, dst + a, src + b, tensor_names)
    return s, names


def t5_specs(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap, "_core.ArchSpec", NameMap]:
    """T5 v1.0 / v1.1: an encoder and a decoder stack (relative position buckets, RMS norm, no score scaling)."""
    enc = _core.ArchSpec()
    enc.model_type = cfg.get("model_type", str)
    enc.vocab_size = cfg.positive("vocab_size")
    enc.hidden_size = cfg.positive("d_model")
    enc.n_heads = enc.n_kv_heads = cfg.positive("num_heads")
    enc.head_dim = cfg.positive("d_kv")
    enc.ffn_size = cfg.positive("d_ff")
    enc.n_layers = cfg.positive("num_layers")
    enc.max_position = cfg.positive("n_positions", 512)
    enc.norm = _core.NormKind.rms
    enc.norm_eps = cfg.get("layer_norm_epsilon", float, 1e-6)
    enc.attn_scale = 1.0
    enc.pos = _core.PosKind.relative
    enc.rel_buckets = cfg.positive("relative_attention_num_buckets", 32)
    enc.rel_max_distance = cfg.positive("relative_attention_max_distance", 128)
    proj = cfg.get("feed_forward_proj", str, "relu")
    gated = proj.startswith("gated-")
    act = proj[len("gated-"):] if gated else proj
    acts = {"relu": _core.Act.relu, "gelu": _core.Act.gelu_tanh, "gelu_new": _core.Act.gelu_tanh,
            "silu": _core.Act.silu}
    if act not in acts:
        raise cfg.error("feed_forward_proj", f"names an unsupported activation {proj!r}")
    enc.act = acts[act]
    enc.gated_mlp = gated
    enc.kind = _core.ModelKind.encoder
    dec = _core.ArchSpec()
    for f in ("model_type", "vocab_size", "hidden_size", "n_heads", "n_kv_heads", "head_dim", "ffn_size",
              "max_position", "norm", "norm_eps", "attn_scale", "pos", "rel_buckets", "rel_max_distance", "act",
              "gated_mlp"):
        setattr(dec, f, getattr(enc, f))
    dec.kind = _core.ModelKind.decoder
    dec.n_layers = cfg.positive("num_decoder_layers", enc.n_layers)
    dec.cross_attention = True
    # transformers 5 writes scale_decoder_outputs (and always ties); older configs say tie_word_embeddings,
    # which also meant scaling. The head is untied exactly when the checkpoint stores lm_head.weight.
    tied_cfg = cfg.get("tie_word_embeddings", bool, True)
    if cfg.get("scale_decoder_outputs", bool, tied_cfg):
        dec.logits_scale = enc.hidden_size ** -0.5
    dec.tie_embeddings = "lm_head.weight" not in set(tensor_names) or (tied_cfg and "scale_decoder_outputs" not in cfg.data)
    mlp = {"gate": "wi_0", "up": "wi_1", "down": "wo"} if gated else {"up": "wi", "down": "wo"}

    def stack(prefix: str, n: int, spec, decoder: bool) -> NameMap:
        names: NameMap = {"tok_embeddings.weight": "shared.weight",
                          "rel_bias.weight": f"{prefix}block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                          "norm.weight": f"{prefix}final_layer_norm.weight"}
        for i in range(n):
            src, dst = f"{prefix}block.{i}.layer.", f"layers.{i}."
            names[dst + "attn_norm.weight"] = src + "0.layer_norm.weight"
            for a in "qkvo":
                names[dst + f"attn.{a}.weight"] = src + f"0.SelfAttention.{a}.weight"
            ff = 1
            if decoder:
                names[dst + "cross_norm.weight"] = src + "1.layer_norm.weight"
                for a in "qkvo":
                    names[dst + f"cross.{a}.weight"] = src + f"1.EncDecAttention.{a}.weight"
                ff = 2
            names[dst + "mlp_norm.weight"] = src + f"{ff}.layer_norm.weight"
            for a, b in mlp.items():
                names[dst + f"mlp.{a}.weight"] = src + f"{ff}.DenseReluDense.{b}.weight"
        return names

    enc_names = stack("encoder.", enc.n_layers, enc, False)
    dec_names = stack("decoder.", dec.n_layers, dec, True)
    if not dec.tie_embeddings:
        dec_names["lm_head.weight"] = "lm_head.weight"
    return enc, enc_names, dec, dec_names
