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

#include "edgeformer/iquant.h"
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

// The blocks that have no unpack primitive of their own (q4_1, q5_0, q5_1, q5_k, q3_k, q2_k) are unpacked
// with plain loops into 32 int8 values, then take the same exact integer sums.
// Element i of a 32-block of q4_1 / q5_0 / q5_1 (nibble i % 16, fifth bit i of the uint32 before the nibbles).
inline void unpack_q32(const uint8_t* qs, const uint8_t* qh, int8_t* v) {
  uint32_t h = 0;
  if (qh) std::memcpy(&h, qh, 4);  // little-endian, as gguf-py reads it
  for (int i = 0; i < 32; i++) v[i] = (int8_t)(((qs[i % 16] >> (4 * (i / 16))) & 0x0F) | (int)((h >> i) & 1) << 4);
}
// Sub-block k (32 elements) of a q3_k / q2_k super-block: the 2-bit values (+ 4 * the high bit for q3_k).
inline void unpack_q2_sub(const uint8_t* qs, const uint8_t* hmask, int k, int8_t* v) {
  for (int i = 0; i < 32; i++) {
    int q = (qs[32 * (k / 4) + i] >> (2 * (k % 4))) & 3;
    if (hmask) q |= ((hmask[i] >> k) & 1) << 2;
    v[i] = (int8_t)q;
  }
}

template <DType T>
inline float dot_q32(const uint8_t* w, const BlockQ8* x) {  // q4_1, q5_0, q5_1: one activation block
  constexpr bool kMin = T != DType::Q5_0, k5 = T != DType::Q4_1;
  constexpr int kQs = (int)(T == DType::Q4_1 ? 20 : T == DType::Q5_0 ? 22 : 24) - 16;
  alignas(32) int8_t v[32];
  unpack_q32(w + kQs, k5 ? w + kQs - 4 : nullptr, v);
  int32_t lo, hi;
  dot32_halves(v, x->q, lo, hi);
  const int32_t xs = x->sum[0] + x->sum[1];
  if (!kMin) return (float)(lo + hi - 16 * xs) * (f16_load(w) * x->d);
  return (float)(lo + hi) * (f16_load(w) * x->d) + f16_load(w + 2) * (x->d * (float)xs);
}

inline float dot_q5_k(const uint8_t* w, const BlockQ8* x) {  // x: 8 activation blocks
  const float d = f16_load(w), dmin = f16_load(w + 2);
  float acc = 0;
  alignas(32) int8_t v[32];
  for (int j = 0; j < 8; j++) {
    int sc, m;
    q4k_scale_min(j, w + 4, sc, m);
    for (int i = 0; i < 32; i++)
      v[i] = (int8_t)(((w[48 + 32 * (j / 2) + i] >> (4 * (j % 2))) & 0x0F) | ((w[16 + i] >> j) & 1) << 4);
    int32_t lo, hi;
    dot32_halves(v, x[j].q, lo, hi);
    const BlockQ8& xb = x[j];
    acc += (d * (float)sc) * xb.d * (float)(lo + hi) - (dmin * (float)m) * xb.d * (float)(xb.sum[0] + xb.sum[1]);
  }
  return acc;
}

inline float dot_q3_k(const uint8_t* w, const BlockQ8* x) {  // x: 8 activation blocks; values stored + 4
  const float d = f16_load(w + 108);
  float acc = 0;
  alignas(32) int8_t v[32];
  for (int k = 0; k < 8; k++) {
    unpack_q2_sub(w + 32, w, k, v);
    int32_t lo, hi;
    dot32_halves(v, x[k].q, lo, hi);
    const int32_t s = q3k_scale(2 * k, w) * (lo - 4 * x[k].sum[0]) + q3k_scale(2 * k + 1, w) * (hi - 4 * x[k].sum[1]);
    acc += d * x[k].d * (float)s;
  }
  return acc;
}

inline float dot_q2_k(const uint8_t* w, const BlockQ8* x) {  // x: 8 activation blocks
  const float d = f16_load(w + 80), dmin = f16_load(w + 82);
  float acc = 0;
  alignas(32) int8_t v[32];
  for (int k = 0; k < 8; k++) {
    unpack_q2_sub(w + 16, nullptr, k, v);
    int32_t lo, hi;
    dot32_halves(v, x[k].q, lo, hi);
    const uint8_t s0 = w[2 * k], s1 = w[2 * k + 1];
    const int32_t s = (s0 & 0x0F) * lo + (s1 & 0x0F) * hi;
    const int32_t m = (s0 >> 4) * x[k].sum[0] + (s1 >> 4) * x[k].sum[1];
    acc += d * x[k].d * (float)s - dmin * x[k].d * (float)m;
  }
  return acc;
}

