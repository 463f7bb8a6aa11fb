// Mixture of experts (Mixtral, Qwen2/3-MoE, OLMoE, Granite MoE, gpt-oss, ERNIE 4.5, GLM-4.5), as transformers
// computes it: router logits (+ bias), softmax (or sigmoid) in f32, the top n_experts_used scores (chosen with a
// bias of their own, among the best groups, where the architecture says so; weights renormalized over the chosen
// where moe_norm_topk, times moe_routed_scale); each expert (a gated MLP, or a plain one where gated_mlp is false)
// runs once over the rows that chose it (a decode step's experts side by side), its
// output added to theirs times their weight, experts in index order; then the shared expert (scaled by
// sigmoid(shared_scale . x) where shared_expert_gate) is added.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <vector>

#include "edgeformer/model.h"
#include "edgeformer/ops.h"

namespace ef {

void moe_route(const ArchSpec& sp, const KernelTable& K, float* logits, int32_t T, const float* select_b,
               const float* expert_scale, MoeRows& rows) {
  const int NE = sp.n_experts, top = sp.n_experts_used;
  rows.assign(NE, {});
  std::vector<int32_t> order(NE);
  const int groups = sp.moe_groups > 1 ? sp.moe_groups : 1, per = NE / groups;
  const bool choose_apart = sp.moe_select_bias || groups > 1;
  std::vector<float> choice(choose_apart ? NE : 0), group_score(groups), best(per);
  std::vector<int32_t> group_order(groups);
  // the highest first; equal values by index, as torch.topk's CPU kernel orders them
  auto top_first = [](const float* v, std::vector<int32_t>& idx, int n) {
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + n, idx.end(),
                      [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  };
  for (int32_t t = 0; t < T; t++) {
    float* p = logits + (size_t)t * NE;
    if (sp.moe_sigmoid) {
      for (int e = 0; e < NE; e++) p[e] = 1.f / (1.f + std::exp(-p[e]));
    } else {
      K.softmax(p, NE);
    }
    const float* c = p;  // what the choice ranks
    if (choose_apart) {
      for (int e = 0; e < NE; e++) choice[e] = p[e] + (sp.moe_select_bias ? select_b[e] : 0.f);
      if (groups > 1) {  // only the experts of the best groups (by the sum of their moe_group_top best) compete
        for (int g = 0; g < groups; g++) {
          std::copy(choice.begin() + g * per, choice.begin() + (g + 1) * per, best.begin());
          std::partial_sort(best.begin(), best.begin() + sp.moe_group_top, best.end(), std::greater<float>());
          group_score[g] = std::accumulate(best.begin(), best.begin() + sp.moe_group_top, 0.f);
        }
        top_first(group_score.data(), group_order, sp.moe_groups_used);
        for (int i = sp.moe_groups_used; i < groups; i++)
          std::fill(choice.begin() + group_order[i] * per, choice.begin() + (group_order[i] + 1) * per, -INFINITY);
      }
      c = choice.data();
    }
    top_first(c, order, top);
    float sum = 0.f;
    for (int i = 0; i < top; i++) sum += p[order[i]];
    const float norm = (sp.moe_norm_topk && sum > 0.f ? 1.f / sum : 1.f) * sp.moe_routed_scale;
    for (int i = 0; i < top; i++)
      rows[order[i]].emplace_back(t, p[order[i]] * norm * (expert_scale ? expert_scale[order[i]] : 1.f));
  }
}

void Model::moe(int layer, const float* in, float* out, int32_t T, const KernelTable& K, const float* router_in) {
  const LayerWeights& w = layers_[layer];
  const int NE = spec_.n_experts, top = spec_.n_experts_used;
  const int64_t H = spec_.hidden_size, FE = spec_.moe_ffn_size, FS = spec_.shared_ffn_size;
  ThreadPool* pool = pool_.get();
  float* logits = moe_logits_.data();
  ops::linear(pool, K, router_in ? router_in : in, H, T, w.router, fptr(w.router_b), logits, NE);
  // the experts' hidden rows into g: act(g) * u, gpt-oss's clamped gate, or act(g) where the experts have no gate
  // (Nemotron-H: gated_mlp false; their up products are in g)
  const float limit = spec_.swiglu_limit, alpha = spec_.swiglu_alpha;
  const bool gated = spec_.gated_mlp;
  auto activate = [&](float* g, const float* u, int64_t n) {
    if (!gated) return K.act(spec_.act, g, n);
    if (limit <= 0) return K.act_mul(spec_.act, g, u, n);
    for (int64_t i = 0; i < n; i++) {
      const float x = std::min(g[i], limit), y = std::min(std::max(u[i], -limit), limit);
      g[i] = (y + 1.f) * x / (1.f + std::exp(-alpha * x));
    }
  };

  MoeRows rows;
  moe_route(spec_, K, logits, T, fptr(w.select_b), fptr(w.expert_scale), rows);
  std::vector<int32_t> order;  // (one token: its experts, in index order)
  for (int e = 0; e < NE; e++)
    if (!rows[e].empty()) order.push_back(e);

  std::memset(out, 0, sizeof(float) * T * H);
  float *xin = moe_in_.data(), *y = moe_out_.data(), *g = g_.data(), *u = u_.data();
  if (T == 1) {
    // one token (a decode step): its experts share their input, so all their gate and up products run in one
    // parallel region, then all their down products in another (two regions, not three per expert)
    // (experts in index order: outputs added as the rows path adds them)
    std::vector<ops::LinearOut> o;
    for (int i = 0; i < top; i++) {
      const LayerWeights::Expert& x = w.experts[order[i]];
      if (gated) o.push_back({&x.gate, fptr(x.b_gate), g + i * FE, FE});
      o.push_back({&x.up, fptr(x.b_up), (gated ? u : g) + i * FE, FE});
    }
    ops::linear_group(pool, K, in, H, 1, o.data(), (int)o.size());
    activate(g, u, top * FE);
    o.clear();
    for (int i = 0; i < top; i++) {
      const LayerWeights::Expert& x = w.experts[order[i]];
      o.push_back({&x.down, fptr(x.b_down), y + i * H, H, g + i * FE});
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
      const ops::LinearOut gu[2] = {{&x.up, fptr(x.b_up), gated ? u : g, FE}, {&x.gate, fptr(x.b_gate), g, FE}};
      ops::linear_group(pool, K, xin, H, n, gu, gated ? 2 : 1);
      activate(g, u, n * FE);
      ops::linear(pool, K, g, FE, n, x.down, fptr(x.b_down), y, H);
      for (int64_t i = 0; i < n; i++) K.axpy(r[i].second, y + i * H, out + (int64_t)r[i].first * H, H);
    }
  }
  if (FS == 0) return;
  ops::mlp(pool, K, spec_.act, in, H, T, w.shared.gate, w.shared.up, w.shared.down, fptr(w.shared.b_gate),
           fptr(w.shared.b_up), fptr(w.shared.b_down), FS, g, u, y);  // (its gate: none where gated_mlp is false)
  for (int32_t t = 0; t < T; t++) {
    float s = 1.f;
    if (w.shared_scale.data) s = 1.f / (1.f + std::exp(-K.dot(in + (int64_t)t * H, (const float*)w.shared_scale.data, H)));
    K.axpy(s, y + (int64_t)t * H, out + (int64_t)t * H, H);
  }
}

}  // namespace ef
