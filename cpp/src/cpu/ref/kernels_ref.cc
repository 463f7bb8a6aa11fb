// Scalar reference kernels: the generic path on any CPU and the oracle the SIMD kernels are tested against.
#include <cmath>
#include <cstring>
#include <type_traits>

#include "cpu/kernel_tables.h"
#include "cpu/scalar_math.h"

namespace ef {
namespace {
// scalar primitives for qdot.h
inline void dot32_halves(const int8_t* w, const int8_t* x, int32_t& lo, int32_t& hi) {
  lo = hi = 0;
  for (int i = 0; i < 16; i++) lo += (int32_t)w[i] * x[i];
  for (int i = 16; i < 32; i++) hi += (int32_t)w[i] * x[i];
}
inline void unpack_q4(const uint8_t* qs, int8_t* v) {
  for (int i = 0; i < 16; i++) {
    v[i] = (int8_t)(qs[i] & 0x0F);
    v[i + 16] = (int8_t)(qs[i] >> 4);
  }
}
inline void unpack_q4_pair(const uint8_t* qs, int8_t* lo, int8_t* hi) {
  for (int i = 0; i < 32; i++) {
    lo[i] = (int8_t)(qs[i] & 0x0F);
    hi[i] = (int8_t)(qs[i] >> 4);
  }
}
inline void unpack_q6(const uint8_t* ql, const uint8_t* qh, int sl, int sh, int8_t* v) {
  for (int i = 0; i < 32; i++) v[i] = (int8_t)(((ql[i] >> sl) & 0x0F) | (((qh[i] >> sh) & 0x03) << 4));
}
using qacc = float;
inline qacc qacc_zero() { return 0.f; }
inline float qacc_sum(qacc a) { return a; }
inline qacc dot32_acc(qacc acc, const int8_t* w, const int8_t* x, float scale) {
  int32_t s = 0;
  for (int i = 0; i < 32; i++) s += (int32_t)w[i] * x[i];
  return acc + (float)s * scale;
}
inline qacc dot_q4_acc(qacc acc, const uint8_t* qs, const int8_t* x, float scale) {
  int32_t s = 0;
  for (int i = 0; i < 16; i++) s += (qs[i] & 0x0F) * x[i] + (qs[i] >> 4) * x[i + 16];
  return acc + (float)s * scale;
}
// scalar panel primitives for qpanel.h (fma as the SIMD copies do, so that they agree to the last bit)
constexpr int kPanelRT = 4;
constexpr int kRowTileT = 4, kRowTileP = 1, kRowDecodeP = 1;
constexpr int32_t kS8Bias = 0;
struct pi { int32_t v[16]; };
struct pf { float v[16]; };
struct pw { uint8_t b[64]; };
inline pi pi_set1(int32_t a) {
  pi r;
  for (int i = 0; i < 16; i++) r.v[i] = a;
  return r;
}
inline pi pi_add(pi a, pi b) {
  for (int i = 0; i < 16; i++) a.v[i] += b.v[i];
  return a;
}
inline pf pf_set1(float a) {
  pf r;
  for (int i = 0; i < 16; i++) r.v[i] = a;
  return r;
}
inline pf pf_zero() { return pf_set1(0.f); }
inline pw pw_load(const uint8_t* p) {
  pw r;
  std::memcpy(r.b, p, 64);
  return r;
}
inline void pw_nibbles(pw v, pw& lo, pw& hi) {
  for (int i = 0; i < 64; i++) {
    lo.b[i] = v.b[i] & 0x0F;
    hi.b[i] = v.b[i] >> 4;
  }
}
inline pw pw_signed(pw v) { return v; }
inline pw pw_unoffset(pw v) {
  for (int i = 0; i < 64; i++) v.b[i] ^= 0x80;
  return v;
}
inline pw pw_and8(pw v, uint8_t m) {
  for (int i = 0; i < 64; i++) v.b[i] &= m;
  return v;
}
inline pw pw_or(pw a, pw b) {
  for (int i = 0; i < 64; i++) a.b[i] |= b.b[i];
  return a;
}
inline pw pw_sll16(pw v, int n) {  // 16-bit lanes, little-endian, as the SIMD shifts
  for (int i = 0; i < 64; i += 2) {
    const uint16_t w = (uint16_t)((v.b[i] | (v.b[i + 1] << 8)) << n);
    v.b[i] = (uint8_t)w;
    v.b[i + 1] = (uint8_t)(w >> 8);
  }
  return v;
}
inline pw pw_srl16(pw v, int n) {
  for (int i = 0; i < 64; i += 2) {
    const uint16_t w = (uint16_t)((v.b[i] | (v.b[i + 1] << 8)) >> n);
    v.b[i] = (uint8_t)w;
    v.b[i + 1] = (uint8_t)(w >> 8);
  }
  return v;
}
inline pw pw_lut16(pw idx, const int8_t* table) {  // bytes 0..15 -> table[byte]
  for (int i = 0; i < 64; i++) idx.b[i] = (uint8_t)table[idx.b[i] & 0x0F];
  return idx;
}
inline pf pf_load_s8(const uint8_t* p) {
  pf r;
  for (int i = 0; i < 16; i++) r.v[i] = (float)(int8_t)p[i];
  return r;
}
inline pi pi_dot_u8(pi acc, pw u, const int8_t* x) {
  for (int r = 0; r < 16; r++)
    for (int j = 0; j < 4; j++) acc.v[r] += (int32_t)u.b[4 * r + j] * x[j];
  return acc;
}
inline pi pi_dot_s8(pi acc, pw s, const int8_t* x) {
  for (int r = 0; r < 16; r++)
    for (int j = 0; j < 4; j++) acc.v[r] += (int32_t)(int8_t)s.b[4 * r + j] * x[j];
  return acc;
}
inline pf pf_load_f16(const uint8_t* p) {
  pf r;
  for (int i = 0; i < 16; i++) r.v[i] = f16_load(p + 2 * i);
  return r;
}
inline pf pf_load_u8(const uint8_t* p) {
  pf r;
  for (int i = 0; i < 16; i++) r.v[i] = (float)p[i];
  return r;
}
inline pf pf_scale(pf a, float s) {
  for (int i = 0; i < 16; i++) a.v[i] *= s;
  return a;
}
inline pf pf_mul(pf a, pf b) {
  for (int i = 0; i < 16; i++) a.v[i] *= b.v[i];
  return a;
}
inline pf pf_fma(pf a, pf b, pf c) {
  for (int i = 0; i < 16; i++) c.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
  return c;
}
inline pf pf_fma_i(pi a, pf b, pf c) {
  for (int i = 0; i < 16; i++) c.v[i] = std::fma((float)a.v[i], b.v[i], c.v[i]);
  return c;
}
inline void pf_store(float* y, pf v, const float* bias, int n) {
  for (int i = 0; i < n; i++) y[i] = v.v[i] + (bias ? bias[i] : 0.f);
}
struct pix { uint32_t v[16]; };
inline pix pix_load_u8(const uint8_t* p) {
  pix r;
  for (int i = 0; i < 16; i++) r.v[i] = p[i];
  return r;
}
inline pix pix_load_u16(const uint8_t* p) {
  pix r;
  for (int i = 0; i < 16; i++) r.v[i] = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8);
  return r;
}
template <int S, int NB>
inline pix pix_hi(pix idx, pix hi) {
  for (int i = 0; i < 16; i++) idx.v[i] |= ((hi.v[i] >> S) & ((1u << NB) - 1)) << 8;
  return idx;
}
inline pw pw_gather4(const uint32_t* t, pix i) {
  pw r;
  for (int k = 0; k < 16; k++) std::memcpy(r.b + 4 * k, &t[i.v[k]], 4);
  return r;
}
inline void pw_gather8(const uint64_t* t, pix i, pw& c0, pw& c1) {
  for (int k = 0; k < 16; k++) {
    const uint8_t* e = (const uint8_t*)&t[i.v[k]];
    std::memcpy(c0.b + 4 * k, e, 4);
    std::memcpy(c1.b + 4 * k, e + 4, 4);
  }
}

inline void pw_store(uint8_t* p, pw v) { std::memcpy(p, v.b, 64); }
inline pf pf_load(const float* p) {
  pf r;
  std::memcpy(r.v, p, 64);
  return r;
}
inline pw pw_negate(pw v, const uint8_t* mask8) {
  for (int j = 0; j < 64; j++)
    if ((mask8[j / 8] >> (j % 8)) & 1) v.b[j] = (uint8_t)-(int8_t)v.b[j];
  return v;
}
}  // namespace
}  // namespace ef