// iq4_nl (one block of 32) / iq4_xs (8 sub-blocks of 32, x: 8 activation blocks): nibbles looked up in
// kIQ4Values, signed products
inline int32_t iq4_dot32(const uint8_t* qs, const int8_t* x) {
  alignas(32) int8_t v[32];
  unpack_q4(qs, v);
  for (int i = 0; i < 32; i++) v[i] = kIQ4Values[v[i]];
  int32_t lo, hi;
  dot32_halves(v, x, lo, hi);
  return lo + hi;
}
inline float dot_iq4_nl(const uint8_t* w, const BlockQ8* x) {
  return (float)iq4_dot32(w + 2, x->q) * (f16_load(w) * x->d);
}
inline float dot_iq4_xs(const uint8_t* w, const BlockQ8* x) {
  const float d = f16_load(w);
  float acc = 0;
  for (int ib = 0; ib < 8; ib++) acc += (d * (float)iq4xs_scale(ib, w)) * x[ib].d * (float)iq4_dot32(w + 8 + 16 * ib, x[ib].q);
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

// The i-quants (iquant.h), a block at a time: its values unpacked to int8, integer sums per scale unit. The
// fallback of the panels (EDGEFORMER_PANELS=0) and their test oracle.
template <DType T>
inline float dot_grid(const uint8_t* w, const BlockQ8* x) {  // x: 8 activation blocks
  constexpr GridTraits tr = grid_traits(T);
  GridBlock g;
  parse_grid_block(T, w, g);
  alignas(32) int8_t v[256];
  grid_values(T, g, v);
  const float d = f16_to_f32(g.d);
  float acc = 0;
  for (int ib = 0; ib < 8; ib++) {
    int32_t lo, hi;
    dot32_halves(v + 32 * ib, x[ib].q, lo, hi);
    const float xd = x[ib].d * tr.mul;
    if (tr.unit == 32) acc += (d * (float)g.sc[ib]) * xd * (float)(lo + hi);
    else acc += (d * (float)g.sc[2 * ib]) * xd * (float)lo + (d * (float)g.sc[2 * ib + 1]) * xd * (float)hi;
  }
  return acc;
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

#define EF_QMATMUL_TABLE                                                                                    \
  {nullptr, nullptr, nullptr, qmatmul_rows<row_q8_0, 32>, qmatmul_rows<row_q4_0, 32>,                        \
   qmatmul_impl<dot_q4_k, 256, 144>, qmatmul_impl<dot_q6_k, 256, 210>,                                      \
   qmatmul_impl<dot_q32<DType::Q4_1>, 32, 20>, qmatmul_impl<dot_q32<DType::Q5_0>, 32, 22>,                   \
   qmatmul_impl<dot_q32<DType::Q5_1>, 32, 24>, qmatmul_impl<dot_q5_k, 256, 176>,                             \
   qmatmul_impl<dot_q3_k, 256, 110>, qmatmul_impl<dot_q2_k, 256, 84>, qmatmul_impl<dot_iq4_nl, 32, 18>,        \
   qmatmul_impl<dot_iq4_xs, 256, 136>, qmatmul_impl<dot_grid<DType::IQ2_XXS>, 256, 66>,                      \
   qmatmul_impl<dot_grid<DType::IQ2_XS>, 256, 74>, qmatmul_impl<dot_grid<DType::IQ2_S>, 256, 82>,                \
   qmatmul_impl<dot_grid<DType::IQ3_XXS>, 256, 98>, qmatmul_impl<dot_grid<DType::IQ3_S>, 256, 110>,              \
   qmatmul_impl<dot_grid<DType::IQ1_S>, 256, 50>, qmatmul_impl<dot_grid<DType::IQ1_M>, 256, 56>}
#define EF_DEQUANT_ENTRIES                                                                                 \
  dequant_fn<DType::Q8_0>, dequant_fn<DType::Q4_0>, dequant_fn<DType::Q4_K>, dequant_fn<DType::Q6_K>,      \
      dequant_fn<DType::Q4_1>, dequant_fn<DType::Q5_0>, dequant_fn<DType::Q5_1>, dequant_fn<DType::Q5_K>, \
      dequant_fn<DType::Q3_K>, dequant_fn<DType::Q2_K>, dequant_fn<DType::IQ4_NL>, dequant_fn<DType::IQ4_XS>,  \
      dequant_fn<DType::IQ2_XXS>, dequant_fn<DType::IQ2_XS>, dequant_fn<DType::IQ2_S>,                    \
      dequant_fn<DType::IQ3_XXS>, dequant_fn<DType::IQ3_S>, dequant_fn<DType::IQ1_S>, dequant_fn<DType::IQ1_M>

}  // namespace
}  // namespace ef
