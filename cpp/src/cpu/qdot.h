// Quantized weight blocks times 8-bit activation blocks, written once. The including kernel file supplies
// the primitives (scalar in ref/, SIMD in kernels_simd.cc):
//   void dot32_halves(const int8_t* w, const int8_t* x, int32_t& lo, int32_t& hi)  sums over 0..15 and 16..31
//   void unpack_q4(const uint8_t* qs16, int8_t* v32)             q4_0: low nibbles, then high nibbles
//   void unpack_q4_pair(const uint8_t* qs32, int8_t* lo, int8_t* hi)   q4_k: two sub-blocks share 32 bytes
//   void unpack_q6(const uint8_t* ql32, const uint8_t* qh32, int sl, int sh, int8_t* v32)   q6_k, 0..63
//   qacc, qacc_zero(), float qacc_sum(qacc)                      a float accumulator (a vector in SIMD copies)
//   qacc dot32_acc(qacc, const int8_t* w, const int8_t* x, float scale)      acc += scale * sum(w * x)
//   qacc dot_q4_acc(qacc, const uint8_t* qs16, const int8_t* x, float scale) acc += scale * sum(nibbles * x)
// Integer sums are exact; the float steps are the same in every copy, so copies agree to the last bit.
#pragma once
#include <cstring>

#include "edgeformer/quant.h"

namespace ef {
namespace {

inline float dot_q8_0(const uint8_t* w, const BlockQ8* x) {  // both activation levels
  int32_t lo, hi, lo2, hi2;
  dot32_halves((const int8_t*)(w + 2), x->q, lo, hi);
  dot32_halves((const int8_t*)(w + 2), x->r, lo2, hi2);
  const float d = f16_load(w);
  return (float)(lo + hi) * (d * x->d) + (float)(lo2 + hi2) * (d * x->d2);
}

inline float dot_q4_0(const uint8_t* w, const BlockQ8* x) {
  alignas(32) int8_t v[32];
  unpack_q4(w + 2, v);
  int32_t lo, hi;
  dot32_halves(v, x->q, lo, hi);
  return (float)(lo + hi - 8 * (x->sum[0] + x->sum[1])) * (f16_load(w) * x->d);
}

inline float dot_q4_k(const uint8_t* w, const BlockQ8* x) {  // x: 8 activation blocks
  const float d = f16_load(w), dmin = f16_load(w + 2);
  float acc = 0;
  alignas(32) int8_t v[2][32];
  for (int j = 0; j < 8; j += 2) {
    unpack_q4_pair(w + 16 + 16 * j, v[0], v[1]);
    for (int h = 0; h < 2; h++) {
      int sc, m;
      q4k_scale_min(j + h, w + 4, sc, m);
      int32_t lo, hi;
      dot32_halves(v[h], x[j + h].q, lo, hi);
      const BlockQ8& xb = x[j + h];
      acc += (d * (float)sc) * xb.d * (float)(lo + hi) - (dmin * (float)m) * xb.d * (float)(xb.sum[0] + xb.sum[1]);
    }
  }
  return acc;
}

inline float dot_q6_k(const uint8_t* w, const BlockQ8* x) {  // x: 8 activation blocks
  const float d = f16_load(w + 208);
  const int8_t* sc = (const int8_t*)(w + 192);
  float acc = 0;
  alignas(32) int8_t v[32];
  for (int k = 0; k < 8; k++) {
    const int a = k / 4, r0 = 32 * (k % 4);
    unpack_q6(w + a * 64 + r0 % 64, w + 128 + a * 32, 4 * (r0 / 64), 2 * (k % 4), v);
    int32_t lo, hi;
    dot32_halves(v, x[k].q, lo, hi);
    const int32_t s = sc[2 * k] * (lo - 32 * x[k].sum[0]) + sc[2 * k + 1] * (hi - 32 * x[k].sum[1]);
    acc += d * x[k].d * (float)s;
  }
  return acc;
}

// q8_0 and q4_0 rows: the block products stay in a vector accumulator (one horizontal sum per row).
// Agrees with the scalar reference to float rounding (the order of the additions differs).
inline float row_q8_0(const uint8_t* w, const BlockQ8* x, int64_t nb) {
  qacc acc = qacc_zero();
  for (int64_t b = 0; b < nb; b++, w += 34) {
    const float d = f16_load(w);
    acc = dot32_acc(acc, (const int8_t*)(w + 2), x[b].q, d * x[b].d);
    acc = dot32_acc(acc, (const int8_t*)(w + 2), x[b].r, d * x[b].d2);
  }
  return qacc_sum(acc);
}

inline float row_q4_0(const uint8_t* w, const BlockQ8* x, int64_t nb) {
  qacc acc = qacc_zero();
  float offset = 0;  // the nibbles are stored + 8: subtract 8 * sum(x) * scale
  for (int64_t b = 0; b < nb; b++, w += 18) {
    const float scale = f16_load(w) * x[b].d;
    acc = dot_q4_acc(acc, w + 2, x[b].q, scale);
    offset += (float)(x[b].sum[0] + x[b].sum[1]) * scale;
  }
  return qacc_sum(acc) - 8.f * offset;
}

template <float (*ROW)(const uint8_t*, const BlockQ8*, int64_t), int BLK>
void qmatmul_rows(const BlockQ8* xq, int64_t ldxq, const void* wv, int64_t row_bytes, const float* bias, float* y,
                  int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const uint8_t* w = (const uint8_t*)wv;
  for (int64_t o = o0; o < o1; o++)
    for (int64_t t = 0; t < T; t++)
      y[t * ldy + o] = ROW(w + o * row_bytes, xq + t * ldxq, K / BLK) + (bias ? bias[o] : 0.f);
}

template <float (*DOT)(const uint8_t*, const BlockQ8*), int BLK, int BYTES>
void qmatmul_impl(const BlockQ8* xq, int64_t ldxq, const void* wv, int64_t row_bytes, const float* bias, float* y,
                  int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const uint8_t* w = (const uint8_t*)wv;
  const int64_t nb = K / BLK, per = BLK / 32;
  for (int64_t o = o0; o < o1; o++) {
    const uint8_t* wr = w + o * row_bytes;
    for (int64_t t = 0; t < T; t++) {
      const BlockQ8* xr = xq + t * ldxq;
      float acc = 0;
      for (int64_t b = 0; b < nb; b++) acc += DOT(wr + b * BYTES, xr + b * per);
      y[t * ldy + o] = acc + (bias ? bias[o] : 0.f);
    }
  }
}

inline void dequant_any(DType t, const void* src, float* dst, int64_t n) { dequantize_row(t, src, dst, n); }
template <DType D>
void dequant_fn(const void* src, float* dst, int64_t n) { dequantize_row(D, src, dst, n); }

#define EF_QMATMUL_TABLE                                                                              \
  {nullptr, nullptr, nullptr, qmatmul_rows<row_q8_0, 32>, qmatmul_rows<row_q4_0, 32>,                  \
   qmatmul_impl<dot_q4_k, 256, 144>, qmatmul_impl<dot_q6_k, 256, 210>}
#define EF_DEQUANT_ENTRIES dequant_fn<DType::Q8_0>, dequant_fn<DType::Q4_0>, dequant_fn<DType::Q4_K>, dequant_fn<DType::Q6_K>

}  // namespace
}  // namespace ef
