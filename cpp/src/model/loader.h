// How the model's constructor reads its weights (model_load.cc): the checkpoint's tensors by canonical name, used as
// stored or converted, quantized rows repacked into panels, weights derived at load dropped once copied.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "edgeformer/errors.h"
#include "edgeformer/quant.h"
#include "edgeformer/safetensors.h"
#include "edgeformer/tensor.h"
#include "edgeformer/cpu.h"
#include "edgeformer/threadpool.h"

namespace ef {
namespace loading {

// Gathered: a table only ever read a row at a time, and too large to copy (Gemma 4 / 3n's per-layer embeddings: 2.3B
// values in E2B): kept as stored, in its file mapping, whatever dtype the model is asked for
enum class Role { Layer, Embedding, Head, Gathered };

// Converts a float tensor row by row into another float type or a quantized type, over the thread pool.
// shared: q8_0 rows whose blocks share one scale (the "int8" dtype).
inline Tensor convert_rows(const Tensor& t, DType to, ThreadPool* pool, bool shared = false) {
  if (!is_quantized(to)) return t.converted(to);
  const int64_t K = t.shape.back(), rows = t.numel() / std::max<int64_t>(K, 1);
  Tensor out = Tensor::empty(to, t.shape);
  out.name = t.name;
  out.source = t.source;
  const KernelTable& k = kernels();
  const int64_t src_row = t.row_bytes();
  pool->parallel_for(rows, 1, [&](int, int64_t r0, int64_t r1) {
    std::vector<float> buf(K);
    for (int64_t r = r0; r < r1; r++) {
      k.to_f32[(int)t.dtype]((const uint8_t*)t.data + r * src_row, buf.data(), K);
      uint8_t* o = (uint8_t*)out.data + r * out.row_bytes();
      if (shared) quantize_row_q8_0_shared(buf.data(), o, K);
      else quantize_row(to, buf.data(), o, K);
    }
  });
  return out;
}

struct Loader {
  const TensorMap& ckpt;
  const std::map<std::string, std::string>& names;
  TensorMap* consume;  // ckpt, when its consumable entries may be erased once copied (Model's constructor)
  DType convert_to;
  bool convert;
  bool int8;  // convert_to is q8_0, layer and head matrices with one scale per row (CTranslate2's int8)
  ThreadPool* pool;
  bool progress;
  int64_t total = 0, done = 0;

