// The generic transformer decoder. One block, configured by ArchSpec:
//   h = norm1(x);  q, k, v = h Wq, h Wk, h Wv (+ b);  rotary(q, k);  a = attention(q, Kcache, Vcache) Wo (+ b)
//   sequential: x += a;  x += mlp(norm2(x))        parallel: x += a + mlp(h)
//   mlp(h) = act(h Wgate) * (h Wup) Wdown  (gated)  or  act(h Wup) Wdown
#include "edgeformer/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "edgeformer/errors.h"
#include "edgeformer/ops.h"
#include "edgeformer/rope.h"

namespace ef {

void ArchSpec::validate() const {
  auto positive = [&](int64_t v, const char* field) {
    EF_CHECK(v > 0, "config field '" + std::string(field) + "' must be positive, got " + std::to_string(v));
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(n_layers, "num_hidden_layers");
  positive(n_heads, "num_attention_heads");
  positive(n_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(ffn_size, "intermediate_size");
  EF_CHECK(n_heads % n_kv_heads == 0, "config: num_attention_heads (" + std::to_string(n_heads) +
                                          ") must be a multiple of num_key_value_heads (" + std::to_string(n_kv_heads) + ")");
  EF_CHECK(norm_eps > 0 && std::isfinite(norm_eps), "config field 'rms_norm_eps' must be positive");
  EF_CHECK(sliding_window >= 0, "config field 'sliding_window' must be non-negative");
  if (pos == PosKind::Rotary) {
    int rd = rope.rotary_dim > 0 ? rope.rotary_dim : head_dim;
    EF_CHECK(rd % 2 == 0 && rd <= head_dim, "config: rotary dimension " + std::to_string(rd) +
                                                " must be even and at most head_dim " + std::to_string(head_dim));
    EF_CHECK(rope.theta > 0, "config field 'rope_theta' must be positive");
    if (rope.scaling != RopeScaling::None)
      EF_CHECK(rope.factor > 0 && std::isfinite(rope.factor), "config field 'rope_scaling.factor' must be positive");
    if (rope.scaling == RopeScaling::Llama3 || rope.scaling == RopeScaling::Yarn)
      EF_CHECK(rope.original_max_position > 0,
               "config field 'rope_scaling.original_max_position_embeddings' must be positive");
    if (rope.scaling == RopeScaling::Dynamic) positive(max_position, "max_position_embeddings");
  } else if (pos != PosKind::None) {
    throw ValueError("position kind not supported yet for '" + model_type + "'");
  }
  EF_CHECK(kind == ModelKind::Decoder, "only decoder models are supported so far ('" + model_type + "')");
}

namespace {

struct Loader {
  const TensorMap& ckpt;
  const std::map<std::string, std::string>& names;
  DType convert_to;
  bool convert;

  const Tensor* find(const std::string& canonical) const {
    auto it = names.find(canonical);
    if (it == names.end()) return nullptr;
    return &ckpt.get(it->second);
  }
  void check(const Tensor& t, const std::vector<int64_t>& shape) const {
    if (!is_float_weight(t.dtype))
      throw ValueError(t.describe() + ": expected dtype f32, f16 or bf16, got " + dtype_name(t.dtype));
    if (t.shape != shape)
      throw ValueError(t.describe() + ": expected shape " + shape_to_string(shape) + ", got " + t.shape_str());
  }
  // A matrix used as stored (zero-copy), or converted when the user asked for a dtype.
  Tensor matrix(const std::string& canonical, const std::vector<int64_t>& shape) const {
    const Tensor* t = find(canonical);
    if (!t) throw ValueError("the weight map has no entry for '" + canonical + "'");
    check(*t, shape);
    if (!t->rows_contiguous()) return t->converted(t->dtype);
    if (convert && t->dtype != convert_to) return t->converted(convert_to);
    return *t;
  }
  // A vector (norm weight, bias): small, converted to f32 once. Absent and optional -> empty.
  Tensor vec(const std::string& canonical, int64_t n, bool required) const {
    const Tensor* t = find(canonical);
    if (!t) {
      if (required) throw ValueError("the weight map has no entry for '" + canonical + "'");
      return Tensor();
    }
    check(*t, {n});
    return t->to_contiguous_f32();
  }
};

const float* fptr(const Tensor& t) { return t.data ? (const float*)t.data : nullptr; }

}  // namespace

Model::Model(const ArchSpec& spec, const TensorMap& ckpt, const std::map<std::string, std::string>& names,
             const ModelOptions& opts)
    : spec_(spec), opts_(opts) {
  spec_.validate();
  kernels();  // an unusable EDGEFORMER_ISA fails here, at load
  EF_CHECK(opts.threads >= 0, "argument 'threads' must be positive, got " + std::to_string(opts.threads));
  EF_CHECK(opts.max_context >= 0, "argument 'max_context' must be positive, got " + std::to_string(opts.max_context));
  max_ctx_ = opts.max_context > 0 ? opts.max_context : spec_.max_position;
  EF_CHECK(max_ctx_ > 0, "max_context is unknown: the config has no 'max_position_embeddings'; pass max_context=");
  Loader L{ckpt, names, DType::F32, !opts.dtype.empty()};
  if (L.convert) L.convert_to = parse_dtype(opts.dtype, "argument 'dtype'");

  const int64_t H = spec_.hidden_size, V = spec_.vocab_size, F = spec_.ffn_size, hd = spec_.head_dim;
  const int64_t QD = (int64_t)spec_.n_heads * hd, KD = (int64_t)spec_.n_kv_heads * hd;
  const bool ln = spec_.norm == NormKind::Layer;
  tok_emb_ = L.matrix("tok_embeddings.weight", {V, H});
  final_norm_w_ = L.vec("norm.weight", H, true);
  if (ln) final_norm_b_ = L.vec("norm.bias", H, false);
  lm_head_ = spec_.tie_embeddings ? tok_emb_ : L.matrix("lm_head.weight", {V, H});
  layers_.resize(spec_.n_layers);
  for (int i = 0; i < spec_.n_layers; i++) {
    LayerWeights& w = layers_[i];
    std::string p = "layers." + std::to_string(i) + ".";
    w.attn_norm_w = L.vec(p + "attn_norm.weight", H, true);
    if (ln) w.attn_norm_b = L.vec(p + "attn_norm.bias", H, false);
    if (!spec_.parallel_residual) {
      w.mlp_norm_w = L.vec(p + "mlp_norm.weight", H, true);
      if (ln) w.mlp_norm_b = L.vec(p + "mlp_norm.bias", H, false);
    }
    w.wq = L.matrix(p + "attn.q.weight", {QD, H});
    w.wk = L.matrix(p + "attn.k.weight", {KD, H});
    w.wv = L.matrix(p + "attn.v.weight", {KD, H});
    w.wo = L.matrix(p + "attn.o.weight", {H, QD});
    if (spec_.attn_bias) {
      w.bq = L.vec(p + "attn.q.bias", QD, true);
      w.bk = L.vec(p + "attn.k.bias", KD, true);
      w.bv = L.vec(p + "attn.v.bias", KD, true);
    }
    if (spec_.attn_out_bias) w.bo = L.vec(p + "attn.o.bias", H, true);
    if (spec_.gated_mlp) w.w_gate = L.matrix(p + "mlp.gate.weight", {F, H});
    w.w_up = L.matrix(p + "mlp.up.weight", {F, H});
    w.w_down = L.matrix(p + "mlp.down.weight", {H, F});
    if (spec_.mlp_bias) {
      if (spec_.gated_mlp) w.b_gate = L.vec(p + "mlp.gate.bias", F, true);
      w.b_up = L.vec(p + "mlp.up.bias", F, true);
      w.b_down = L.vec(p + "mlp.down.bias", H, true);
    }
  }
  int threads = opts.threads > 0 ? opts.threads : physical_cores();
  pool_ = std::make_unique<ThreadPool>(threads);
  const size_t cache_elems = (size_t)spec_.n_layers * spec_.n_kv_heads * (size_t)max_ctx_ * hd;
  try {
    kcache_ = std::make_unique<Buffer>(cache_elems * sizeof(float));
    vcache_ = std::make_unique<Buffer>(cache_elems * sizeof(float));
  } catch (const Error&) {
    throw ValueError("max_context=" + std::to_string(max_ctx_) + ": the KV cache needs " +
                     std::to_string(2 * cache_elems * sizeof(float) >> 20) + " MiB, more than can be allocated; pass a smaller max_context=");
  }
  scores_.resize((size_t)threads * max_ctx_);
  if (spec_.pos == PosKind::Rotary && spec_.rope.scaling != RopeScaling::Dynamic)
    rope_inv_freq(spec_, 0, inv_freq_, rope_mscale_);
}

int64_t Model::weight_bytes() const {
  int64_t n = tok_emb_.nbytes() + (spec_.tie_embeddings ? 0 : lm_head_.nbytes());
  for (auto& w : layers_)
    for (const Tensor* t : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) n += t->data ? t->nbytes() : 0;
  return n;
}

void Model::truncate(int32_t n) {
  EF_CHECK(n >= 0 && n <= n_past_, "truncate: " + std::to_string(n) + " is outside [0, " + std::to_string(n_past_) + "]");
  n_past_ = n;
}

void Model::ensure_scratch(int32_t T) {
  if (T <= scratch_T_) return;
  const size_t H = spec_.hidden_size, F = spec_.ffn_size, hd = spec_.head_dim;
  const size_t QD = spec_.n_heads * hd, KD = spec_.n_kv_heads * hd;
  x_.resize(T * H);
  h_.resize(T * H);
  tmp_.resize(T * H);
  q_.resize(T * QD);
  k_.resize(T * KD);
  v_.resize(T * KD);
  att_.resize(T * QD);
  g_.resize(T * F);
  u_.resize(T * F);
  scratch_T_ = T;
}

void Model::compute_rope(int32_t pos0, int32_t T) {
  if (spec_.rope.scaling == RopeScaling::Dynamic) rope_inv_freq(spec_, (int64_t)pos0 + T, inv_freq_, rope_mscale_);
  const size_t half = inv_freq_.size();
  cos_.resize(T * half);
  sin_.resize(T * half);
  for (int32_t t = 0; t < T; t++) {
    float p = (float)(pos0 + t);
    for (size_t i = 0; i < half; i++) {
      float f = p * inv_freq_[i];
      cos_[t * half + i] = std::cos(f) * rope_mscale_;
      sin_[t * half + i] = std::sin(f) * rope_mscale_;
    }
  }
}


// q: [T, n_heads * hd] for positions pos0..pos0+T-1; keys/values of this layer already in the cache.
// out: [T, n_heads * hd]
void Model::attention(int layer, const float* q, float* out, int32_t T, int32_t pos0) {
  const KernelTable& K = kernels();
  const int nh = spec_.n_heads, nkv = spec_.n_kv_heads, hd = spec_.head_dim, group = nh / nkv;
  const float scale = spec_.attn_scale > 0 ? spec_.attn_scale : 1.f / std::sqrt((float)hd);
  const size_t head_stride = (size_t)max_ctx_ * hd;
  const float* kc = (const float*)kcache_->data + (size_t)layer * nkv * head_stride;
  const float* vc = (const float*)vcache_->data + (size_t)layer * nkv * head_stride;
  const int W = spec_.sliding_window;
  pool_->parallel_for((int64_t)nh * T, 1, [&](int tid, int64_t b, int64_t e) {
    float* sc = scores_.data() + (size_t)tid * max_ctx_;
    for (int64_t idx = b; idx < e; idx++) {
      const int h = (int)(idx % nh);
      const int32_t t = (int32_t)(idx / nh);
      const int32_t pos = pos0 + t;
      const int32_t lo = W > 0 ? std::max(0, pos - W + 1) : 0;
      const float* qv = q + (size_t)t * nh * hd + (size_t)h * hd;
      const float* kh = kc + (size_t)(h / group) * head_stride;
      const float* vh = vc + (size_t)(h / group) * head_stride;
      const int32_t n = pos - lo + 1;
      for (int32_t j = 0; j < n; j++) sc[j] = K.dot(qv, kh + (size_t)(lo + j) * hd, hd) * scale;
      K.softmax(sc, n);
      float* o = out + (size_t)t * nh * hd + (size_t)h * hd;
      std::memset(o, 0, hd * sizeof(float));
      for (int32_t j = 0; j < n; j++) K.axpy(sc[j], vh + (size_t)(lo + j) * hd, o, hd);
    }
  });
}

void Model::forward(const int32_t* tokens, int32_t T, bool all_logits, float* out) {
  EF_CHECK(T > 0, "forward: no tokens");
  if ((int64_t)n_past_ + T > max_ctx_)
    throw ValueError("sequence of " + std::to_string((int64_t)n_past_ + T) + " tokens exceeds max_context=" +
                     std::to_string(max_ctx_) + " (pass a larger max_context= to load, up to the memory you have)");
  const KernelTable& K = kernels();
  ensure_scratch(T);
  const int64_t H = spec_.hidden_size, F = spec_.ffn_size, hd = spec_.head_dim, V = spec_.vocab_size;
  const int nh = spec_.n_heads, nkv = spec_.n_kv_heads;
  const int64_t QD = nh * hd, KD = nkv * hd;
  const int32_t pos0 = n_past_;
  ThreadPool* pool = pool_.get();
  float *x = x_.data(), *h = h_.data(), *tmp = tmp_.data();

  ops::embedding(K, tok_emb_, tokens, T, x);
  const bool rotary = spec_.pos == PosKind::Rotary;
  if (rotary) compute_rope(pos0, T);
  const size_t half = inv_freq_.size();

  auto norm_rows = [&](const float* src, float* dst, const Tensor& w, const Tensor& b, int64_t rows) {
    for (int64_t t = 0; t < rows; t++) {
      if (spec_.norm == NormKind::RMS)
        K.rmsnorm(src + t * H, fptr(w), spec_.norm_eps, dst + t * H, H);
      else
        K.layernorm(src + t * H, fptr(w), fptr(b), spec_.norm_eps, dst + t * H, H);
    }
  };
  auto mlp = [&](const LayerWeights& w, const float* in, float* result) {
    float *g = g_.data(), *u = u_.data();
    if (spec_.gated_mlp) {
      ops::linear(pool, K, in, H, T, w.w_gate, fptr(w.b_gate), g, F);
      ops::linear(pool, K, in, H, T, w.w_up, fptr(w.b_up), u, F);
      K.act_mul(spec_.act, g, u, T * F);
      ops::linear(pool, K, g, F, T, w.w_down, fptr(w.b_down), result, H);
    } else {
      ops::linear(pool, K, in, H, T, w.w_up, fptr(w.b_up), u, F);
      K.act(spec_.act, u, T * F);
      ops::linear(pool, K, u, F, T, w.w_down, fptr(w.b_down), result, H);
    }
  };

  const size_t head_stride = (size_t)max_ctx_ * hd;
  for (int l = 0; l < spec_.n_layers; l++) {
    const LayerWeights& w = layers_[l];
    norm_rows(x, h, w.attn_norm_w, w.attn_norm_b, T);
    ops::linear(pool, K, h, H, T, w.wq, fptr(w.bq), q_.data(), QD);
    ops::linear(pool, K, h, H, T, w.wk, fptr(w.bk), k_.data(), KD);
    ops::linear(pool, K, h, H, T, w.wv, fptr(w.bv), v_.data(), KD);
    float* kc = (float*)kcache_->data + (size_t)l * nkv * head_stride;
    float* vc = (float*)vcache_->data + (size_t)l * nkv * head_stride;
    for (int32_t t = 0; t < T; t++) {
      const float* c = rotary ? cos_.data() + t * half : nullptr;
      const float* s = rotary ? sin_.data() + t * half : nullptr;
      if (rotary)
        for (int hh = 0; hh < nh; hh++) ops::rope(q_.data() + t * QD + hh * hd, c, s, half, spec_.rope.style);
      for (int hh = 0; hh < nkv; hh++) {
        float* kv = k_.data() + t * KD + hh * hd;
        if (rotary) ops::rope(kv, c, s, half, spec_.rope.style);
        std::memcpy(kc + hh * head_stride + (size_t)(pos0 + t) * hd, kv, hd * sizeof(float));
        std::memcpy(vc + hh * head_stride + (size_t)(pos0 + t) * hd, v_.data() + t * KD + hh * hd, hd * sizeof(float));
      }
    }
    attention(l, q_.data(), att_.data(), T, pos0);
    ops::linear(pool, K, att_.data(), QD, T, w.wo, fptr(w.bo), tmp, H);
    if (spec_.parallel_residual) {
      K.add(x, tmp, T * H);
      mlp(w, h, tmp);
      K.add(x, tmp, T * H);
    } else {
      K.add(x, tmp, T * H);
      norm_rows(x, h, w.mlp_norm_w, w.mlp_norm_b, T);
      mlp(w, h, tmp);
      K.add(x, tmp, T * H);
    }
  }
  n_past_ = pos0 + T;
  if (!out) return;
  const int64_t first = all_logits ? 0 : T - 1, rows = T - first;
  norm_rows(x + first * H, h, final_norm_w_, final_norm_b_, rows);
  ops::linear(pool, K, h, H, rows, lm_head_, nullptr, out, V);
}

}  // namespace ef
