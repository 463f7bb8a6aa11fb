// Recurrent token mixers in place of attention over a KV cache (ArchSpec::linear): Gated DeltaNet layers (Qwen3-Next,
// Qwen3.5), whose state per value head is a [lin_k_dim, lin_v_dim] matrix updated by the gated delta rule, LFM2's
// gated short convolutions, whose state is their last inputs, Mamba2 mixers (Granite 4.0-H, Nemotron-H, Falcon-H1),
// whose state per head is a [ssm_head_dim, ssm_state] matrix, and Mamba mixers (Mamba, Falcon-Mamba, Jamba),
// ssm_state values per channel. Each layer's state starts with its causal convolution's last inputs.
// Computed token by token (transformers' recurrent forms; their chunked forms for prompts are the same recurrences
// reordered), each head on its own thread.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "edgeformer/errors.h"
#include "edgeformer/model.h"
#include "edgeformer/ops.h"
#include "loader.h"

namespace ef {

// the decay rates A = -exp(A_log) as llama.cpp's files store them (lin.A), or from the checkpoint's A_log: n per
// head, or [n, state] (Mamba: per channel and state; state 0: a vector)
static Tensor decay_rates(loading::Loader& L, const std::string& p, int64_t n, int64_t state = 0) {
  const std::vector<int64_t> shape = state ? std::vector<int64_t>{n, state} : std::vector<int64_t>{n};
  if (L.find(p + "lin.A")) return L.small(p + "lin.A", shape, true);
  const Tensor A_log = L.small(p + "lin.A_log", shape, true);
  Tensor A = Tensor::empty(DType::F32, shape);
  for (int64_t h = 0; h < A.numel(); h++) ((float*)A.data)[h] = -std::exp(((const float*)A_log.data)[h]);
  return A;
}

// softplus(x) = log(1 + exp(x)), x itself above 20 (as torch's threshold)
static inline float softplus(float x) { return x > 20.f ? x : std::log1p(std::exp(x)); }

// a causal depthwise convolution's weight: [channels, 1, taps] as a Conv1d stores it, or [channels, taps]
static Tensor conv_weight(loading::Loader& L, const std::string& p, int64_t channels, int64_t taps) {
  const Tensor* conv = L.find(p + "lin.conv.weight");
  return L.small(p + "lin.conv.weight", conv && conv->dim() == 3 ? std::vector<int64_t>{channels, 1, taps}
                                                                 : std::vector<int64_t>{channels, taps}, true);
}

// the causal depthwise convolution of `taps` over C channels, T rows: row t's input in + t * in_stride, its state
// hist[t] (the channels' last taps - 1 inputs, [taps - 1][C], oldest first) updated; out + t * out_stride takes the
// weighted sum plus bias, through SiLU where silu (in and out may be the same rows)
static void causal_conv(ThreadPool* pool, int32_t T, int64_t C, int64_t taps, const float* in, size_t in_stride,
                        float* const* hist, const float* w, const float* bias, bool silu, float* out,
                        size_t out_stride) {
  pool->parallel_for(C, 256, [&](int, int64_t c0, int64_t c1) {
    for (int32_t t = 0; t < T; t++) {
      float* h = hist[t];
      for (int64_t c = c0; c < c1; c++) {
        const float* wc = w + c * taps;
        const float cur = in[(size_t)t * in_stride + c];
        float acc = wc[taps - 1] * cur + (bias ? bias[c] : 0.f);
        for (int64_t j = 0; j < taps - 1; j++) acc += wc[j] * h[j * C + c];
        for (int64_t j = 0; j + 1 < taps - 1; j++) h[j * C + c] = h[(j + 1) * C + c];
        if (taps > 1) h[(taps - 2) * C + c] = cur;
        out[(size_t)t * out_stride + c] = silu ? acc / (1.f + std::exp(-acc)) : acc;
      }
    }
  });
}

float* const* Model::row_states(int layer, int32_t T, int32_t pos0, Model* const* seqs) {
  const size_t slot = (size_t)lin_slot_[layer] * lin_stride_;
  lin_rows_.resize(T);
  for (int32_t t = 0; t < T; t++) {
    Model& m = seqs ? *seqs[t] : *this;
    lin_rows_[t] = m.lin_state_.data() + slot;
    if ((seqs ? m.n_past_ : pos0 + t) == 0) std::fill_n(lin_rows_[t], lin_stride_, 0.f);
  }
  return lin_rows_.data();
}

void Model::load_linear(loading::Loader& L, LayerWeights& w, const std::string& p, int kind) {
  if (kind == 5) {  // (Mamba: in_proj to x, z; the convolution over x; x_proj to dt, B, C; dt_proj; A, D per channel)
    const int64_t H = spec_.hidden_size, I = spec_.ssm_inner(), N = spec_.ssm_state, R = spec_.ssm_dt_rank;
    w.lin_qkv = L.matrix(p + "lin.in.weight", {2 * I, H});
    w.lin_conv = conv_weight(L, p, I, spec_.lin_conv);
    if (spec_.ssm_conv_bias) w.lin_conv_b = L.vec(p + "lin.conv.bias", I, true);
    w.lin_x = L.matrix(p + "lin.x.weight", {R + 2 * N, I});
    w.lin_dt = L.matrix(p + "lin.dt.weight", {I, R});
    w.lin_dt_bias = L.vec(p + "lin.dt_bias", I, true);
    w.lin_A = decay_rates(L, p, I, N);
    w.lin_D = L.vec(p + "lin.D", I, true);
    w.lin_out = L.matrix(p + "lin.out.weight", {H, I});
    if (spec_.ssm_bcdt_weights) {
      w.lin_dt_norm = L.vec(p + "lin.dt_norm.weight", R, true);
      w.lin_b_norm = L.vec(p + "lin.b_norm.weight", N, true);
      w.lin_c_norm = L.vec(p + "lin.c_norm.weight", N, true);
    }
    return;
  }
  if (kind == 3) {  // (Mamba2: in_proj to z, x B C, dt; the convolution over x B C; per head dt_bias, A, D; out_proj)
    const int64_t H = spec_.hidden_size, I = spec_.ssm_inner(), CD = spec_.ssm_conv_dim(), nh = spec_.ssm_heads;
    w.lin_qkv = L.matrix(p + "lin.in.weight", {I + CD + nh, H});
    w.lin_out = L.matrix(p + "lin.out.weight", {H, I});
    w.lin_conv = conv_weight(L, p, CD, spec_.lin_conv);
    if (spec_.ssm_conv_bias) w.lin_conv_b = L.vec(p + "lin.conv.bias", CD, true);
    w.lin_dt_bias = L.vec(p + "lin.dt_bias", nh, true);
    w.lin_A = decay_rates(L, p, nh);
    w.lin_D = L.vec(p + "lin.D", nh, true);
    if (spec_.ssm_norm) w.lin_norm_w = L.vec(p + "lin.norm.weight", I, true);
    return;
  }
  if (kind == 2) {  // (LFM2: in_proj [3 H, H] to B, C, x; the convolution over H channels; out_proj)
    const int64_t H = spec_.hidden_size;
    w.lin_qkv = L.matrix(p + "lin.in.weight", {3 * H, H});
    w.lin_out = L.matrix(p + "lin.out.weight", {H, H});
    w.lin_conv = conv_weight(L, p, H, spec_.lin_conv);
    return;
  }
  const int64_t H = spec_.hidden_size, Hv = spec_.lin_v_heads;
  const int64_t KD = (int64_t)spec_.lin_k_heads * spec_.lin_k_dim, VD = Hv * spec_.lin_v_dim, CD = 2 * KD + VD;
  w.lin_qkv = L.matrix(p + "lin.qkv.weight", {CD, H});
  w.lin_z = L.matrix(p + "lin.z.weight", {VD, H});
  w.lin_b = L.matrix(p + "lin.b.weight", {Hv, H});
  w.lin_a = L.matrix(p + "lin.a.weight", {Hv, H});
  w.lin_out = L.matrix(p + "lin.out.weight", {H, VD});
  w.lin_conv = conv_weight(L, p, CD, spec_.lin_conv);
  w.lin_dt_bias = L.vec(p + "lin.dt_bias", Hv, true);
  w.lin_A = decay_rates(L, p, Hv);
  w.lin_norm_w = L.vec(p + "lin.norm.weight", spec_.lin_v_dim, true);
}

// LFM2's gated short convolution: B, C, x = in_proj(in); y = C * conv(B * x) (the last lin_conv - 1 values of
// B * x per channel kept in the state); out = out_proj(y)
void Model::short_conv(int layer, const float* in, float* out, int32_t T, int32_t pos0, Model* const* seqs) {
  const KernelTable& K = kernels();
  const LayerWeights& w = layers_[layer];
  ThreadPool* pool = pool_.get();
  const int64_t H = spec_.hidden_size;
  const size_t need = (size_t)T * 4 * H;  // BCx [T, 3 H], y [T, H]
  if (lin_.size() < need) lin_.resize(need);
  float* bcx = lin_.data();
  float* y = bcx + (size_t)T * 3 * H;
  ops::linear(pool, K, in, H, T, w.lin_qkv, nullptr, bcx, 3 * H);
  for (int32_t t = 0; t < T; t++) {  // B * x
    const float* row = bcx + (size_t)t * 3 * H;
    for (int64_t c = 0; c < H; c++) y[(size_t)t * H + c] = row[c] * row[2 * H + c];
  }
  causal_conv(pool, T, H, spec_.lin_conv, y, H, row_states(layer, T, pos0, seqs), (const float*)w.lin_conv.data,
              nullptr, false, y, H);
  for (int32_t t = 0; t < T; t++) {  // C * conv
    const float* c_row = bcx + (size_t)t * 3 * H + H;
    for (int64_t c = 0; c < H; c++) y[(size_t)t * H + c] *= c_row[c];
  }
  ops::linear(pool, K, y, H, T, w.lin_out, nullptr, out, H);
}

// Mamba2's mixer (Granite 4.0-H): z, xBC, dt = in_proj(in); xBC through the causal convolution (its last inputs
// in the state) and SiLU; per head h (its group's B and C: g = h / (heads / groups)), dt = softplus(dt + dt_bias)
// (clamped), S = exp(dt A) S + dt x B^T, y = S C + D x; y * silu(z), RMS-normalized per group; out_proj
void Model::mamba2(int layer, const float* in, float* out, int32_t T, int32_t pos0, Model* const* seqs) {
  const KernelTable& K = kernels();
  const LayerWeights& w = layers_[layer];
  ThreadPool* pool = pool_.get();
  const int64_t H = spec_.hidden_size, I = spec_.ssm_inner(), CD = spec_.ssm_conv_dim(), nh = spec_.ssm_heads;
  const int64_t P = spec_.ssm_head_dim, N = spec_.ssm_state, G = spec_.ssm_groups, taps = spec_.lin_conv;
  const int64_t PW = I + CD + nh;  // in_proj's width
  const size_t need = (size_t)T * (PW + CD + I);  // projections, the convolution's output, y
  if (lin_.size() < need) lin_.resize(need);
  float* proj = lin_.data();
  float* xbc = proj + (size_t)T * PW;
  float* y = xbc + (size_t)T * CD;
  ops::linear(pool, K, in, H, T, w.lin_qkv, nullptr, proj, PW);
  float* const* state = row_states(layer, T, pos0, seqs);
  causal_conv(pool, T, CD, taps, proj + I, PW, state, (const float*)w.lin_conv.data,
              fptr(w.lin_conv_b), true, xbc, CD);
  const float* dt_bias = (const float*)w.lin_dt_bias.data;
  const float* A = (const float*)w.lin_A.data;
  const float* D = (const float*)w.lin_D.data;
  const size_t s_off = (size_t)(taps - 1) * CD;
  const float dt_max = spec_.ssm_dt_max > 0.f ? spec_.ssm_dt_max : INFINITY;
  pool->parallel_for(nh, 1, [&](int, int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; h++) {
      const int64_t g = h / (nh / G);
      for (int32_t t = 0; t < T; t++) {
        float* S = state[t] + s_off + (size_t)h * P * N;  // [P][N]
        const float* x = xbc + (size_t)t * CD + h * P;
        const float* B = xbc + (size_t)t * CD + I + g * N;
        const float* C = B + G * N;
        const float raw = proj[(size_t)t * PW + I + CD + h] + dt_bias[h];
        const float dt = std::min(std::max(softplus(raw), spec_.ssm_dt_min), dt_max);
        const float dA = std::exp(dt * A[h]);
        float* yh = y + (size_t)t * I + h * P;
        for (int64_t p = 0; p < P; p++) {
          float* Sp = S + p * N;
          K.scale(Sp, dA, N);
          K.axpy(dt * x[p], B, Sp, N);
          yh[p] = K.dot(Sp, C, N) + D[h] * x[p];
        }
      }
    }
  });
  // y * silu(z), then RMS-normalized over each group's I / G values with the norm's weight (ssm_norm 1); or not
  // normalized (0); or normalized first, then times silu(z) (2)
  // (the gated rows end in z's rows, read there by out_proj, unless the norm comes after the gate: then in y's)
  const float* nw = (const float*)w.lin_norm_w.data;
  const int64_t gs = I / G;
  for (int32_t t = 0; t < T; t++) {
    float* yt = y + (size_t)t * I;
    float* zt = proj + (size_t)t * PW;  // (z's row takes silu(z) * y)
    if (spec_.ssm_norm == 2)
      for (int64_t g = 0; g < G; g++) K.rmsnorm(yt + g * gs, nw + g * gs, spec_.norm_eps, yt + g * gs, gs);
    K.act_mul(Act::SiLU, zt, yt, I);
    if (spec_.ssm_norm == 1)
      for (int64_t g = 0; g < G; g++) K.rmsnorm(zt + g * gs, nw + g * gs, spec_.norm_eps, yt + g * gs, gs);
  }
  const bool in_y = spec_.ssm_norm == 1;
  ops::linear(pool, K, in_y ? y : proj, in_y ? I : PW, T, w.lin_out, nullptr, out, H);
}