  const Tensor* find(const std::string& canonical) const {
    auto it = names.find(canonical);
    if (it == names.end()) return nullptr;
    return &ckpt.get(it->second);
  }
  void check(const Tensor& t, const std::vector<int64_t>& shape, bool allow_quantized = false) const {
    if (!is_float_weight(t.dtype) && !(allow_quantized && is_quantized(t.dtype)))
      throw ValueError(t.describe() + ": expected dtype f32, f16 or bf16" +
                       std::string(allow_quantized ? " or a quantized type" : "") + ", got " + dtype_name(t.dtype));
    if (t.shape != shape)
      throw ValueError(t.describe() + ": expected shape " + shape_to_string(shape) + ", got " + t.shape_str());
  }
  // The type a matrix gets at load. Quantization policy: layer matrices take the asked type; embeddings
  // and the head keep 8 bits (q8_0) for 2- to 6-bit targets (q6_k for the head of a 2- to 5-bit one, as
  // llama.cpp does); a matrix whose rows are not whole blocks stays f16.
  DType target(const Tensor& t, Role role) const {
    if (!convert || role == Role::Gathered) return t.dtype;
    DType to = convert_to;
    if (is_quantized(to) && role != Role::Layer && to != DType::Q8_0)
      to = role == Role::Head && t.shape.back() % 256 == 0 && to != DType::Q6_K ? DType::Q6_K : DType::Q8_0;
    if (is_quantized(to) && t.shape.back() % dtype_block(to) != 0) to = DType::F16;
    return to;
  }
  // A matrix used as stored (zero-copy, quantized ones included), or converted when the user asked for a dtype.
  Tensor matrix(const std::string& canonical, const std::vector<int64_t>& shape, Role role = Role::Layer) {
    Tensor out = load_matrix(canonical, shape, role);
    // a weight derived at load (Python's Derived: a regrouped or re-encoded copy) is dropped once the model
    // holds its own copy, so that loading needs one copy of it at a time, not two
    const std::string& key = names.at(canonical);
    if (consume && consume->consumable(key) && out.data != consume->get(key).data) consume->erase(key);
    return out;
  }
  Tensor load_matrix(const std::string& canonical, const std::vector<int64_t>& shape, Role role) {
    const Tensor* t = find(canonical);
    if (!t) throw ValueError("the weight map has no entry for '" + canonical + "'");
    if (t->dtype == DType::MXFP4) return panels(read_as(*t, shape, DType::Q5_0, mxfp4_row_to_q5_0), role);
    if (t->dtype == DType::TQ1_0 || t->dtype == DType::TQ2_0) {
      const DType from = t->dtype;
      Tensor q = read_as(*t, shape, DType::Q8_0,
                         [from](const uint8_t* src, uint8_t* dst, int64_t K) { ternary_row_to_q8_0(from, src, dst, K); });
      q.scale = matrix_scale(canonical, q);
      return panels(q, role);
    }
    check(*t, shape, true);
    if (const float s = matrix_scale(canonical, *t); s != 1.f) {  // (BitNet's ternary rows and their scale)
      Tensor scaled = *t;
      scaled.scale = s;
      return panels(scaled, role);
    }
    if (is_quantized(t->dtype)) return panels(*t, role);  // already quantized (GGUF)
    const DType to = target(*t, role);
    Tensor out = *t;
    if (to != t->dtype) out = convert_rows(*t, to, pool, int8 && role != Role::Embedding && to == DType::Q8_0);
    else if (!t->rows_contiguous()) out = t->converted(t->dtype);
    out = panels(out, role);
    if (!out.packed && out.data == t->data && t->mapped && role != Role::Embedding && role != Role::Gathered &&
        t->contiguous()) {
      // layer and head matrices leave the file mapping for huge-page memory (decode streams them every
      // step); the file's pages are released, so resident memory stays the file's size
      out = Tensor::empty(t->dtype, t->shape);
      out.name = t->name;
      out.source = t->source;
      std::memcpy(out.data, t->data, t->nbytes());
      t->mapped->drop_pages(t->data, t->nbytes());
    }
    if (progress && convert) {
      done += (int64_t)t->nbytes();
      std::fprintf(stderr, "\r[edgeformer] converting weights to %s: %3d%%", int8 ? "int8" : dtype_name(convert_to),
                   (int)(100 * done / std::max<int64_t>(total, 1)));
      std::fflush(stderr);
    }
    return out;
  }
  // The scale a matrix's values are multiplied by: its "<name>.scale" entry where it has one (BitNet's, one per
  // matrix: the matrix is then q8_0 rows of -1, 0, 1 whose scales are 1), else 1
  float matrix_scale(const std::string& canonical, const Tensor& w) const {
    const std::string suffix = ".weight";
    if (canonical.size() <= suffix.size() || canonical.compare(canonical.size() - suffix.size(), suffix.size(), suffix))
      return 1.f;
    const Tensor* s = find(canonical.substr(0, canonical.size() - suffix.size()) + ".scale");
    if (!s) return 1.f;
    if (!is_float_weight(s->dtype) || s->numel() != 1)
      throw ValueError(s->describe() + ": a matrix's scale must be one float, got " + dtype_name(s->dtype) + " " +
                       s->shape_str());
    if (w.dtype != DType::Q8_0)
      throw ValueError(w.describe() + ": a matrix with a scale of its own must be q8_0 rows, got " + dtype_name(w.dtype));
    const Tensor f = s->to_contiguous_f32();
    const float v = *(const float*)f.data;
    if (!std::isfinite(v) || v == 0.f) throw ValueError(s->describe() + ": a matrix's scale must be finite and non-zero");
    return v;
  }
  // A type that is stored, never computed with, read as one that is, value for value, row by row (quant.h:
  // row(src, dst, K), whose ValueError gets the tensor's name); the file's pages are then released. GGUF's MXFP4
  // (gpt-oss's experts) as q5_0; llama.cpp's TQ1_0 / TQ2_0 (BitNet's) as q8_0.
  template <class RowFn>
  Tensor read_as(const Tensor& t, const std::vector<int64_t>& shape, DType to, RowFn row) const {
    if (t.shape != shape)
      throw ValueError(t.describe() + ": expected shape " + shape_to_string(shape) + ", got " + t.shape_str());
    Tensor out = Tensor::empty(to, t.shape);
    out.name = t.name;
    out.source = t.source;
    try {
      for (int64_t r = 0; r < t.shape[0]; r++)
        row((const uint8_t*)t.data + r * t.row_bytes(), (uint8_t*)out.data + r * out.row_bytes(), t.shape[1]);
    } catch (const ValueError& e) {
      throw ValueError(t.describe() + ": " + e.what());
    }
    if (t.mapped) t.mapped->drop_pages(t.data, t.nbytes());
    return out;
  }
  // Quantized and float matrices of layers and heads are repacked into panels where this ISA has panel kernels
  // (EDGEFORMER_PANELS=0 keeps the stored rows); embeddings (and a head tied to them) keep their rows.
  Tensor panels(const Tensor& t, Role role) const {
    const KernelTable& k = kernels();
    const int dt = (int)t.dtype;
    if (role == Role::Embedding || role == Role::Gathered || !packable(t.dtype, t.shape[1]) ||
        !(is_quantized(t.dtype) ? k.qmatmul_panel[dt] != nullptr : dt < kNumFloatDTypes && k.matmul_panel[dt]))
      return t;
    static const bool off = [] {
      const char* e = std::getenv("EDGEFORMER_PANELS");
      return e && std::string(e) == "0";
    }();
    if (off) return t;
    Tensor p = pack_panels(t, pool);
    if (t.mapped) t.mapped->drop_pages(t.data, t.nbytes());  // the file's copy is no longer read
    return p;
  }
  // A small tensor (norm weight, bias, relative bias table): converted to f32 once. Absent and optional -> empty.
  Tensor small(const std::string& canonical, const std::vector<int64_t>& shape, bool required) const {
    const Tensor* t = find(canonical);
    if (!t) {
      if (required) throw ValueError("the weight map has no entry for '" + canonical + "'");
      return Tensor();
    }
    check(*t, shape);
    return t->to_contiguous_f32();
  }
  Tensor vec(const std::string& canonical, int64_t n, bool required) const { return small(canonical, {n}, required); }
  // A small matrix kept in f32 whatever its stored type (a router: llama.cpp's quantizer keeps it f32, other
  // tools may not): quantized rows are dequantized once.
  Tensor small_f32(const std::string& canonical, const std::vector<int64_t>& shape) const {
    const Tensor* t = find(canonical);
    if (!t || !is_quantized(t->dtype)) return small(canonical, shape, true);
    check(*t, shape, true);
    Tensor out = Tensor::empty(DType::F32, shape);
    out.name = t->name;
    out.source = t->source;
    for (int64_t r = 0; r < shape[0]; r++)
      dequantize_row(t->dtype, (const uint8_t*)t->data + r * t->row_bytes(), (float*)out.data + r * shape[1], shape[1]);
    return out;
  }
};

}  // namespace loading
}  // namespace ef
