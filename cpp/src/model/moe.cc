// Mixture of experts (Mixtral, Qwen2/3-MoE, OLMoE, Granite MoE, gpt-oss), as transformers computes it: router
// logits (+ bias), softmax in f32, the top n_experts_used probabilities (renormalized over the chosen where
// moe_norm_topk); each expert runs once over the rows that chose it (a decode step's experts side by side), its
// output added to theirs times their weight, experts in index order; then the shared expert (scaled by
// sigmoid(shared_scale . x) where shared_expert_gate) is added.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "edgeformer/model.h"
#include "edgeformer/ops.h"

namespace ef {

void Model::moe(int layer, const float* in, float* out, int32_t T, const KernelTable& K) {
  const LayerWeights& w = layers_[layer];
  const int NE = spec_.n_experts, top = spec_.n_experts_used;
  const int64_t H = spec_.hidden_size, FE = spec_.moe_ffn_size, FS = spec_.shared_ffn_size;
  ThreadPool* pool = pool_.get();
  float* logits = moe_logits_.data();
  ops::linear(pool, K, in, H, T, w.router, w.router_b.data ? (const float*)w.router_b.data : nullptr, logits, NE);
  // the experts' gate: act(g) * u, or gpt-oss's clamped one
  const float limit = spec_.swiglu_limit, alpha = spec_.swiglu_alpha;
  auto gate = [&](float* g, const float* u, int64_t n) {
    if (limit <= 0) return K.act_mul(spec_.act, g, u, n);
    for (int64_t i = 0; i < n; i++) {
      const float x = std::min(g[i], limit), y = std::min(std::max(u[i], -limit), limit);
      g[i] = (y + 1.f) * x / (1.f + std::exp(-alpha * x));
    }
  };
  auto fb = [](const Tensor& t) { return t.data ? (const float*)t.data : nullptr; };

  // rows[e]: (row, weight) of the rows that chose expert e
  std::vector<std::vector<std::pair<int32_t, float>>> rows(NE);
  std::vector<int32_t> order(NE);
  for (int32_t t = 0; t < T; t++) {
    float* p = logits + (size_t)t * NE;
    K.softmax(p, NE);
    std::iota(order.begin(), order.end(), 0);
    // the most probable first; equal probabilities by index, as torch.topk's CPU kernel orders them
    std::partial_sort(order.begin(), order.begin() + top, order.end(),
                      [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float sum = 0.f;
    for (int i = 0; i < top; i++) sum += p[order[i]];
    const float norm = spec_.moe_norm_topk && sum > 0.f ? 1.f / sum : 1.f;
    for (int i = 0; i < top; i++) rows[order[i]].emplace_back(t, p[order[i]] * norm);
  }

  std::memset(out, 0, sizeof(float) * T * H);
  float *xin = moe_in_.data(), *y = moe_out_.data(), *g = g_.data(), *u = u_.data();
  if (T == 1) {
    // one token (a decode step): its experts share their input, so all their gate and up products run in one
    // parallel region, then all their down products in another (two regions, not three per expert)
    std::sort(order.begin(), order.begin() + top);  // expert order: outputs added as the rows path adds them
    std::vector<ops::LinearOut> o;
    for (int i = 0; i < top; i++) {
      const LayerWeights::Expert& x = w.experts[order[i]];
      o.push_back({&x.gate, fb(x.b_gate), g + i * FE, FE});
      o.push_back({&x.up, fb(x.b_up), u + i * FE, FE});
    }
    ops::linear_group(pool, K, in, H, 1, o.data(), (int)o.size());
    gate(g, u, top * FE);
    o.clear();
    for (int i = 0; i < top; i++) {
      const LayerWeights::Expert& x = w.experts[order[i]];
      o.push_back({&x.down, fb(x.b_down), y + i * H, H, g + i * FE});
    }
    ops::linear_group(pool, K, g, FE, 1, o.data(), (int)o.size());
    for (int i = 0; i < top; i++) K.axpy(rows[order[i]][0].second, y + i * H, out, H);
  } else {
    for (int e = 0; e < NE; e++) {
      const auto& r = rows[e];
      if (r.empty()) continue;
      const int64_t n = (int64_t)r.size();
      for (int64_t i = 0; i < n; i++) std::memcpy(xin + i * H, in + (int64_t)r[i].first * H, sizeof(float) * H);
      const LayerWeights::Expert& x = w.experts[e];
      const ops::LinearOut gu[2] = {{&x.gate, fb(x.b_gate), g, FE}, {&x.up, fb(x.b_up), u, FE}};
      ops::linear_group(pool, K, xin, H, n, gu, 2);
      gate(g, u, n * FE);
      ops::linear(pool, K, g, FE, n, x.down, fb(x.b_down), y, H);
      for (int64_t i = 0; i < n; i++) K.axpy(r[i].second, y + i * H, out + (int64_t)r[i].first * H, H);
    }
  }
  if (FS == 0) return;
  ops::gated_mlp(pool, K, spec_.act, in, H, T, w.shared.gate, w.shared.up, w.shared.down, nullptr, nullptr, nullptr,
                 FS, g, u, y);
  for (int32_t t = 0; t < T; t++) {
    float s = 1.f;
    if (w.shared_scale.data) s = 1.f / (1.f + std::exp(-K.dot(in + (int64_t)t * H, (const float*)w.shared_scale.data, H)));
    K.axpy(s, y + (int64_t)t * H, out + (int64_t)t * H, H);
  }
}

}  // namespace ef
