// The model's KV cache (f32 or f16, in the float panel layout where the head size allows; model.h) and the
// attention that reads it: self-attention for prompts and decode steps, T5's cross-attention and its cache.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "edgeformer/errors.h"
#include "edgeformer/model.h"
#include "edgeformer/ops.h"
#include "edgeformer/quant.h"

namespace ef {
namespace {
float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }
}  // namespace

namespace {
// A recurrent layer's state holds every token it has seen: a cache of such a model keeps all of them or none.
void check_rewind(const ArchSpec& spec, int32_t n, int32_t n_past, const char* what) {
  EF_CHECK(!spec.recurrent() || n == 0 || n == n_past,
           std::string(what) + ": " + spec.model_type + "'s recurrent layers keep all " +
               std::to_string(n_past) + " cached tokens or none, not the first " + std::to_string(n));
}
}  // namespace

void Model::truncate(int32_t n) {
  EF_CHECK(n >= 0 && n <= n_past_, "truncate: " + std::to_string(n) + " is outside [0, " + std::to_string(n_past_) + "]");
  check_rewind(spec_, n, n_past_, "truncate");
  n_past_ = n;
}

void Model::copy_cache_from(const Model& other, int32_t n) {
  EF_CHECK(other.max_ctx_ == max_ctx_ && other.spec_.n_layers == spec_.n_layers &&
               other.kv_kelems_ == kv_kelems_ && other.kv_velems_ == kv_velems_ && other.kv_owner_ == kv_owner_,
           "copy_cache_from: the models differ in shape");
  EF_CHECK(n >= 0 && n <= other.n_past_, "copy_cache_from: n is outside the other model's cache");
  EF_CHECK(other.kv_type_ == kv_type_, "copy_cache_from: the models' KV caches differ in type");
  check_rewind(spec_, n, other.n_past_, "copy_cache_from");
  EF_CHECK(other.lin_state_.size() == lin_state_.size(), "copy_cache_from: the models differ in shape");
  if (n > 0) std::copy(other.lin_state_.begin(), other.lin_state_.end(), lin_state_.begin());
  const size_t es = kv_elem();
  const size_t nk = kv_panels_ ? (size_t)(n + kPanel - 1) / kPanel * kPanel : (size_t)n;  // whole key panels
  for (size_t slot = 0; slot < kv_owner_.size(); slot++) {  // (each slot its layer's head size and count)
    const int o = kv_owner_[slot];
    const size_t hd = spec_.hd(o), vh = spec_.vd(o), heads = spec_.kvh(o);
    const size_t kstride = (size_t)kv_len_ * hd * es, vstride = (size_t)kv_len_ * vh * es;  // bytes per kv head
    uint8_t *kd = (uint8_t*)kcache_->data + kv_koff_[slot] * es, *vd = (uint8_t*)vcache_->data + kv_voff_[slot] * es;
    const uint8_t* ks = (const uint8_t*)other.kcache_->data + kv_koff_[slot] * es;
    const uint8_t* vs = (const uint8_t*)other.vcache_->data + kv_voff_[slot] * es;
    for (size_t i = 0; i < heads; i++) {
      std::memcpy(kd + i * kstride, ks + i * kstride, nk * hd * es);
      if (!kv_panels_) {
        std::memcpy(vd + i * vstride, vs + i * vstride, n * vh * es);
        continue;
      }
      const size_t nv = kv_bf16_panels() ? (size_t)(n + 1) / 2 * 2 : (size_t)n;  // (bf16: positions in pairs)
      for (size_t p = 0; p < vh / kPanel; p++) {  // each value panel holds its 16 dims of every position
        const size_t off = i * vstride + p * kPanel * kv_len_ * es;
        std::memcpy(vd + off, vs + off, nv * kPanel * es);
      }
    }
  }
  n_past_ = n;
}

void Model::store_kv(int layer, int kv_head, int32_t pos, const float* k, const float* v) {
  if (kv_type_ == DType::F32) store_kv_as<float>(layer, kv_head, pos, k, v);
  else store_kv_as<uint16_t>(layer, kv_head, pos, k, v);
}