#include "cpu/qdot.h"
#include "cpu/qpanel.h"

namespace ef {
namespace cpu {
namespace {

template <typename W>
void matmul_ref(const float* x, int64_t ldx, const void* wv, int64_t ldw, const float* bias, float* y, int64_t ldy,
                int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const W* w = (const W*)wv;
  for (int64_t o = o0; o < o1; o++) {
    const W* wr = w + o * ldw;
    for (int64_t t = 0; t < T; t++) {
      const float* xr = x + t * ldx;
      float acc = 0.f;
      for (int64_t k = 0; k < K; k++) acc += x_for<W>(xr[k]) * w_to_f32<W>(wr[k]);
      y[t * ldy + o] = acc + (bias ? bias[o] : 0.f);
    }
  }
}

// Float panels (quant.h): row o's element k in panel o / 16 at (k / s) 16 s + (o % 16) s + k % s, s = 2 for
// bf16 (pairs), 1 for f32 and f16
template <typename W>
void matmul_panel_ref(const float* x, int64_t ldx, const void* wv, int64_t ldw, const float* bias, float* y,
                      int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  constexpr int64_t s = std::is_same<W, bf16_t>::value ? 2 : 1;
  const W* w = (const W*)wv;
  const int64_t pstride = ldw ? ldw : kPanel * K;
  for (int64_t o = o0; o < o1; o++) {
    const W* p = w + (o / kPanel) * pstride + s * (o % kPanel);
    for (int64_t t = 0; t < T; t++) {
      const float* xr = x + t * ldx;
      float acc = 0.f;
      for (int64_t k = 0; k < K; k++) acc += x_for<W>(xr[k]) * w_to_f32<W>(p[(k / s) * s * kPanel + k % s]);
      y[t * ldy + o] = acc + (bias ? bias[o] : 0.f);
    }
  }
}

template <typename W>
void to_f32_ref(const void* src, float* dst, int64_t n) {
  const W* s = (const W*)src;
  for (int64_t i = 0; i < n; i++) dst[i] = w_to_f32<W>(s[i]);
}

float dot_ref(const float* a, const float* b, int64_t n) {
  float acc = 0.f;
  for (int64_t i = 0; i < n; i++) acc += a[i] * b[i];
  return acc;
}
void wsum_ref(const float* p, const float* rows, int64_t ld, int64_t n, int64_t d, float* out) {
  for (int64_t i = 0; i < d; i++) out[i] = 0.f;
  for (int64_t j = 0; j < n; j++)
    for (int64_t i = 0; i < d; i++) out[i] += p[j] * rows[j * ld + i];
}
void axpy_ref(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}
void scale_ref(float* x, float a, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] *= a;
}
void add_ref(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += x[i];
}
void mul_ref(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] *= x[i];
}
void rmsnorm_ref(const float* x, const float* w, float eps, float* y, int64_t n) {
  float ss = 0.f;
  for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
  float r = 1.f / std::sqrt(ss / (float)n + eps);
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * r * (w ? w[i] : 1.f);
}
void layernorm_ref(const float* x, const float* w, const float* b, float eps, float* y, int64_t n) {
  float mean = 0.f;
  for (int64_t i = 0; i < n; i++) mean += x[i];
  mean /= (float)n;
  float var = 0.f;
  for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
  float r = 1.f / std::sqrt(var / (float)n + eps);
  for (int64_t i = 0; i < n; i++) y[i] = (x[i] - mean) * r * (w ? w[i] : 1.f) + (b ? b[i] : 0.f);
}
void f32_to_f16_ref(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = f32_to_f16(src[i]);
}
void f32_to_bf16_ref(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}

void softmax_ref(float* x, int64_t n) {
  if (n <= 0) return;
  float m = x[0];
  for (int64_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
  float s = 0.f;
  for (int64_t i = 0; i < n; i++) {
    x[i] = std::exp(x[i] - m);
    s += x[i];
  }
  float inv = 1.f / s;
  for (int64_t i = 0; i < n; i++) x[i] *= inv;
}
void act_ref(Act a, float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] = act_scalar(a, x[i]);
}
void act_mul_ref(Act a, float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; i++) g[i] = act_scalar(a, g[i]) * u[i];
}

