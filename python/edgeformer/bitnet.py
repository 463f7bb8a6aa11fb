"""BitNet b1.58 (model_type bitnet: Microsoft's BitNet b1.58 2B4T): a Llama with squared-ReLU gates and sub-norms
(the attention's output normalized before o, the MLP's hidden before down) whose projections are BitLinear layers:
ternary weights (-1, 0, 1) with one scale per matrix, times activations quantized to int8 per token (absmax), as
transformers' BitNet quantization (quantization_config.quant_method "bitnet") computes them.

The checkpoint's forms (quantization_config.linear_class / quantization_mode):
  bitlinear (offline)      weight: uint8 [rows / 4, K], four ternary rows per byte (row c * rows / 4 + i of byte row i
                           at bits 2c, the value plus 1); weight_scale: its inverse scale (the product divided by it)
  autobitlinear, offline   the same weights packed (or the ternary values as floats); weight_scale multiplies
  autobitlinear, online    float master weights, ternarized at load as transformers does on every forward:
                           scale = mean |w|, values round(w / scale) clamped to [-1, 1]
Each matrix is loaded as q8_0 rows of its values with scales of 1 (at 2 bits a value in the kernels' ternary
panels, quant.h), its scale a float of its own ("<name>.scale": Tensor::scale); the row-scaled product quantizes the
activations per token exactly as BitLinear does."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _core
from .archs import Config, Derived, NameMap, _as_f32

_PARTS = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down")  # (the BitLinear layers)
_MODES = (("bitlinear", "offline"), ("bitlinear", "online"), ("autobitlinear", "offline"), ("autobitlinear", "online"))


def _unpack(packed: np.ndarray, what: str) -> np.ndarray:
    """transformers' packed BitNet weights (uint8 [rows / 4, K]) -> int8 [rows, K] of -1, 0, 1."""
    v = np.stack([(packed >> np.uint8(2 * c)) & np.uint8(3) for c in range(4)])  # [4, rows / 4, K]
    if (v == 3).any():
        raise ValueError(f"{what}: a packed ternary weight holds the value 3 (only 0, 1, 2: -1, 0, 1 plus 1)")
    return (v.reshape(-1, packed.shape[-1]).astype(np.int8) - 1)


def pack_ternary(values: np.ndarray) -> np.ndarray:
    """int8 [rows, K] of -1, 0, 1 (rows a multiple of 4) -> transformers' packed uint8 [rows / 4, K]. For tests and
    tools that make BitNet checkpoints."""
    v = (values.astype(np.int16) + 1).astype(np.uint8).reshape(4, -1, values.shape[-1])
    return (v[0] | (v[1] << 2) | (v[2] << 4) | (v[3] << 6)).astype(np.uint8)