// Mamba's mixer (Mamba, Falcon-Mamba, Jamba): x, z = in_proj(in); x through the causal convolution (its last inputs
// in the state) and SiLU; dt, B, C = x_proj(x) (each RMS-normalized where ssm_bcdt_eps > 0: Falcon-Mamba without
// weights, Jamba with); dt = softplus(dt_proj(dt) + bias) per channel; per channel i,
// h_i = exp(dt_i A_i) h_i + dt_i x_i B (KernelTable::ssm_step), y_i = h_i . C + D_i x_i; y * silu(z); out_proj
void Model::mamba1(int layer, const float* in, float* out, int32_t T, int32_t pos0, Model* const* seqs) {
  const KernelTable& K = kernels();
  const LayerWeights& w = layers_[layer];
  ThreadPool* pool = pool_.get();
  const int64_t H = spec_.hidden_size, I = spec_.ssm_inner(), N = spec_.ssm_state, R = spec_.ssm_dt_rank;
  const int64_t taps = spec_.lin_conv, XW = R + 2 * N;  // x_proj's width
  const size_t need = (size_t)T * (2 * I + I + XW + I);  // x|z, x after the convolution, dt|B|C, dt per channel
  if (lin_.size() < need) lin_.resize(need);
  float* xz = lin_.data();
  float* x = xz + (size_t)T * 2 * I;
  float* dbc = x + (size_t)T * I;
  float* dt = dbc + (size_t)T * XW;
  ops::linear(pool, K, in, H, T, w.lin_qkv, nullptr, xz, 2 * I);
  float* const* state = row_states(layer, T, pos0, seqs);
  causal_conv(pool, T, I, taps, xz, 2 * I, state, (const float*)w.lin_conv.data,
              fptr(w.lin_conv_b), true, x, I);
  ops::linear(pool, K, x, I, T, w.lin_x, nullptr, dbc, XW);
  if (spec_.ssm_bcdt_eps > 0.f)
    for (int32_t t = 0; t < T; t++) {
      float* r = dbc + (size_t)t * XW;
      K.rmsnorm(r, fptr(w.lin_dt_norm), spec_.ssm_bcdt_eps, r, R);
      K.rmsnorm(r + R, fptr(w.lin_b_norm), spec_.ssm_bcdt_eps, r + R, N);
      K.rmsnorm(r + R + N, fptr(w.lin_c_norm), spec_.ssm_bcdt_eps, r + R + N, N);
    }
  ops::linear(pool, K, dbc, XW, T, w.lin_dt, (const float*)w.lin_dt_bias.data, dt, I);  // (reads dbc's first R)
  const float* A = (const float*)w.lin_A.data;
  const float* D = (const float*)w.lin_D.data;
  const size_t s_off = (size_t)(taps - 1) * I;
  for (size_t i = 0; i < (size_t)T * I; i++) dt[i] = softplus(dt[i]);
  pool->parallel_for(I, 64, [&](int, int64_t c0, int64_t c1) {
    std::vector<float> y(c1 - c0);
    for (int32_t t = 0; t < T; t++) {
      const float* B = dbc + (size_t)t * XW + R;
      float* xt = x + (size_t)t * I;
      K.ssm_step(A + c0 * N, dt + (size_t)t * I + c0, xt + c0, B, B + N, state[t] + s_off + c0 * N, y.data(),
                 c1 - c0, N);
      for (int64_t c = c0; c < c1; c++) xt[c] = y[c - c0] + D[c] * xt[c];  // (x's row takes y)
    }
  });
  for (int32_t t = 0; t < T; t++) K.act_mul(Act::SiLU, xz + (size_t)t * 2 * I + I, x + (size_t)t * I, I);
  ops::linear(pool, K, xz + I, 2 * I, T, w.lin_out, nullptr, out, H);  // (z's rows hold y * silu(z))
}

