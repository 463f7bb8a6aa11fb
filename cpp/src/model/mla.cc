// Multi-head latent attention (DeepSeek-V2/V3, Kimi, GLM-4.7-Flash), computed absorbed as llama.cpp does: every
// position caches one latent head, keys [c | k_pe] and values c (ArchSpec::mla), instead of n_heads decompressed
// heads; each query head reaches it through its k_b matrix, and its output leaves through its v_b matrix.
// transformers decompresses (k_nope = k_b^T c per head, v = v_b c): the same products, in another order.
#include <cmath>
#include <vector>

#include "edgeformer/errors.h"
#include "edgeformer/model.h"
#include "edgeformer/ops.h"

namespace ef {

void Model::mla_attention(int layer, const float* in, float* out, int32_t T, const int32_t* pos, const float* cos,
                          const float* sin, const uint8_t* key_mask, Model* const* seqs) {
  const KernelTable& K = kernels();
  const LayerWeights& w = layers_[layer];
  ThreadPool* pool = pool_.get();
  const int64_t H = spec_.hidden_size, nh = spec_.n_heads, Lk = spec_.mla_kv_lora, Lq = spec_.mla_q_lora;
  const int64_t dn = spec_.mla_nope, dr = spec_.rope.rotary_dim, dv = spec_.mla_v, dq = dn + dr;
  const int64_t hd = spec_.head_dim;  // Lk + dr: an absorbed query head, and the latent key
  const size_t half = (size_t)dr / 2;
  constexpr float kLatentEps = 1e-6f;  // (the q_a and kv_a norms': fixed, whatever rms_norm_eps says)
  // scratch: the queries as projected [T, nh * dq], q_a [T, Lq], the latents [T, hd], the heads' outputs [T, nh * dv]
  const size_t need = (size_t)T * (nh * dq + Lq + hd + nh * dv);
  if (mla_.size() < need) mla_.resize(need);
  float* qp = mla_.data();
  float* qa = qp + (size_t)T * nh * dq;
  float* kv = qa + (size_t)T * Lq;
  float* o = kv + (size_t)T * hd;

  if (Lq > 0) {
    ops::linear(pool, K, in, H, T, w.wq_a, nullptr, qa, Lq);
    for (int32_t t = 0; t < T; t++) K.rmsnorm(qa + t * Lq, (const float*)w.q_a_norm_w.data, kLatentEps, qa + t * Lq, Lq);
    ops::linear(pool, K, qa, Lq, T, w.wq, nullptr, qp, nh * dq);
  } else {
    ops::linear(pool, K, in, H, T, w.wq, nullptr, qp, nh * dq);
  }
  // the latent [c | k_pe]: c normalized, k_pe rotated; stored as the position's key, c as its value
  ops::linear(pool, K, in, H, T, w.wk, nullptr, kv, hd);
  for (int32_t t = 0; t < T; t++) {
    float* c = kv + t * hd;
    K.rmsnorm(c, (const float*)w.kv_a_norm_w.data, kLatentEps, c, Lk);
    ops::rope(c + Lk, cos + t * half, sin + t * half, half, spec_.rope.style);
    (seqs ? *seqs[t] : *this).store_kv(layer, 0, pos[t], c, c);
  }
  // absorbed queries [T, nh * hd]: head h is [k_b[h] q_nope | rotated q_pe]
  float* qabs = q_.data();
  std::vector<ops::LinearOut> heads(nh);
  for (int64_t h = 0; h < nh; h++) {
    heads[h] = {&w.k_b[h], nullptr, qabs + h * hd, nh * hd, qp + h * dq};
    for (int32_t t = 0; t < T; t++) {
      float* pe = qabs + (size_t)t * nh * hd + h * hd + Lk;
      std::copy(qp + (size_t)t * nh * dq + h * dq + dn, qp + (size_t)t * nh * dq + (h + 1) * dq, pe);
      ops::rope(pe, cos + t * half, sin + t * half, half, spec_.rope.style);
    }
  }
  ops::linear_group(pool, K, qp, nh * dq, T, heads.data(), (int)nh);
  attention(layer, qabs, att_.data(), T, seqs ? 0 : pos[0], key_mask, seqs);  // -> [T, nh * Lk]
  if (take_interrupt()) throw Interrupted();
  // each head's output through its v_b, then o
  for (int64_t h = 0; h < nh; h++) heads[h] = {&w.v_b[h], nullptr, o + h * dv, nh * dv, att_.data() + h * Lk};
  ops::linear_group(pool, K, att_.data(), nh * Lk, T, heads.data(), (int)nh);
  ops::linear(pool, K, o, nh * dv, T, w.wo, nullptr, out, H);
}

}  // namespace ef