template <typename E>  // float, or uint16_t (f16 or bf16 bits)
void Model::store_kv_as(int layer, int kv_head, int32_t pos, const float* k, const float* v) {
  const int hd = spec_.hd(layer), vh = spec_.vd(layer);
  const size_t slot = (size_t)kv_slot_[layer];
  E* kc = (E*)kcache_->data + kv_koff_[slot] + (size_t)kv_head * kv_len_ * hd;
  E* vc = (E*)vcache_->data + kv_voff_[slot] + (size_t)kv_head * kv_len_ * vh;
  // n contiguous values into the cache: f16 / bf16 in vectors (a scalar conversion each was a fifth of an int8
  // encoder's time), f32 copied
  const bool bf16 = kv_type_ == DType::BF16;
  const auto put = [&](E* dst, const float* src, int n) {
    if constexpr (std::is_same_v<E, float>) std::memcpy(dst, src, (size_t)n * sizeof(float));
    else if (bf16) kernels().f32_to_bf16(src, dst, n);
    else kernels().f32_to_f16(src, dst, n);
  };
  if (!kv_panels_) {
    put(kc + (size_t)pos * hd, k, hd);
    put(vc + (size_t)pos * vh, v, vh);
    return;
  }
  thread_local std::vector<E> kb;
  kb.resize((size_t)std::max(hd, vh));
  put(kb.data(), k, hd);
  if (bf16) {  // bf16 panels (model.h): a key's dims in pairs down its panel column, a value beside its pair position
    E* kp = kc + (size_t)(pos / kPanel) * kPanel * hd + 2 * (pos % kPanel);
    for (int j = 0; j < hd / 2; j++) std::memcpy(kp + (size_t)j * 2 * kPanel, &kb[2 * j], 2 * sizeof(E));
    put(kb.data(), v, vh);
    for (int p = 0; p < vh / kPanel; p++) {
      E* vp = vc + (size_t)p * kPanel * kv_len_ + (size_t)(pos / 2) * 2 * kPanel + pos % 2;
      for (int d = 0; d < kPanel; d++) vp[2 * d] = kb[(size_t)p * kPanel + d];
    }
    return;
  }
  E* kp = kc + (size_t)(pos / kPanel) * kPanel * hd + pos % kPanel;  // (a key is a panel's column: strided)
  for (int d = 0; d < hd; d++) kp[(size_t)d * kPanel] = kb[d];
  for (int p = 0; p < vh / kPanel; p++)
    put(vc + (size_t)p * kPanel * kv_len_ + (size_t)pos * kPanel, v + p * kPanel, kPanel);
}

// seg_lo_ / seg_hi_ of this call's packed sequences, and each row's position in its own (empty: one sequence)
void Model::set_segments(const ForwardArgs& a, std::vector<int32_t>& seq_pos) {
  seg_lo_.clear();
  seg_hi_.clear();
  if (!a.seg_lens) return;
  EF_CHECK(!spec_.causal(), "packed sequences (seg_lens) are for encoders only");
  EF_CHECK(a.n_segs > 0, "seg_lens: no sequences");
  seg_lo_.resize(a.T);
  seg_hi_.resize(a.T);
  seq_pos.resize(a.T);
  int64_t t = 0;
  for (int32_t i = 0; i < a.n_segs; i++) {
    const int32_t n = a.seg_lens[i];
    if (n <= 0 || t + n > a.T)
      throw ValueError("seg_lens: sequence " + std::to_string(i) + " has length " + std::to_string(n) +
                       (n <= 0 ? "" : ", past the " + std::to_string(a.T) + " tokens"));
    for (int32_t j = 0; j < n; j++) {
      seg_lo_[t + j] = (int32_t)t;
      seg_hi_[t + j] = (int32_t)t + n - 1;
      seq_pos[t + j] = j;
    }
    t += n;
  }
  if (t != a.T)
    throw ValueError("seg_lens: the lengths sum to " + std::to_string(t) + ", not the " + std::to_string(a.T) +
                     " tokens");
}

// rel_table_[h][r - rel_lo_] = bias of head h for relative position r = key - query, for every r in use.
void Model::compute_relative_bias(int32_t pos0, int32_t T, int32_t n_keys) {
  rel_lo_ = -(pos0 + T - 1);
  const int32_t hi = n_keys - 1 - pos0, width = hi - rel_lo_ + 1, nh = spec_.n_heads;
  rel_table_.resize((size_t)nh * width);
  const float* tab = (const float*)rel_bias_.data;  // [buckets, heads]
  for (int32_t r = rel_lo_; r <= hi; r++) {
    int32_t b = relative_bucket(r, !spec_.causal(), spec_.rel_buckets, spec_.rel_max_distance);
    for (int h = 0; h < nh; h++) rel_table_[(size_t)h * width + (r - rel_lo_)] = tab[(size_t)b * nh + h];
  }
}