void ssm_step_ref(const float* A, const float* dt, const float* x, const float* B, const float* C, float* S, float* y,
                  int64_t channels, int64_t N) {
  for (int64_t c = 0; c < channels; c++) {
    const float d = dt[c], dx = d * x[c];
    float acc = 0.f;
    for (int64_t n = 0; n < N; n++) {
      float& s = S[c * N + n];
      s = std::exp(d * A[c * N + n]) * s + dx * B[n];
      acc += s * C[n];
    }
    y[c] = acc;
  }
}

const KernelTable kTable = {
    Isa::Generic,
    {matmul_ref<float>, matmul_ref<f16_t>, matmul_ref<bf16_t>},
    {matmul_panel_ref<float>, matmul_panel_ref<f16_t>, matmul_panel_ref<bf16_t>},
    EF_QMATMUL_TABLE,
    EF_QPANEL_TABLE,
    EF_QPANEL_Q8_ONE_LEVEL,
    EF_QPANEL_Q8_ROWS,
    {to_f32_ref<float>, to_f32_ref<f16_t>, to_f32_ref<bf16_t>, EF_DEQUANT_ENTRIES},
    quantize_row_q8,
    quantize_rows_q8,
    dot_ref, axpy_ref, wsum_ref, scale_ref, add_ref, mul_ref, rmsnorm_ref, layernorm_ref, softmax_ref, act_ref, act_mul_ref,
    ssm_step_ref,
    f32_to_f16_ref,
    f32_to_bf16_ref,
    nullptr,    0,   // bf16x_tiles_from: rows always
    {},  // qmatmul_panel_bf16x: none
    0,   // qbf16x_from
};

}  // namespace

const KernelTable* kernels_generic() { return &kTable; }

}  // namespace cpu
}  // namespace ef