def ternary_q8_0(values: np.ndarray) -> np.ndarray:
    """int8 [rows, K] of -1, 0, 1 (K a multiple of 32) -> q8_0 rows whose every scale is 1."""
    rows, k = values.shape
    out = np.empty((rows, k // 32, 34), np.uint8)
    out[..., 0:2] = np.frombuffer(np.float16(1).tobytes(), np.uint8)
    out[..., 2:] = values.reshape(rows, k // 32, 32).view(np.uint8)
    return out.reshape(rows, -1)


class _BitLinear:
    """One BitLinear matrix of the checkpoint: its ternary values and its scale."""

    def __init__(self, src: str, linear_class: str, mode: str, rows: int):
        self.src, self.linear_class, self.mode, self.rows = src, linear_class, mode, rows
        # (AutoBitLinear in online mode ternarizes float master weights; every other form stores the values)
        self.online = linear_class == "autobitlinear" and mode == "online"
        self._mean: Optional[np.float32] = None  # (online: the master weights' scale, kept from values() for scale())

    def _master(self, checkpoint) -> np.ndarray:
        t = checkpoint.get(self.src)
        if t.dtype == _core.DType.u8:
            raise ValueError(f"tensor '{self.src}': quantization_mode 'online' needs float master weights, got packed "
                             f"ones")
        w = _as_f32(t.numpy(), t.dtype)
        if w.ndim != 2 or w.shape[0] != self.rows:
            raise ValueError(f"tensor '{self.src}': expected {self.rows} rows, got shape {list(w.shape)}")
        return w

    @staticmethod
    def _mean_scale(w: np.ndarray) -> np.float32:  # (transformers' WeightQuant: the mean magnitude, at least 1e-5)
        return np.float32(max(float(np.abs(w, dtype=np.float64).mean()), 1e-5))

    def values(self, checkpoint) -> np.ndarray:
        """int8 [rows, K] of -1, 0, 1."""
        if self.online:
            w = self._master(checkpoint)
            self._mean = self._mean_scale(w)
            return np.clip(np.round(w * (np.float32(1) / self._mean)), -1, 1).astype(np.int8)
        t = checkpoint.get(self.src)
        a, what = t.numpy(), f"tensor '{self.src}'"
        if t.dtype == _core.DType.u8:
            if a.ndim != 2 or a.shape[0] * 4 != self.rows:
                raise ValueError(f"{what}: expected packed ternary weights [{self.rows // 4}, K], got shape "
                                 f"{list(a.shape)}")
            return _unpack(a, what)
        w = _as_f32(a, t.dtype)
        if w.ndim != 2 or w.shape[0] != self.rows or not np.isin(w, (-1.0, 0.0, 1.0)).all():
            raise ValueError(f"{what}: expected {self.rows} rows of ternary values (-1, 0, 1), as quantization_mode "
                             f"'offline' stores them")
        return w.astype(np.int8)

    def scale(self, checkpoint) -> float:
        """What the matrix's products are multiplied by."""
        if self.online:  # (values() has read the master weights already, where it ran first)
            return float(self._mean if self._mean is not None else self._mean_scale(self._master(checkpoint)))
        name = self.src[: -len("weight")] + "weight_scale"
        if name not in checkpoint:
            raise ValueError(f"tensor '{self.src}': the checkpoint has no '{name}' (BitNet's scale of each matrix)")
        st = checkpoint.get(name)
        v = _as_f32(st.numpy(), st.dtype).reshape(-1)
        if v.size != 1 or not np.isfinite(v[0]) or v[0] == 0:
            raise ValueError(f"tensor '{name}': expected one finite non-zero scale, got {v.tolist()[:4]}")
        # BitLinear divides its products by the stored scale, AutoBitLinear multiplies them
        return 1.0 / float(v[0]) if self.linear_class == "bitlinear" else float(v[0])


class Ternary(Derived):
    """A BitLinear matrix as q8_0 rows of its ternary values (scales of 1)."""

    def __init__(self, linear: _BitLinear):
        super().__init__(linear.src)
        self.linear = linear

    def build(self, checkpoint):
        values = self.linear.values(checkpoint)
        if values.shape[1] % 32:
            raise ValueError(f"tensor '{self.src}': BitNet matrices need rows of whole blocks of 32, got "
                             f"{values.shape[1]} columns")
        return ternary_q8_0(values), _core.DType.q8_0, checkpoint.get(self.src).source


class TernaryScale(Derived):
    """A BitLinear matrix's scale: [1] f32."""

    def __init__(self, linear: _BitLinear):
        super().__init__(linear.src)
        self.linear = linear

    def build(self, checkpoint):
        return (np.asarray([self.linear.scale(checkpoint)], np.float32), _core.DType.f32,
                checkpoint.get(self.src).source)


def _quant_config(cfg: Config) -> Optional[Tuple[str, str, list]]:
    """(linear_class, quantization_mode, modules_to_not_convert) of a BitNet quantization_config, or None where the
    checkpoint has none (plain float projections, computed as such, as transformers does)."""
    q = cfg.data.get("quantization_config")
    if q is None:
        return None
    if not isinstance(q, dict) or q.get("quant_method") != "bitnet":
        raise cfg.error("quantization_config", f"a bitnet model reads quant_method 'bitnet', got {q!r}")
    lc, mode = q.get("linear_class", "bitlinear"), q.get("quantization_mode", "offline")
    if (lc, mode) not in _MODES:
        raise cfg.error("quantization_config", f"linear_class must be 'bitlinear' or 'autobitlinear' and "
                                               f"quantization_mode 'offline' or 'online', got {lc!r}, {mode!r}")
    if q.get("use_rms_norm"):
        raise cfg.error("quantization_config.use_rms_norm", "an RMSNorm inside each BitLinear is not supported yet")
    skip = q.get("modules_to_not_convert") or []
    if not isinstance(skip, list) or not all(isinstance(m, str) for m in skip):
        raise cfg.error("quantization_config.modules_to_not_convert", f"expected a list of names, got {skip!r}")
    return lc, mode, skip


def _converted(module: str, skip: list) -> bool:
    """Whether transformers makes a BitLinear of this module (should_convert_module: a name in
    modules_to_not_convert matches from the start up to a module boundary, or as a suffix)."""
    import re

    return not any(re.match(rf"(?:{k})(?:(?<=\.)|(?=\.|$))", module) or module.endswith(k) for k in skip)


def _bitnet(cfg: Config, tensor_names) -> Tuple["_core.ArchSpec", NameMap]:
    from .archs_recent import _as_llama

    s, names = _as_llama(cfg, tensor_names, "bitnet")
    s.sub_norms = True
    present = set(tensor_names)
    for i in range(s.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        names[dst + "attn.sub_norm.weight"] = src + "self_attn.attn_sub_norm.weight"
        names[dst + "mlp.sub_norm.weight"] = src + "mlp.ffn_sub_norm.weight"
        for part in _PARTS:  # (a GGUF file's scale tensors, which multiply: bitnet.cpp's converter writes them)
            scale = names[f"{dst}{part}.weight"][: -len("weight")] + "scale"
            if scale in present:
                names[f"{dst}{part}.scale"] = scale
    q = _quant_config(cfg)
    if q is None:
        return s, names
    lc, mode, skip = q
    qd, kd = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    rows = dict(zip(_PARTS, (qd, kd, kd, s.hidden_size, s.ffn_size, s.ffn_size, s.hidden_size)))
    for i in range(s.n_layers):
        for part, n in rows.items():
            canonical = f"layers.{i}.{part}.weight"
            module = names[canonical][: -len(".weight")]
            if not _converted(module, skip):
                continue
            linear = _BitLinear(names[canonical], lc, mode, n)
            names[canonical] = Ternary(linear)
            names[f"layers.{i}.{part}.scale"] = TernaryScale(linear)
    return s, names


BITNET = {"bitnet": _bitnet}


# -- GGUF (llama.cpp's bitnet) -------------------------------------------------------------------------------------

def config_bitnet(m, arch: str, names: set, rope_freqs: Any) -> Dict[str, Any]:
    """The config of a llama.cpp bitnet file: a Llama's keys, a tied head. The MLP's activation: the file's
    bitnet.hidden_activation (llama.cpp's fix), else squared ReLU where the tokenizer is Llama 3's (BitNet b1.58 2B4T,
    whose converter writes no key; llama.cpp computes SiLU there, wrongly), else SiLU (1bitLLM's BitNet b1.58
    models)."""
    from .gguf_readers import _config_llama

    cfg = _config_llama(m, arch, names, rope_freqs, window=False)
    for k in ("attention_bias", "mlp_bias"):
        cfg.pop(k, None)
    if (cfg.get("rope_scaling") or {}).get("factor") == 1.0:  # (its converter writes linear scaling by 1)
        cfg.pop("rope_scaling")
    key = f"{arch}.hidden_activation"
    act = m.get(key, str, None)
    if act is None:
        act = "relu2" if m.get("tokenizer.ggml.model", str, None) == "gpt2" else "silu"
    elif act not in ("relu2", "silu"):
        raise m.error(key, f"expected 'relu2' or 'silu', got {act!r}")
    cfg.update(model_type="bitnet", architectures=["BitNetForCausalLM"], hidden_act=act)
    return cfg


def gguf_ternary(tmap, spec: "_core.ArchSpec", mapped: Dict[str, str], path: str) -> None:
    """A bitnet file's float projections (llama.cpp's converter writes each as its values times the scale, in f32,
    f16 or bf16) as ternary q8_0 rows and their scale, so that they compute as BitLinear layers do; TQ1_0 / TQ2_0
    (and q8_0) projections are read as stored."""
    for i in range(spec.n_layers):
        for part in _PARTS:
            canonical = f"layers.{i}.{part}.weight"
            g = mapped.get(canonical)
            t = tmap.get(g) if g is not None else None
            if t is None or t.dtype not in (_core.DType.f32, _core.DType.f16, _core.DType.bf16):
                continue
            w = _as_f32(t.numpy(), t.dtype)
            c = float(np.abs(w).max())
            values = np.sign(w).astype(np.int8)
            if c == 0 or not (np.abs(w)[values != 0] == np.float32(c)).all() or w.shape[1] % 32:
                raise ValueError(f"{path}: tensor '{g}': a bitnet projection must hold ternary values (-s, 0, s) in "
                                 f"rows of whole blocks of 32")
            scale = c
            sname = mapped.get(f"layers.{i}.{part}.scale")
            if sname is not None:  # (a file with both: the products times both)
                s = tmap.get(sname)
                scale *= float(_as_f32(s.numpy(), s.dtype).reshape(-1)[0])
            tmap.add_array(g + " [ternary]", ternary_q8_0(values), _core.DType.q8_0, t.source, True)
            tmap.add_array(g + " [scale]", np.asarray([scale], np.float32), _core.DType.f32, t.source, True)
            mapped[canonical] = g + " [ternary]"
            mapped[f"layers.{i}.{part}.scale"] = g + " [scale]"


def gguf_projection(a: np.ndarray, dtype, scale: float, g: str, tensors: Dict[str, tuple]) -> bool:
    """A loaded model's BitNet projection (ternary q8_0 rows, scale) as llama.cpp reads it: TQ2_0 values (scales of
    1) where rows are whole blocks of 256, else the q8_0 rows, and the scale as its own tensor ('.scale', which
    llama.cpp's bitnet multiplies by). False where the matrix has no scale of its own."""
    if scale == 1.0:
        return False
    rows = a.shape[0]
    values = a.reshape(rows, -1, 34)[..., 2:].view(np.int8).reshape(rows, -1)
    if values.shape[1] % 256 == 0:
        import gguf.quants

        tensors[g] = (gguf.quants.quantize(values.astype(np.float32), gguf.GGMLQuantizationType.TQ2_0),
                      _core.DType.tq2_0)
    else:
        tensors[g] = (a, dtype)
    tensors[g[: -len("weight")] + "scale"] = (np.asarray([scale], np.float32), _core.DType.f32)
    return True