// q: [T, n_heads * hd] for positions pos0..pos0+T-1; this layer's keys/values already in the cache.
// out: [T, n_heads * vd] (vd: the values' head size, ArchSpec::vdim)
void Model::attention(int layer, const float* q, float* out, int32_t T, int32_t pos0, const uint8_t* key_mask,
                      Model* const* seqs) {
  const KernelTable& K = kernels();
  const int nh = spec_.n_heads, nkv = spec_.kvh(layer), hd = spec_.hd(layer), vd = spec_.vd(layer), group = nh / nkv;
  const float scale = spec_.attn_scale > 0 ? spec_.attn_scale : 1.f / std::sqrt((float)hd);
  const float softcap = spec_.attn_softcap;
  const float* sinks = spec_.attn_sinks ? (const float*)layers_[layer].sinks.data : nullptr;  // [n_heads]
  const size_t head_stride = (size_t)kv_len_ * hd, vhead_stride = (size_t)kv_len_ * vd, es = kv_elem();
  const DType kvt = kv_type_;
  // bf16 panels: the value products take whole pairs of positions (and the tile unit 32 at a time): a row of
  // weights padded with zeros to `padded(n)` keys, within the cache (the values past the last position are zeros or
  // earlier values: finite, times zero)
  const bool pairs = kv_bf16_panels();
  const auto padded = [&](int32_t klo, int32_t n) {
    if (!pairs) return n;
    const int32_t n32 = (n + 31) / 32 * 32;
    return klo + n32 <= kv_len_ ? n32 : (n + 1) / 2 * 2;
  };
  // element i of this layer's keys / values (f32 or f16 as kvt) in the cache query row t uses (seqs: its own)
  const size_t slot = (size_t)kv_slot_[layer];
  const size_t klayer_off = kv_koff_[slot] * es, vlayer_off = kv_voff_[slot] * es;
  const uint8_t* kbase = (const uint8_t*)kcache_->data + klayer_off;
  const uint8_t* vbase = (const uint8_t*)vcache_->data + vlayer_off;
  const auto kc = [&](size_t i) -> const void* { return kbase + i * es; };
  const auto vc = [&](size_t i) -> const void* { return vbase + i * es; };
  const auto kc_of = [&](int32_t t, size_t i) -> const void* {
    return seqs ? (const uint8_t*)seqs[t]->kcache_->data + klayer_off + i * es : kc(i);
  };
  const auto vc_of = [&](int32_t t, size_t i) -> const void* {
    return seqs ? (const uint8_t*)seqs[t]->vcache_->data + vlayer_off + i * es : vc(i);
  };
  // the position of query row t: in a batch, its sequence's (whose cache holds it already)
  const auto pos_of = [&](int32_t t) { return seqs ? seqs[t]->n_past_ : pos0 + t; };
  const int W = spec_.window(layer);
  const bool causal = spec_.causal();
  const int32_t n_keys = pos0 + T;  // (one sequence; a batch's rows are causal: each sees keys up to its position)
  const bool alibi = spec_.pos == PosKind::ALiBi, relative = spec_.relative_bias();
  const int32_t rel_width = relative ? (int32_t)(rel_table_.size() / nh) : 0;
  // the keys [lo, hi] query row t (at position pos) attends to: causal or all, within a window (an encoder's both
  // ways), within its own sequence where several are packed (seg_lo_ / seg_hi_: encoders)
  const bool packed = !seg_lo_.empty() && !seqs;
  auto key_range = [&](int32_t t, int32_t pos, int32_t& lo, int32_t& hi) {
    hi = causal ? pos : packed ? seg_hi_[t] : n_keys - 1;
    if (!causal && W > 0) hi = std::min(hi, pos + W - 1);
    lo = W > 0 ? std::max(0, pos - W + 1) : 0;
    if (packed) lo = std::max(lo, seg_lo_[t]);
  };
  // the position bias (ALiBi or T5's relative buckets) and the padding mask, on the scaled scores s[0, n)
  // of keys k0 .. k0 + n - 1 for head h's query at position pos
  auto bias_and_mask = [&](int h, int32_t pos, int32_t k0, float* s, int32_t n) {
    if (alibi) {
      const float slope = spec_.alibi_bf16 ? round_bf16(spec_.alibi_slopes[h]) : spec_.alibi_slopes[h];
      for (int32_t j = 0; j < n; j++) {
        float bias = slope * (float)(k0 + j);
        if (spec_.alibi_bf16) bias = round_bf16(bias);
        s[j] += spec_.alibi_scaled ? bias * scale : bias;
      }
    } else if (relative) {
      const float* rt = rel_table_.data() + (size_t)h * rel_width - rel_lo_;
      for (int32_t j = 0; j < n; j++) s[j] += rt[k0 + j - pos];
    }
    if (key_mask)
      for (int32_t j = 0; j < n; j++)
        if (!key_mask[k0 + j]) s[j] = -3.0e38f;
  };
  // Scores s[0, n) of a query row against keys k0 .. k0 + n - 1 become attention weights over the query's own
  // keys [lo, hi]: scaled, biased, masked, normalized; outside them, and padded keys, they weigh nothing.
  auto weights = [&](int h, int32_t pos, int32_t k0, float* s, int32_t n, int32_t lo, int32_t hi) {
    float* sr = s + (lo - k0);
    K.scale(sr, scale, hi - lo + 1);
    if (softcap > 0)
      for (int32_t j = 0; j <= hi - lo; j++) sr[j] = softcap * std::tanh(sr[j] / softcap);
    bias_and_mask(h, pos, lo, sr, hi - lo + 1);
    if (sinks) {  // the head's sink logit joins the denominator (and weighs nothing itself)
      const int32_t m = hi - lo + 1;
      float mx = sinks[h], sum = 0.f;
      for (int32_t j = 0; j < m; j++) mx = std::max(mx, sr[j]);
      for (int32_t j = 0; j < m; j++) sum += (sr[j] = std::exp(sr[j] - mx));
      const float inv = 1.f / (sum + std::exp(sinks[h] - mx));
      for (int32_t j = 0; j < m; j++) sr[j] *= inv;
    } else {
      K.softmax(sr, hi - lo + 1);
    }
    for (int32_t j = k0; j < lo; j++) s[j - k0] = 0.f;
    for (int32_t j = hi + 1; j < k0 + n; j++) s[j - k0] = 0.f;
    if (key_mask)
      for (int32_t j = lo; j <= hi; j++)
        if (!key_mask[j]) s[j - k0] = 0.f;
  };
  // The cache in panels (kv_panels_): S = Q K^T and O = P V run on the float panel tiles (f32 or f16) straight
  // from it (no horizontal sums; keys from a multiple of 16). Else rows: row tiles, V transposed per block.
  const auto fpanel = ops::panel_kernel(K, &KernelTable::matmul_panel, kvt);
  const auto rows_mm = K.matmul[(int)kvt];
  const int64_t vstride = (int64_t)kPanel * kv_len_;  // from one value panel (16 dims) to the next
  // Decode steps on the panel cache (one, or one per sequence of a batch): per kv head, its query heads (up to 8
  // at a time: a tile's rows, and tasks for every thread when there are few kv heads, as with multi-query
  // attention) as the rows of the two products, so that the keys and values are read once for them.
  if ((T == 1 || seqs) && kv_panels_) {
    constexpr int kRows = 8;
    const int chunks = (group + kRows - 1) / kRows;
    pool_->parallel_for((int64_t)T * nkv * chunks, 1, [&](int, int64_t b, int64_t e) {
      thread_local std::vector<float> S;
      for (int64_t idx = b; idx < e; idx++) {
        const int32_t t = (int32_t)(idx / ((int64_t)nkv * chunks));
        const int g = (int)(idx / chunks % nkv), c = (int)(idx % chunks);
        const int32_t pos = pos_of(t);
        int32_t lo, hi;
        key_range(t, pos, lo, hi);
        const int32_t klo = lo / kPanel * kPanel, n = hi - klo + 1, np = padded(klo, n);
        if (S.size() < (size_t)kRows * np) S.resize((size_t)kRows * np);
        const int h0 = g * group + c * kRows, rows = std::min(kRows, group - c * kRows);
        const void* kh = kc_of(t, (size_t)g * head_stride + (size_t)klo * hd);
        const void* vh = vc_of(t, (size_t)g * vhead_stride + (size_t)klo * kPanel);
        fpanel(q + (size_t)t * nh * hd + (size_t)h0 * hd, hd, kh, 0, nullptr, S.data(), np, rows, 0, n, hd);
        for (int r = 0; r < rows; r++) {
          float* sr = S.data() + (size_t)r * np;
          weights(h0 + r, pos, klo, sr, n, lo, hi);
          std::fill(sr + n, sr + np, 0.f);
        }
        fpanel(S.data(), np, vh, vstride, nullptr, out + (size_t)t * nh * vd + (size_t)h0 * vd, vd, rows, 0, vd, np);
      }
    });
    return;
  }
  // Prompts: per head, a block of queries against its keys as two small matrix products, instead of one dot
  // and one axpy per query and key.
  constexpr int32_t kQB = 32;
  if (!seqs && (T >= 8 || kv_panels_)) {
    const int32_t nqb = (T + kQB - 1) / kQB;
    pool_->parallel_for((int64_t)nh * nqb, 1, [&](int, int64_t b, int64_t e) {
      thread_local std::vector<float> S, Vt;
      for (int64_t idx = b; idx < e; idx++) {
        if ((idx & 63) == 0 && interrupt_pending()) return;  // the layer loop throws Interrupted
        const int h = (int)(idx % nh);
        const int32_t t0 = (int32_t)(idx / nh) * kQB, tb = std::min(kQB, T - t0);
        // keys [klo, khi] cover every query of the block; each row masks its own range after
        int32_t klo, khi, lo_last, hi_first;
        key_range(t0, pos0 + t0, klo, hi_first);
        key_range(t0 + tb - 1, pos0 + t0 + tb - 1, lo_last, khi);
        if (kv_panels_) klo = klo / kPanel * kPanel;  // panels start at multiples of 16
        const int32_t n = khi - klo + 1, np = padded(klo, n);
        if (S.size() < (size_t)kQB * np) S.resize((size_t)kQB * np);
        const void* kh = kc((size_t)(h / group) * head_stride + (size_t)klo * hd);
        const float* qb = q + (size_t)t0 * nh * hd + (size_t)h * hd;
        if (kv_panels_) fpanel(qb, (int64_t)nh * hd, kh, 0, nullptr, S.data(), np, tb, 0, n, hd);
        else rows_mm(qb, (int64_t)nh * hd, kh, hd, nullptr, S.data(), n, tb, 0, n, hd);
        for (int32_t r = 0; r < tb; r++) {
          const int32_t pos = pos0 + t0 + r;
          int32_t lo, hi;
          key_range(t0 + r, pos, lo, hi);
          weights(h, pos, klo, S.data() + (size_t)r * np, n, lo, hi);
          std::fill(S.data() + (size_t)r * np + n, S.data() + (size_t)(r + 1) * np, 0.f);
        }
        float* ob = out + (size_t)t0 * nh * vd + (size_t)h * vd;
        const size_t vh = (size_t)(h / group) * vhead_stride;
        if (kv_panels_) {
          fpanel(S.data(), np, vc(vh + (size_t)klo * kPanel), vstride, nullptr, ob, (int64_t)nh * vd, tb, 0, vd, np);
        } else {
          if (Vt.size() < (size_t)vd * (n + 1)) Vt.resize((size_t)vd * (n + 1));
          float* vrow = Vt.data() + (size_t)vd * n;  // one value row in f32
          for (int32_t j = 0; j < n; j++) {
            K.to_f32[(int)kvt](vc(vh + (size_t)(klo + j) * vd), vrow, vd);
            for (int d = 0; d < vd; d++) Vt[(size_t)d * n + j] = vrow[d];
          }
          K.matmul[(int)DType::F32](S.data(), n, Vt.data(), n, nullptr, ob, (int64_t)nh * vd, tb, 0, vd, n);
        }
      }
    });
    return;
  }
  // decode steps on a row cache (and short prompts; a batch's rows each in their own cache): per query and
  // head, the scores as a one-token product, the values summed in registers
  pool_->parallel_for((int64_t)nh * T, 1, [&](int tid, int64_t b, int64_t e) {
    float* sc = scores_.data() + (size_t)tid * score_stride_;
    thread_local std::vector<float> V32;  // an f16 cache's value rows in f32, for wsum
    for (int64_t idx = b; idx < e; idx++) {
      if ((idx & 63) == 0 && interrupt_pending()) return;  // the layer loop throws Interrupted
      const int h = (int)(idx % nh);
      const int32_t t = (int32_t)(idx / nh);
      const int32_t pos = pos_of(t);
      int32_t lo, hi;
      key_range(t, pos, lo, hi);
      const int32_t n = hi - lo + 1;
      const float* qv = q + (size_t)t * nh * hd + (size_t)h * hd;
      const size_t k0 = (size_t)(h / group) * head_stride + (size_t)lo * hd;
      const size_t v0 = (size_t)(h / group) * vhead_stride + (size_t)lo * vd;
      rows_mm(qv, hd, kc_of(t, k0), hd, nullptr, sc, n, 1, 0, n, hd);
      weights(h, pos, lo, sc, n, lo, hi);
      if (kvt != DType::F32) {
        if (V32.size() < (size_t)n * vd) V32.resize((size_t)n * vd);
        K.to_f32[(int)kvt](vc_of(t, v0), V32.data(), (int64_t)n * vd);
      }
      const float* vh = kvt != DType::F32 ? V32.data() : (const float*)vc_of(t, v0);
      K.wsum(sc, vh, vd, n, vd, out + (size_t)t * nh * vd + (size_t)h * vd);
    }
  });
}

