// Gemma 3n's AltUp (alternating updates: ArchSpec::altup streams of the hidden state, of which the layers compute
// on one and predict / correct the others through a router's coefficients), as transformers computes it in
// float32. The layer itself (with its LAuReL branch) is the model's run(); these are the steps around it.
//   streams_: [N][T][H] the streams s, then [N][T][H] their predictions p, then scratch [T][H] and [T][N*N + N]
#include <algorithm>
#include <cmath>
#include <cstring>

#include "edgeformer/model.h"
#include "edgeformer/ops.h"

namespace ef {

namespace {
// y's rows rescaled to the RMS of x's rows (y's floored at sqrt(1e-5)), elementwise (y * target) / new, as
// transformers writes it
void match_magnitude(const float* x, float* y, int32_t T, int64_t H) {
  for (int32_t t = 0; t < T; t++) {
    const float *xr = x + (size_t)t * H;
    float* yr = y + (size_t)t * H;
    double sx = 0, sy = 0;
    for (int64_t i = 0; i < H; i++) {
      sx += (double)xr[i] * xr[i];
      sy += (double)yr[i] * yr[i];
    }
    const float target = std::sqrt((float)(sx / H)), now = std::sqrt(std::max((float)(sy / H), 1e-5f));
    for (int64_t i = 0; i < H; i++) yr[i] = yr[i] * target / now;
  }
}
}  // namespace

void Model::altup_begin(const float* x, int32_t T, const KernelTable& K) {
  const int N = spec_.altup;
  const int64_t H = spec_.hidden_size;
  const size_t TH = (size_t)T * H;
  streams_.resize(2 * N * TH + TH + (size_t)T * (N * N + N));
  float* s = streams_.data();
  std::memcpy(s, x, TH * sizeof(float));
  for (int i = 1; i < N; i++) {
    ops::linear(pool_.get(), K, x, H, T, altup_proj_[i - 1], nullptr, s + i * TH, H);
    match_magnitude(x, s + i * TH, T, H);
  }
}

void Model::altup_modalities(const LayerWeights& w, const float* src, int32_t T, float* mod, const KernelTable& K) {
  const int N = spec_.altup;
  const int64_t H = spec_.hidden_size;
  float* r = streams_.data() + 2 * N * (size_t)T * H;
  for (int32_t t = 0; t < T; t++)
    K.rmsnorm(src + (size_t)t * H, fptr(w.altup_norm_w), spec_.norm_eps, r + (size_t)t * H, H);
  K.scale(r, (float)(1.0 / (double)H), (int64_t)T * H);
  ops::linear(pool_.get(), K, r, H, T, w.altup_router, nullptr, mod, N);
  for (int64_t i = 0; i < (int64_t)T * N; i++) mod[i] = std::tanh(mod[i]);
}

void Model::altup_predict(const LayerWeights& w, int32_t T, const KernelTable& K) {
  const int N = spec_.altup;
  const int64_t H = spec_.hidden_size;
  const size_t TH = (size_t)T * H;
  float *s = streams_.data(), *p = s + N * TH;
  float* mod = s + 2 * N * TH + TH;
  float* coef = mod + (size_t)T * N;  // [T][N*N]: row j of the prediction's matrix at j*N
  altup_modalities(w, s, T, mod, K);
  ops::linear(pool_.get(), K, mod, N, T, w.altup_pred, nullptr, coef, (int64_t)N * N);
  for (int j = 0; j < N; j++)
    for (int32_t t = 0; t < T; t++) {
      const float* c = coef + (size_t)t * N * N + (size_t)j * N;
      float* out = p + j * TH + (size_t)t * H;
      for (int64_t d = 0; d < H; d++) {
        float acc = 0.f;
        for (int i = 0; i < N; i++) acc += s[i * TH + (size_t)t * H + d] * c[i];
        out[d] = acc + s[j * TH + (size_t)t * H + d];
      }
    }
}

void Model::altup_correct(const LayerWeights& w, const float* a, int32_t T, const KernelTable& K) {
  const int N = spec_.altup;
  const int64_t H = spec_.hidden_size;
  const size_t TH = (size_t)T * H;
  float *s = streams_.data(), *p = s + N * TH;
  float* mod = s + 2 * N * TH + TH;
  float* coef = mod + (size_t)T * N;  // [T][N]
  altup_modalities(w, a, T, mod, K);
  ops::linear(pool_.get(), K, mod, N, T, w.altup_corr, nullptr, coef, N);
  for (int j = 0; j < N; j++)
    for (int32_t t = 0; t < T; t++) {
      const float c = coef[(size_t)t * N + j] + 1.f;
      const float *pj = p + j * TH + (size_t)t * H, *p0 = p + (size_t)t * H, *at = a + (size_t)t * H;
      float* out = s + j * TH + (size_t)t * H;
      for (int64_t d = 0; d < H; d++) out[d] = (at[d] - p0[d]) * c + pj[d];
    }
}

void Model::altup_end(float* x, int32_t T, const KernelTable& K) {
  const int N = spec_.altup;
  const int64_t H = spec_.hidden_size;
  const size_t TH = (size_t)T * H;
  float *s = streams_.data(), *u = s + N * TH;  // (the predictions' room: free after the last layer)
  for (int i = 1; i < N; i++) {
    ops::linear(pool_.get(), K, s + i * TH, H, T, altup_unembed_[i - 1], nullptr, u + i * TH, H);
    match_magnitude(s, u + i * TH, T, H);
  }
  for (size_t k = 0; k < TH; k++) {
    float acc = s[k];
    for (int i = 1; i < N; i++) acc += u[i * TH + k];
    x[k] = acc / (float)N;
  }
}

}  // namespace ef