void Model::linear_attention(int layer, const float* in, float* out, int32_t T, int32_t pos0, Model* const* seqs) {
  if (spec_.short_conv(layer)) return short_conv(layer, in, out, T, pos0, seqs);
  if (spec_.mamba(layer)) return mamba2(layer, in, out, T, pos0, seqs);
  if (spec_.mamba1(layer)) return mamba1(layer, in, out, T, pos0, seqs);
  const KernelTable& K = kernels();
  const LayerWeights& w = layers_[layer];
  ThreadPool* pool = pool_.get();
  const int64_t H = spec_.hidden_size, Hk = spec_.lin_k_heads, Hv = spec_.lin_v_heads;
  const int64_t dk = spec_.lin_k_dim, dv = spec_.lin_v_dim, taps = spec_.lin_conv;
  const int64_t KD = Hk * dk, VD = Hv * dv, CD = 2 * KD + VD, group = Hv / Hk;
  // scratch: the projections before the convolution [T, CD], after it [T, CD], z [T, VD], b, a [T, Hv], o [T, VD]
  const size_t need = (size_t)T * (2 * CD + 2 * VD + 2 * Hv);
  if (lin_.size() < need) lin_.resize(need);
  float* mixed = lin_.data();
  float* x = mixed + (size_t)T * CD;
  float* z = x + (size_t)T * CD;
  float* b = z + (size_t)T * VD;
  float* a = b + (size_t)T * Hv;
  float* o = a + (size_t)T * Hv;
  const ops::LinearOut proj[4] = {{&w.lin_qkv, nullptr, mixed, CD}, {&w.lin_z, nullptr, z, VD},
                                  {&w.lin_b, nullptr, b, Hv}, {&w.lin_a, nullptr, a, Hv}};
  ops::linear_group(pool, K, in, H, T, proj, 4);
  // row t's state (a batch: its own sequence's); q, k, v through the causal convolution and SiLU
  float* const* state = row_states(layer, T, pos0, seqs);
  causal_conv(pool, T, CD, taps, mixed, CD, state, (const float*)w.lin_conv.data, nullptr, true, x, CD);
  // q and k L2-normalized per head (transformers' l2norm: x / sqrt(sum x^2 + 1e-6)), q also by 1 / sqrt(dk)
  const float qscale = 1.f / std::sqrt((float)dk);
  for (int32_t t = 0; t < T; t++)
    for (int64_t h = 0; h < 2 * Hk; h++) {
      float* v = x + (size_t)t * CD + h * dk;
      const float inv = 1.f / std::sqrt(K.dot(v, v, dk) + 1e-6f);
      K.scale(v, h < Hk ? inv * qscale : inv, dk);
    }
  // the gated delta rule, per value head (its key head: h / group, or h % Hk in llama.cpp's tiled order), token by
  // token
  const float* dt_bias = (const float*)w.lin_dt_bias.data;
  const float* A_rate = (const float*)w.lin_A.data;
  const float* nw = (const float*)w.lin_norm_w.data;
  const size_t s_off = (size_t)(taps - 1) * CD;
  pool->parallel_for(Hv, 1, [&](int, int64_t h0, int64_t h1) {
    std::vector<float> mem(dv);
    for (int64_t h = h0; h < h1; h++) {
      const float A = A_rate[h];
      for (int32_t t = 0; t < T; t++) {
        float* S = state[t] + s_off + (size_t)h * dk * dv;  // [dk][dv]
        const float* q = x + (size_t)t * CD + (spec_.lin_v_tiled ? h % Hk : h / group) * dk;
        const float* k = q + KD;
        const float* v = x + (size_t)t * CD + 2 * KD + h * dv;
        const float ai = a[(size_t)t * Hv + h] + dt_bias[h];
        const float decay = std::exp(A * softplus(ai)), beta = 1.f / (1.f + std::exp(-b[(size_t)t * Hv + h]));
        std::fill(mem.begin(), mem.end(), 0.f);
        for (int64_t i = 0; i < dk; i++) {  // S *= decay; mem = S^T k
          K.scale(S + i * dv, decay, dv);
          K.axpy(k[i], S + i * dv, mem.data(), dv);
        }
        for (int64_t j = 0; j < dv; j++) mem[j] = (v[j] - mem[j]) * beta;  // delta
        float* oh = o + (size_t)t * VD + h * dv;
        std::fill_n(oh, dv, 0.f);
        for (int64_t i = 0; i < dk; i++) {  // S += k delta^T; o = S^T q
          K.axpy(k[i], mem.data(), S + i * dv, dv);
          K.axpy(q[i], S + i * dv, oh, dv);
        }
        // RMS-normalized with its weight, times silu(z) (z's row holds the result)
        float* zh = z + (size_t)t * VD + h * dv;
        K.rmsnorm(oh, nw, spec_.norm_eps, oh, dv);
        K.act_mul(Act::SiLU, zh, oh, dv);
      }
    }
  });
  ops::linear(pool, K, z, VD, T, w.lin_out, nullptr, out, H);
}

}  // namespace ef