void Model::set_encoder_output(const float* enc, int32_t T_enc, const uint8_t* mask) {
  EF_CHECK(spec_.cross_attention, "set_encoder_output: this model has no cross-attention");
  EF_CHECK(T_enc > 0, "set_encoder_output: empty encoder output");
  const KernelTable& K = kernels();
  const int64_t H = spec_.hidden_size, hd = spec_.head_dim, nh = spec_.n_heads, QD = nh * hd;
  const size_t per_layer = (size_t)nh * T_enc * hd;
  ckcache_ = std::make_unique<Buffer>(per_layer * spec_.n_layers * sizeof(float));
  cvcache_ = std::make_unique<Buffer>(per_layer * spec_.n_layers * sizeof(float));
  std::vector<float> kk((size_t)T_enc * QD), vv((size_t)T_enc * QD);
  for (int l = 0; l < spec_.n_layers; l++) {
    ops::linear(pool_.get(), K, enc, H, T_enc, layers_[l].ck, nullptr, kk.data(), QD);
    ops::linear(pool_.get(), K, enc, H, T_enc, layers_[l].cv, nullptr, vv.data(), QD);
    float* kc = (float*)ckcache_->data + l * per_layer;
    float* vc = (float*)cvcache_->data + l * per_layer;
    for (int32_t t = 0; t < T_enc; t++)
      for (int64_t h = 0; h < nh; h++) {  // [T, heads, hd] -> [heads, T, hd]
        std::memcpy(kc + ((size_t)h * T_enc + t) * hd, kk.data() + t * QD + h * hd, hd * 4);
        std::memcpy(vc + ((size_t)h * T_enc + t) * hd, vv.data() + t * QD + h * hd, hd * 4);
      }
  }
  enc_T_ = T_enc;
  enc_mask_.assign(mask ? mask : nullptr, mask ? mask + T_enc : nullptr);
}

void Model::cross_attention(int layer, const float* q, float* out, int32_t T) {
  const KernelTable& K = kernels();
  const int nh = spec_.n_heads, hd = spec_.head_dim;
  const float scale = spec_.attn_scale > 0 ? spec_.attn_scale : 1.f / std::sqrt((float)hd);
  const size_t per_layer = (size_t)nh * enc_T_ * hd;
  const float* kc = (const float*)ckcache_->data + layer * per_layer;
  const float* vc = (const float*)cvcache_->data + layer * per_layer;
  const uint8_t* mask = enc_mask_.empty() ? nullptr : enc_mask_.data();
  const int32_t n = enc_T_;
  pool_->parallel_for((int64_t)nh * T, 1, [&](int tid, int64_t b, int64_t e) {
    float* sc = scores_.data() + (size_t)tid * score_stride_;
    for (int64_t idx = b; idx < e; idx++) {
      const int h = (int)(idx % nh);
      const int32_t t = (int32_t)(idx / nh);
      const float* qv = q + (size_t)t * nh * hd + (size_t)h * hd;
      const float* kh = kc + (size_t)h * n * hd;
      const float* vh = vc + (size_t)h * n * hd;
      // as a self-attention decode step on a row cache: the scores as a one-token product, the values summed
      // in registers; padded encoder positions weigh nothing
      K.matmul[(int)DType::F32](qv, hd, kh, hd, nullptr, sc, n, 1, 0, n, hd);
      K.scale(sc, scale, n);
      if (mask)
        for (int32_t j = 0; j < n; j++)
          if (!mask[j]) sc[j] = -3.0e38f;
      K.softmax(sc, n);
      if (mask)
        for (int32_t j = 0; j < n; j++)
          if (!mask[j]) sc[j] = 0.f;
      K.wsum(sc, vh, hd, n, hd, out + (size_t)t * nh * hd + (size_t)h * hd);
    }
  });
}

}  // namespace ef
