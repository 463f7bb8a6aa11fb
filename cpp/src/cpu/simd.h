// Vector wrappers for the kernel copy being compiled: exactly one of EF_ISA_AVX512 / EF_ISA_AVX2 / EF_ISA_NEON
// is defined by CMake. Kernels are written once against these names; no #ifdef inside kernel bodies.
// Everything here has internal linkage (see scalar_math.h for why).
#pragma once
#include <cstdint>
#include <cstring>

#include "cpu/scalar_math.h"

// The dot-product variants are their base ISA plus one instruction for 8-bit dot products.
#if defined(EF_ISA_AVX512BF16)
#define EF_ISA_AVX512VNNI 1
#endif
#if defined(EF_ISA_AVX512VNNI)
#define EF_ISA_AVX512 1
#endif
#if defined(EF_ISA_NEONDOT)
#define EF_ISA_NEON 1
#endif

#if defined(EF_ISA_AVX512) || defined(EF_ISA_AVX2)
#include <immintrin.h>
#elif defined(EF_ISA_NEON)
#include <arm_neon.h>
#endif

namespace ef {
namespace {

#if defined(EF_ISA_AVX512)
#if defined(EF_ISA_AVX512BF16)
#define EF_ISA_NS avx512bf16
#elif defined(EF_ISA_AVX512VNNI)
#define EF_ISA_NS avx512vnni
#else
#define EF_ISA_NS avx512
#endif
constexpr int kW = 16;
constexpr int kTileT = 4, kTileW = 4;  // matmul register tile: tokens x weight rows (16 accumulators)
using vf = __m512;
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vset1(float a) { return _mm512_set1_ps(a); }
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline vf vload(const f16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
inline void vstore_f16(uint16_t* p, vf v) {
  _mm256_storeu_si256((__m256i*)p, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline vf vload(const bf16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
// o[i].bits = f32_to_bf16(x[i]) for i < n in 16 lanes, bit for bit: round to nearest even on the bits, a NaN kept
// quiet (a prompt's rows were converted one scalar at a time: as long as the bf16 product itself at MiniLM's shapes)
inline void row_to_bf16(const float* x, bf16_t* o, int64_t n) {
  const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512i v = _mm512_loadu_si512(x + k);
    const __m512i r = _mm512_add_epi32(v, _mm512_add_epi32(half, _mm512_and_si512(_mm512_srli_epi32(v, 16), one)));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(v, abs_mask), inf);
    const __m512i q = _mm512_mask_or_epi32(r, nan, v, _mm512_set1_epi32(0x400000));  // (NaN: bits | 0x40 << 16)
    _mm256_storeu_si256((__m256i*)(o + k), _mm512_cvtepi32_epi16(_mm512_srli_epi32(q, 16)));
  }
  for (; k < n; k++) o[k].bits = f32_to_bf16(x[k]);
}
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
inline vf vfmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
inline vf vround(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline vf vabs(vf a) { return _mm512_abs_ps(a); }
inline vf vround_away(vf a) {  // half away from zero, exactly: truncate, then step out where |fraction| >= 0.5
  const vf t = _mm512_roundscale_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __mmask16 m = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(a, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const vf one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(INT32_MIN)),
                                                     _mm512_castps_si512(_mm512_set1_ps(1.f))));
  return _mm512_mask_add_ps(t, m, t, one);
}
inline void vstore_i8(int8_t* p, vf a) {  // a holds integers in [-127, 127]
  _mm_storeu_si128((__m128i*)p, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(a)));
}
inline vf vpow2i(vf n) {  // 2^n for integral n in [-126, 127]
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
inline float vsum(vf a) { return _mm512_reduce_add_ps(a); }
inline float vmaxall(vf a) { return _mm512_reduce_max_ps(a); }
#define EF_HAVE_VSUM8 1
// s[r] = vsum(a[r]) for r < 8 in one transposing reduction (about 3 instructions a sum, against 8 for vsum)
inline void vsum8(const vf* a, float* s) {
  vf p[4];
  for (int i = 0; i < 4; i++)  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] of rows 2i (a), 2i + 1 (b)
    p[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  // per 128-bit lane: the lane's partial sums of rows 0..3 (q0) and 4..7 (q1)
  const vf q0 = _mm512_add_ps(_mm512_shuffle_ps(p[0], p[1], 0x44), _mm512_shuffle_ps(p[0], p[1], 0xEE));
  const vf q1 = _mm512_add_ps(_mm512_shuffle_ps(p[2], p[3], 0x44), _mm512_shuffle_ps(p[2], p[3], 0xEE));
  // lanes: q0 L0+L2, q0 L1+L3, q1 L0+L2, q1 L1+L3; then neighbours added: lane 0 rows 0..3, lane 2 rows 4..7
  const vf r = _mm512_add_ps(_mm512_shuffle_f32x4(q0, q1, 0x44), _mm512_shuffle_f32x4(q0, q1, 0xEE));
  const vf t = _mm512_add_ps(r, _mm512_shuffle_f32x4(r, r, 0xB1));
  _mm_storeu_ps(s, _mm512_extractf32x4_ps(t, 0));
  _mm_storeu_ps(s + 4, _mm512_extractf32x4_ps(t, 2));
}

#elif defined(EF_ISA_AVX2)
#define EF_ISA_NS avx2
constexpr int kW = 8;
constexpr int kTileT = 4, kTileW = 3;  // 12 accumulators, 3 weight rows and x: all 16 ymm registers
using vf = __m256;
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vset1(float a) { return _mm256_set1_ps(a); }
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline vf vload(const f16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
inline void vstore_f16(uint16_t* p, vf v) {
  _mm_storeu_si128((__m128i*)p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
inline vf vload(const bf16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}
inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
inline vf vfmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
inline vf vround(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline vf vabs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
inline vf vround_away(vf a) {
  const vf t = _mm256_round_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const vf m = _mm256_cmp_ps(vabs(_mm256_sub_ps(a, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const vf one = _mm256_or_ps(_mm256_and_ps(a, _mm256_set1_ps(-0.f)), _mm256_set1_ps(1.f));
  return _mm256_add_ps(t, _mm256_and_ps(m, one));
}
inline void vstore_i8(int8_t* p, vf a) {
  const __m256i i = _mm256_cvtps_epi32(a);
  const __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  _mm_storel_epi64((__m128i*)p, _mm_packs_epi16(s16, s16));
}
inline vf vpow2i(vf n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
inline float vsum(vf a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float vmaxall(vf a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#elif defined(EF_ISA_NEON)
#if defined(EF_ISA_NEONDOT)
#define EF_ISA_NS neondot
#else
#define EF_ISA_NS neon
#endif
constexpr int kW = 4;
constexpr int kTileT = 2, kTileW = 4;
using vf = float32x4_t;
inline vf vzero() { return vdupq_n_f32(0.f); }
inline vf vset1(float a) { return vdupq_n_f32(a); }
inline vf vload(const float* p) { return vld1q_f32(p); }
inline vf vload(const f16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t*)p))); }
inline void vstore_f16(uint16_t* p, vf v) { vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32(v))); }
inline vf vload(const bf16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t*)p), 16)); }
inline void vstore(float* p, vf v) { vst1q_f32(p, v); }
inline vf vadd(vf a, vf b) { return vaddq_f32(a, b); }
inline vf vsub(vf a, vf b) { return vsubq_f32(a, b); }
inline vf vmul(vf a, vf b) { return vmulq_f32(a, b); }
inline vf vdiv(vf a, vf b) { return vdivq_f32(a, b); }
inline vf vfmadd(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
inline vf vmax(vf a, vf b) { return vmaxq_f32(a, b); }
inline vf vmin(vf a, vf b) { return vminq_f32(a, b); }
inline vf vround(vf a) { return vrndnq_f32(a); }
inline vf vabs(vf a) { return vabsq_f32(a); }
inline vf vround_away(vf a) { return vrndaq_f32(a); }
inline void vstore_i8(int8_t* p, vf a) {
  const int16x4_t s16 = vmovn_s32(vcvtq_s32_f32(a));
  const int8x8_t s8 = vmovn_s16(vcombine_s16(s16, s16));
  std::memcpy(p, &s8, 4);
}
inline vf vpow2i(vf n) {
  return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23));
}
inline float vsum(vf a) { return vaddvq_f32(a); }
inline float vmaxall(vf a) { return vmaxvq_f32(a); }

#else
#error "simd.h: compile with one of EF_ISA_AVX512, EF_ISA_AVX2, EF_ISA_NEON"
#endif

// -- 8-bit integer primitives for the quantized dot products (cpu/qdot.h) ---------------------------------
#if defined(EF_ISA_AVX512) || defined(EF_ISA_AVX2)
// 8 int32 lanes, lane k = sum of u[4k..4k+3] * s[4k..4k+3] (u unsigned bytes, s signed; no overflow here)
inline __m256i dot_u8s8(__m256i u, __m256i s) {
#if defined(EF_ISA_AVX512VNNI)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}
inline __m256i ld32(const void* p) { return _mm256_loadu_si256((const __m256i*)p); }
inline void st32(void* p, __m256i v) { _mm256_storeu_si256((__m256i*)p, v); }
// Codebook lookups (the i-quant panels) as scalar loads put together in registers: 1.16-1.35x faster than
// VPGATHERDD / VPGATHERDQ on Zen 4 (1.1B shapes, one thread: iq3_xxs 10.4 -> 12.1 GMAC/s, iq2_xxs 13.6 -> 18.4)
inline __m128i load4d(const uint32_t* t, const uint32_t* ix) {  // t[ix[0..3]]
  __m128i v = _mm_cvtsi32_si128((int)t[ix[0]]);
  v = _mm_insert_epi32(v, (int)t[ix[1]], 1);
  v = _mm_insert_epi32(v, (int)t[ix[2]], 2);
  return _mm_insert_epi32(v, (int)t[ix[3]], 3);
}
inline __m128i load2q(const uint64_t* t, const uint32_t* ix) {  // t[ix[0..1]]
  return _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i*)&t[ix[0]]), _mm_loadl_epi64((const __m128i*)&t[ix[1]]));
}
inline __m256i join2(__m128i a, __m128i b) { return _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1); }
inline void dot32_halves(const int8_t* w, const int8_t* x, int32_t& lo, int32_t& hi) {
  // maddubs multiplies unsigned by signed bytes: |w| times x carrying w's sign (exact for every int8 pair)
  const __m256i wv = ld32(w), xv = ld32(x);
  const __m256i p32 = dot_u8s8(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));  // lanes 0-3: 0-15, 4-7: 16-31
  __m128i l = _mm256_castsi256_si128(p32), h = _mm256_extracti128_si256(p32, 1);
  l = _mm_add_epi32(l, _mm_shuffle_epi32(l, 0x4e));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
  l = _mm_add_epi32(l, _mm_shuffle_epi32(l, 0xb1));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
  lo = _mm_cvtsi128_si32(l);
  hi = _mm_cvtsi128_si32(h);
}
inline void unpack_q4(const uint8_t* qs, int8_t* v) {
  const __m128i t = _mm_loadu_si128((const __m128i*)qs);
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
  st32(v, _mm256_and_si256(both, _mm256_set1_epi8(0x0F)));
}
inline void unpack_q4_pair(const uint8_t* qs, int8_t* lo, int8_t* hi) {
  const __m256i t = ld32(qs), m = _mm256_set1_epi8(0x0F);
  st32(lo, _mm256_and_si256(t, m));
  st32(hi, _mm256_and_si256(_mm256_srli_epi16(t, 4), m));
}
inline void unpack_q6(const uint8_t* ql, const uint8_t* qh, int sl, int sh, int8_t* v) {
  const __m256i l = _mm256_and_si256(_mm256_srl_epi16(ld32(ql), _mm_cvtsi32_si128(sl)), _mm256_set1_epi8(0x0F));
  const __m256i h = _mm256_and_si256(_mm256_srl_epi16(ld32(qh), _mm_cvtsi32_si128(sh)), _mm256_set1_epi8(0x03));
  st32(v, _mm256_or_si256(l, _mm256_slli_epi16(h, 4)));
}
using qacc = __m256;
inline qacc qacc_zero() { return _mm256_setzero_ps(); }
inline float qacc_sum(qacc a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline qacc dot32_acc(qacc acc, const int8_t* w, const int8_t* x, float scale) {
  const __m256i wv = ld32(w), xv = ld32(x);
  const __m256i p = dot_u8s8(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale), acc);
}
inline qacc dot_q4_acc(qacc acc, const uint8_t* qs, const int8_t* x, float scale) {
  const __m128i t = _mm_loadu_si128((const __m128i*)qs);
  const __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
  const __m256i p = dot_u8s8(u, ld32(x));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale), acc);
}
#elif defined(EF_ISA_NEON)
using qacc = float32x4_t;
inline qacc qacc_zero() { return vdupq_n_f32(0.f); }
inline float qacc_sum(qacc a) { return vaddvq_f32(a); }
// 4 int32 lanes of sums of 4 products of signed bytes
inline int32x4_t neon_dot16(int8x16_t a, int8x16_t b) {
#if defined(EF_ISA_NEONDOT)
  return vdotq_s32(vdupq_n_s32(0), a, b);
#else
  return vaddq_s32(vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b))),
                   vpaddlq_s16(vmull_s8(vget_high_s8(a), vget_high_s8(b))));
#endif
}
inline qacc dot32_acc(qacc acc, const int8_t* w, const int8_t* x, float scale) {
  const int32x4_t p = vaddq_s32(neon_dot16(vld1q_s8(w), vld1q_s8(x)), neon_dot16(vld1q_s8(w + 16), vld1q_s8(x + 16)));
  return vfmaq_n_f32(acc, vcvtq_f32_s32(p), scale);
}
inline qacc dot_q4_acc(qacc acc, const uint8_t* qs, const int8_t* x, float scale) {
  const uint8x16_t t = vld1q_u8(qs);
  const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(t, vdupq_n_u8(0x0F))), hi = vreinterpretq_s8_u8(vshrq_n_u8(t, 4));
  const int32x4_t p = vaddq_s32(neon_dot16(lo, vld1q_s8(x)), neon_dot16(hi, vld1q_s8(x + 16)));
  return vfmaq_n_f32(acc, vcvtq_f32_s32(p), scale);
}
inline void dot32_halves(const int8_t* w, const int8_t* x, int32_t& lo, int32_t& hi) {
  lo = vaddvq_s32(neon_dot16(vld1q_s8(w), vld1q_s8(x)));
  hi = vaddvq_s32(neon_dot16(vld1q_s8(w + 16), vld1q_s8(x + 16)));
}
inline void unpack_q4(const uint8_t* qs, int8_t* v) {
  const uint8x16_t t = vld1q_u8(qs), m = vdupq_n_u8(0x0F);
  vst1q_s8(v, vreinterpretq_s8_u8(vandq_u8(t, m)));
  vst1q_s8(v + 16, vreinterpretq_s8_u8(vshrq_n_u8(t, 4)));
}
inline void unpack_q4_pair(const uint8_t* qs, int8_t* lo, int8_t* hi) {
  for (int i = 0; i < 32; i += 16) {
    const uint8x16_t t = vld1q_u8(qs + i);
    vst1q_s8(lo + i, vreinterpretq_s8_u8(vandq_u8(t, vdupq_n_u8(0x0F))));
    vst1q_s8(hi + i, vreinterpretq_s8_u8(vshrq_n_u8(t, 4)));
  }
}
inline void unpack_q6(const uint8_t* ql, const uint8_t* qh, int sl, int sh, int8_t* v) {
  const int8x16_t nl = vdupq_n_s8((int8_t)-sl), nh = vdupq_n_s8((int8_t)-sh);
  for (int i = 0; i < 32; i += 16) {
    const uint8x16_t l = vandq_u8(vshlq_u8(vld1q_u8(ql + i), nl), vdupq_n_u8(0x0F));
    const uint8x16_t h = vandq_u8(vshlq_u8(vld1q_u8(qh + i), nh), vdupq_n_u8(0x03));
    vst1q_s8(v + i, vreinterpretq_s8_u8(vorrq_u8(l, vshlq_n_u8(h, 4))));
  }
}
#endif

// -- panel primitives (cpu/qpanel.h): 16 lanes = the 16 rows of a weight panel -----------------------------
#if defined(EF_ISA_AVX512)
#define EF_HAVE_PANELS 1
constexpr int kPanelRT = 6;  // tokens per tile: 3 x 6 accumulators + operands fit the 32 zmm registers
// row-scaled q8_0: 8 tokens x 3 panels (24 accumulators, 3 weight vectors, a broadcast); decode: 4 panels
constexpr int kRowTileT = 8, kRowTileP = 3, kRowDecodeP = 4;
using pi = __m512i;
using pf = __m512;
using pw = __m512i;
inline pi pi_set1(int32_t v) { return _mm512_set1_epi32(v); }
inline pi pi_add(pi a, pi b) { return _mm512_add_epi32(a, b); }
// ternary decode steps keep one accumulator per 2-bit field (qpanel.h): 4 x kRowDecodeP of the 32 registers
#define EF_TERNARY_FIELD_ACCS 1
inline pi pi_srai(pi a, int n) { return _mm512_srai_epi32(a, (unsigned)n); }
inline pf pf_zero() { return _mm512_setzero_ps(); }
inline pf pf_set1(float v) { return _mm512_set1_ps(v); }
inline pw pw_load(const uint8_t* p) { return _mm512_loadu_si512((const void*)p); }
inline void pw_nibbles(pw v, pw& lo, pw& hi) {
  const __m512i m = _mm512_set1_epi8(0x0F);
  lo = _mm512_and_si512(v, m);
  hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
}
inline pw pw_and8(pw v, uint8_t m) { return _mm512_and_si512(v, _mm512_set1_epi8((char)m)); }
inline pw pw_or(pw a, pw b) { return _mm512_or_si512(a, b); }
inline pw pw_sll16(pw v, int n) { return _mm512_sll_epi16(v, _mm_cvtsi32_si128(n)); }
inline pw pw_srl16(pw v, int n) { return _mm512_srl_epi16(v, _mm_cvtsi32_si128(n)); }
inline pw pw_lut16(pw idx, const int8_t* table) {  // bytes 0..15 -> table[byte]
  return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_load_si128((const __m128i*)table)), idx);
}
inline pf pf_load_s8(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
}
inline __m512i bcast4(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm512_set1_epi32(v);
}
#if defined(EF_ISA_AVX512VNNI)
constexpr int32_t kS8Bias = 128;  // VPDPBUSD wants unsigned weights: int8 + 128, the excess removed by sums
inline pw pw_signed(pw v) { return _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80)); }
inline pw pw_unoffset(pw v) { return v; }  // int8 stored + 128 is already what VPDPBUSD wants
// The 4 activation bytes come as VPDPBUSD's embedded broadcast ({1to16}): compilers load them into a register
// with a separate VPBROADCASTD instead, one more instruction per product in tiles that use a broadcast once.
inline pi dpbusd_bcast(pi acc, pw u, const int8_t* x) {
#if defined(__GNUC__)
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*(const int32_t*)x));
  return acc;
#else
  return _mm512_dpbusd_epi32(acc, u, bcast4(x));
#endif
}
inline pi pi_dot_u8(pi acc, pw u, const int8_t* x) { return dpbusd_bcast(acc, u, x); }
inline pi pi_dot_s8(pi acc, pw s, const int8_t* x) { return dpbusd_bcast(acc, s, x); }
// where a tile uses each broadcast for several panels: one register the compiler can share (qpanel.h)
#define EF_HAVE_PI_DOT_S8_SHARED 1
inline pi pi_dot_s8_shared(pi acc, pw s, const int8_t* x) { return _mm512_dpbusd_epi32(acc, s, bcast4(x)); }
inline pi pi_dot_u8_shared(pi acc, pw u, const int8_t* x) { return _mm512_dpbusd_epi32(acc, u, bcast4(x)); }
#else
constexpr int32_t kS8Bias = 0;
inline pw pw_signed(pw v) { return v; }
inline pw pw_unoffset(pw v) { return _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80)); }
inline pi pi_dot_u8(pi acc, pw u, const int8_t* x) {
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, bcast4(x)), _mm512_set1_epi16(1)));
}
inline pi pi_dot_s8(pi acc, pw s, const int8_t* x) {  // |s| times x carrying s's sign: exact
  const __m512i xb = bcast4(x);
  const __m512i xs = _mm512_mask_sub_epi8(xb, _mm512_movepi8_mask(s), _mm512_setzero_si512(), xb);
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(s), xs), _mm512_set1_epi16(1)));
}
#endif
inline pf pf_load_f16(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
inline pf pf_load_u8(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p)));
}
inline pf pf_scale(pf a, float s) { return _mm512_mul_ps(a, _mm512_set1_ps(s)); }
inline pf pf_mul(pf a, pf b) { return _mm512_mul_ps(a, b); }
inline pf pf_fma(pf a, pf b, pf c) { return _mm512_fmadd_ps(a, b, c); }
inline pf pf_fma_i(pi a, pf b, pf c) { return _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), b, c); }
inline void pf_store(float* y, pf v, const float* bias, int n) {
  const __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
  if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias));
  _mm512_mask_storeu_ps(y, m, v);
}
using pix = __m512i;
inline pix pix_load_u8(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p)); }
inline pix pix_load_u16(const uint8_t* p) { return _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)); }
template <int S, int NB>
inline pix pix_hi(pix idx, pix hi) {
  const __m512i bits = _mm512_and_si512(_mm512_srli_epi32(hi, S), _mm512_set1_epi32((1 << NB) - 1));
  return _mm512_or_si512(idx, _mm512_slli_epi32(bits, 8));
}
inline __m512i join4(__m128i a, __m128i b, __m128i c, __m128i d) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(join2(a, b)), join2(c, d), 1);
}
inline pw pw_gather4(const uint32_t* t, pix i) {
  alignas(64) uint32_t ix[16];
  _mm512_store_si512(ix, i);
  return join4(load4d(t, ix), load4d(t, ix + 4), load4d(t, ix + 8), load4d(t, ix + 12));
}
inline void pw_gather8(const uint64_t* t, pix i, pw& c0, pw& c1) {
  alignas(64) uint32_t ix[16];
  _mm512_store_si512(ix, i);
  const __m512i a = join4(load2q(t, ix), load2q(t, ix + 2), load2q(t, ix + 4), load2q(t, ix + 6));  // rows 0..7
  const __m512i b = join4(load2q(t, ix + 8), load2q(t, ix + 10), load2q(t, ix + 12), load2q(t, ix + 14));
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  c0 = _mm512_permutex2var_epi32(a, even, b);
  c1 = _mm512_permutex2var_epi32(a, _mm512_add_epi32(even, _mm512_set1_epi32(1)), b);
}
inline void pw_store(uint8_t* p, pw v) { _mm512_storeu_si512((void*)p, v); }
inline pf pf_load(const float* p) { return _mm512_loadu_ps(p); }
inline pw pw_negate(pw v, const uint8_t* mask8) {
  uint64_t m;
  std::memcpy(&m, mask8, 8);
  return _mm512_mask_sub_epi8(v, (__mmask64)m, _mm512_setzero_si512(), v);
}
#if defined(EF_ISA_AVX512BF16)
// This copy also requires AVX512-VBMI (cpu_info.cc; every CPU with AVX-512 BF16 but Cooper Lake has it): the
// 4-byte codebooks (iq3) are looked up in registers, one VPERMI2B per 128 table bytes and 64 indices, instead
// of a scalar load per row and group (decode steps were bound by those loads; docs/performance.md).
#define EF_HAVE_PW_GATHER_X4 1
// 64 indices -> plane[i] (plane: N = 256 or 512 bytes, 64-byte aligned; bit 7 of each index in b7, bit 8 in b8)
template <int N>
inline __m512i lut_plane(const uint8_t* plane, __m512i idx, __mmask64 b7, __mmask64 b8) {
  const auto l128 = [idx](const uint8_t* t) {  // VPERMI2B takes the low 7 bits of each index
    return _mm512_permutex2var_epi8(_mm512_load_si512((const void*)t), idx, _mm512_load_si512((const void*)(t + 64)));
  };
  const __m512i lo = _mm512_mask_blend_epi8(b7, l128(plane), l128(plane + 128));
  if constexpr (N == 256) return lo;
  else return _mm512_mask_blend_epi8(b8, lo, _mm512_mask_blend_epi8(b7, l128(plane + 256), l128(plane + 384)));
}
// b[j] byte 16 g + r -> c[E / 4 * g] byte 4 r + j: bytes interleaved within each 128-bit lane (= group), then
// the lanes transposed
template <int E>
inline void transpose_planes(const __m512i* b, pw* c) {
  const __m512i a01 = _mm512_unpacklo_epi8(b[0], b[1]), h01 = _mm512_unpackhi_epi8(b[0], b[1]);
  const __m512i a23 = _mm512_unpacklo_epi8(b[2], b[3]), h23 = _mm512_unpackhi_epi8(b[2], b[3]);
  const __m512i v0 = _mm512_unpacklo_epi16(a01, a23), v1 = _mm512_unpackhi_epi16(a01, a23);  // lane g: rows 0..3, 4..7
  const __m512i v2 = _mm512_unpacklo_epi16(h01, h23), v3 = _mm512_unpackhi_epi16(h01, h23);  // rows 8..11, 12..15
  const __m512i t0 = _mm512_shuffle_i64x2(v0, v1, 0x44), t1 = _mm512_shuffle_i64x2(v0, v1, 0xEE);
  const __m512i t2 = _mm512_shuffle_i64x2(v2, v3, 0x44), t3 = _mm512_shuffle_i64x2(v2, v3, 0xEE);
  c[0] = _mm512_shuffle_i64x2(t0, t2, 0x88);
  c[E / 4] = _mm512_shuffle_i64x2(t0, t2, 0xDD);
  c[2 * E / 4] = _mm512_shuffle_i64x2(t1, t3, 0x88);
  c[3 * E / 4] = _mm512_shuffle_i64x2(t1, t3, 0xDD);
}
template <int E, bool Hi, int S>
inline void pw_gather_x4(const void* /*t*/, const uint8_t* planes, const uint8_t* idx64, const uint8_t* hi16, pw* c) {
  constexpr int N = Hi ? 512 : 256;
  const __m512i idx = _mm512_loadu_si512((const void*)idx64);
  const __mmask64 b7 = _mm512_movepi8_mask(idx);
  __mmask64 b8 = 0;
  if constexpr (Hi) {  // bit 16 g + r: bit S + g of hi16[r]
    constexpr uint64_t k = 0x0101010101010101ull;
    const __m512i sel = _mm512_set_epi64((long long)(k << (S + 3)), (long long)(k << (S + 3)), (long long)(k << (S + 2)),
                                         (long long)(k << (S + 2)), (long long)(k << (S + 1)), (long long)(k << (S + 1)),
                                         (long long)(k << S), (long long)(k << S));
    b8 = _mm512_test_epi8_mask(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)hi16)), sel);
  }
  for (int h = 0; h < E / 4; h++) {  // entry bytes 4 h .. 4 h + 3
    __m512i b[4];  // b[j] byte 16 g + r: byte 4 h + j of entry (g, r)
    for (int j = 0; j < 4; j++) b[j] = lut_plane<N>(planes + N * (4 * h + j), idx, b7, b8);
    transpose_planes<E>(b, c + h);
  }
}
#endif
#elif defined(EF_ISA_AVX2)
#define EF_HAVE_PANELS 1
// Each 16-lane value is two ymm registers. 4-token tiles spill a few of them and are still faster than the
// 2-token tiles that fit (single thread, 1.1B shapes: q4_0 74 -> 79-80 GMAC/s, q6_k 48 -> 59.5, int8 rows
// 61 -> 64; q4_k and q8_0 unchanged).
constexpr int kPanelRT = 4;
constexpr int kRowTileT = 4, kRowTileP = 1, kRowDecodeP = 2;
constexpr int32_t kS8Bias = 0;
struct pi { __m256i a, b; };
struct pf { __m256 a, b; };
struct pw { __m256i a, b; };
inline pi pi_set1(int32_t v) { return {_mm256_set1_epi32(v), _mm256_set1_epi32(v)}; }
inline pi pi_add(pi a, pi b) { return {_mm256_add_epi32(a.a, b.a), _mm256_add_epi32(a.b, b.b)}; }
inline pf pf_zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline pf pf_set1(float v) { return {_mm256_set1_ps(v), _mm256_set1_ps(v)}; }
inline pw pw_load(const uint8_t* p) { return {ld32(p), ld32(p + 32)}; }
inline void pw_nibbles(pw v, pw& lo, pw& hi) {
  const __m256i m = _mm256_set1_epi8(0x0F);
  lo = {_mm256_and_si256(v.a, m), _mm256_and_si256(v.b, m)};
  hi = {_mm256_and_si256(_mm256_srli_epi16(v.a, 4), m), _mm256_and_si256(_mm256_srli_epi16(v.b, 4), m)};
}
inline pw pw_signed(pw v) { return v; }
inline pw pw_unoffset(pw v) {
  const __m256i m = _mm256_set1_epi8((char)0x80);
  return {_mm256_xor_si256(v.a, m), _mm256_xor_si256(v.b, m)};
}
inline pw pw_and8(pw v, uint8_t m) {
  const __m256i mm = _mm256_set1_epi8((char)m);
  return {_mm256_and_si256(v.a, mm), _mm256_and_si256(v.b, mm)};
}
inline pw pw_or(pw a, pw b) { return {_mm256_or_si256(a.a, b.a), _mm256_or_si256(a.b, b.b)}; }
inline pw pw_sll16(pw v, int n) {
  const __m128i c = _mm_cvtsi32_si128(n);
  return {_mm256_sll_epi16(v.a, c), _mm256_sll_epi16(v.b, c)};
}
inline pw pw_srl16(pw v, int n) {
  const __m128i c = _mm_cvtsi32_si128(n);
  return {_mm256_srl_epi16(v.a, c), _mm256_srl_epi16(v.b, c)};
}
inline pw pw_lut16(pw idx, const int8_t* table) {
  const __m256i t = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i*)table));
  return {_mm256_shuffle_epi8(t, idx.a), _mm256_shuffle_epi8(t, idx.b)};
}
inline pf pf_load_s8(const uint8_t* p) {
  return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p))),
          _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8))))};
}
inline __m256i bcast4(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm256_set1_epi32(v);
}
inline pi pi_dot_u8(pi acc, pw u, const int8_t* x) {
  const __m256i xb = bcast4(x);
  return {_mm256_add_epi32(acc.a, dot_u8s8(u.a, xb)), _mm256_add_epi32(acc.b, dot_u8s8(u.b, xb))};
}
inline pi pi_dot_s8(pi acc, pw s, const int8_t* x) {
  const __m256i xb = bcast4(x);
  return {_mm256_add_epi32(acc.a, dot_u8s8(_mm256_sign_epi8(s.a, s.a), _mm256_sign_epi8(xb, s.a))),
          _mm256_add_epi32(acc.b, dot_u8s8(_mm256_sign_epi8(s.b, s.b), _mm256_sign_epi8(xb, s.b)))};
}
inline pf pf_load_f16(const uint8_t* p) {
  return {_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p + 16)))};
}
inline pf pf_load_u8(const uint8_t* p) {
  return {_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p))),
          _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8))))};
}
inline pf pf_scale(pf a, float s) {
  const __m256 v = _mm256_set1_ps(s);
  return {_mm256_mul_ps(a.a, v), _mm256_mul_ps(a.b, v)};
}
inline pf pf_mul(pf a, pf b) { return {_mm256_mul_ps(a.a, b.a), _mm256_mul_ps(a.b, b.b)}; }
inline pf pf_fma(pf a, pf b, pf c) { return {_mm256_fmadd_ps(a.a, b.a, c.a), _mm256_fmadd_ps(a.b, b.b, c.b)}; }
inline pf pf_fma_i(pi a, pf b, pf c) {
  return {_mm256_fmadd_ps(_mm256_cvtepi32_ps(a.a), b.a, c.a), _mm256_fmadd_ps(_mm256_cvtepi32_ps(a.b), b.b, c.b)};
}
inline void pf_store(float* y, pf v, const float* bias, int n) {
  alignas(32) float tmp[16];
  _mm256_store_ps(tmp, v.a);
  _mm256_store_ps(tmp + 8, v.b);
  for (int i = 0; i < n; i++) y[i] = tmp[i] + (bias ? bias[i] : 0.f);
}
struct pix { __m256i a, b; };
inline pix pix_load_u8(const uint8_t* p) {
  return {_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p)), _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8)))};
}
inline pix pix_load_u16(const uint8_t* p) {
  return {_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(p + 16)))};
}
template <int S, int NB>
inline pix pix_hi(pix idx, pix hi) {
  const __m256i m = _mm256_set1_epi32((1 << NB) - 1);
  return {_mm256_or_si256(idx.a, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hi.a, S), m), 8)),
          _mm256_or_si256(idx.b, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hi.b, S), m), 8))};
}
inline pw pw_gather4(const uint32_t* t, pix i) {
  alignas(32) uint32_t ix[16];
  _mm256_store_si256((__m256i*)ix, i.a);
  _mm256_store_si256((__m256i*)(ix + 8), i.b);
  return {join2(load4d(t, ix), load4d(t, ix + 4)), join2(load4d(t, ix + 8), load4d(t, ix + 12))};
}
// 8 rows' 8-byte entries -> their first 4 bytes (lo) and last 4 (hi), rows in order
inline void gather8_rows(const uint64_t* t, const uint32_t* ix, __m256i& lo, __m256i& hi) {
  const __m256i perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256i g0 = _mm256_permutevar8x32_epi32(join2(load2q(t, ix), load2q(t, ix + 2)), perm);
  const __m256i g1 = _mm256_permutevar8x32_epi32(join2(load2q(t, ix + 4), load2q(t, ix + 6)), perm);
  lo = _mm256_permute2x128_si256(g0, g1, 0x20);
  hi = _mm256_permute2x128_si256(g0, g1, 0x31);
}
inline void pw_gather8(const uint64_t* t, pix i, pw& c0, pw& c1) {
  alignas(32) uint32_t ix[16];
  _mm256_store_si256((__m256i*)ix, i.a);
  _mm256_store_si256((__m256i*)(ix + 8), i.b);
  gather8_rows(t, ix, c0.a, c1.a);
  gather8_rows(t, ix + 8, c0.b, c1.b);
}
inline void pw_store(uint8_t* p, pw v) {
  st32(p, v.a);
  st32(p + 32, v.b);
}
inline pf pf_load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline __m256i negate_bits(__m256i v, uint32_t m) {  // byte j negated where bit j of m is set
  const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3,
                                       3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
  const __m256i s = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)m), sel), bit), bit);
  return _mm256_sub_epi8(_mm256_xor_si256(v, s), s);
}
inline pw pw_negate(pw v, const uint8_t* mask8) {
  uint32_t m[2];
  std::memcpy(m, mask8, 8);
  return {negate_bits(v.a, m[0]), negate_bits(v.b, m[1])};
}
#elif defined(EF_ISA_NEON)
#define EF_HAVE_PANELS 1
constexpr int kPanelRT = 2;  // each 16-lane value is four q registers: 32 of them hold a 2-token tile
constexpr int kRowTileT = 2, kRowTileP = 1, kRowDecodeP = 2;
constexpr int32_t kS8Bias = 0;
struct pi { int32x4_t v[4]; };  // v[i] lane r: row 4i + r
struct pf { float32x4_t v[4]; };
struct pw { uint8x16_t v[4]; };  // v[i]: rows 4i .. 4i + 3, 4 bytes each
inline pi pi_set1(int32_t a) { return {{vdupq_n_s32(a), vdupq_n_s32(a), vdupq_n_s32(a), vdupq_n_s32(a)}}; }
inline pi pi_add(pi a, pi b) {
  for (int i = 0; i < 4; i++) a.v[i] = vaddq_s32(a.v[i], b.v[i]);
  return a;
}
inline pf pf_set1(float a) { return {{vdupq_n_f32(a), vdupq_n_f32(a), vdupq_n_f32(a), vdupq_n_f32(a)}}; }
inline pf pf_zero() { return pf_set1(0.f); }
inline pw pw_load(const uint8_t* p) { return {{vld1q_u8(p), vld1q_u8(p + 16), vld1q_u8(p + 32), vld1q_u8(p + 48)}}; }
inline void pw_nibbles(pw v, pw& lo, pw& hi) {
  for (int i = 0; i < 4; i++) {
    lo.v[i] = vandq_u8(v.v[i], vdupq_n_u8(0x0F));
    hi.v[i] = vshrq_n_u8(v.v[i], 4);
  }
}
inline pw pw_signed(pw v) { return v; }
inline pw pw_unoffset(pw v) {
  for (int i = 0; i < 4; i++) v.v[i] = veorq_u8(v.v[i], vdupq_n_u8(0x80));
  return v;
}
inline pw pw_and8(pw v, uint8_t m) {
  for (int i = 0; i < 4; i++) v.v[i] = vandq_u8(v.v[i], vdupq_n_u8(m));
  return v;
}
inline pw pw_or(pw a, pw b) {
  for (int i = 0; i < 4; i++) a.v[i] = vorrq_u8(a.v[i], b.v[i]);
  return a;
}
inline pw pw_sll16(pw v, int n) {
  for (int i = 0; i < 4; i++)
    v.v[i] = vreinterpretq_u8_u16(vshlq_u16(vreinterpretq_u16_u8(v.v[i]), vdupq_n_s16((int16_t)n)));
  return v;
}
inline pw pw_srl16(pw v, int n) {
  for (int i = 0; i < 4; i++)
    v.v[i] = vreinterpretq_u8_u16(vshlq_u16(vreinterpretq_u16_u8(v.v[i]), vdupq_n_s16((int16_t)-n)));
  return v;
}
inline pw pw_lut16(pw idx, const int8_t* table) {
  const uint8x16_t t = vld1q_u8((const uint8_t*)table);
  for (int i = 0; i < 4; i++) idx.v[i] = vqtbl1q_u8(t, idx.v[i]);
  return idx;
}
inline int8x16_t bcast4(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return vreinterpretq_s8_s32(vdupq_n_s32(v));
}
// lane r += sum of the 4 signed-byte products of lane r (weights here are below 128, or int8)
inline int32x4_t dot4_lanes(int32x4_t acc, int8x16_t w, int8x16_t x) {
#if defined(EF_ISA_NEONDOT)
  return vdotq_s32(acc, w, x);
#else
  const int16x8_t lo = vmull_s8(vget_low_s8(w), vget_low_s8(x)), hi = vmull_s8(vget_high_s8(w), vget_high_s8(x));
  return vaddq_s32(acc, vpaddlq_s16(vpaddq_s16(lo, hi)));
#endif
}
inline pi pi_dot_u8(pi acc, pw u, const int8_t* x) {
  const int8x16_t xb = bcast4(x);
  for (int i = 0; i < 4; i++) acc.v[i] = dot4_lanes(acc.v[i], vreinterpretq_s8_u8(u.v[i]), xb);
  return acc;
}
inline pi pi_dot_s8(pi acc, pw s, const int8_t* x) { return pi_dot_u8(acc, s, x); }
inline pf pf_load_f16(const uint8_t* p) {
  pf r;
  for (int i = 0; i < 4; i++) r.v[i] = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t*)p + 4 * i)));
  return r;
}
inline pf pf_load_u8(const uint8_t* p) {
  const uint8x16_t b = vld1q_u8(p);
  const uint16x8_t l = vmovl_u8(vget_low_u8(b)), h = vmovl_u8(vget_high_u8(b));
  return {{vcvtq_f32_u32(vmovl_u16(vget_low_u16(l))), vcvtq_f32_u32(vmovl_u16(vget_high_u16(l))),
           vcvtq_f32_u32(vmovl_u16(vget_low_u16(h))), vcvtq_f32_u32(vmovl_u16(vget_high_u16(h)))}};
}
inline pf pf_load_s8(const uint8_t* p) {
  const int8x16_t b = vld1q_s8((const int8_t*)p);
  const int16x8_t l = vmovl_s8(vget_low_s8(b)), h = vmovl_s8(vget_high_s8(b));
  return {{vcvtq_f32_s32(vmovl_s16(vget_low_s16(l))), vcvtq_f32_s32(vmovl_s16(vget_high_s16(l))),
           vcvtq_f32_s32(vmovl_s16(vget_low_s16(h))), vcvtq_f32_s32(vmovl_s16(vget_high_s16(h)))}};
}
inline pf pf_scale(pf a, float s) {
  for (int i = 0; i < 4; i++) a.v[i] = vmulq_n_f32(a.v[i], s);
  return a;
}
inline pf pf_mul(pf a, pf b) {
  for (int i = 0; i < 4; i++) a.v[i] = vmulq_f32(a.v[i], b.v[i]);
  return a;
}
inline pf pf_fma(pf a, pf b, pf c) {
  for (int i = 0; i < 4; i++) c.v[i] = vfmaq_f32(c.v[i], a.v[i], b.v[i]);
  return c;
}
inline pf pf_fma_i(pi a, pf b, pf c) {
  for (int i = 0; i < 4; i++) c.v[i] = vfmaq_f32(c.v[i], vcvtq_f32_s32(a.v[i]), b.v[i]);
  return c;
}
inline void pf_store(float* y, pf v, const float* bias, int n) {
  float tmp[16];
  for (int i = 0; i < 4; i++) vst1q_f32(tmp + 4 * i, v.v[i]);
  for (int i = 0; i < n; i++) y[i] = tmp[i] + (bias ? bias[i] : 0.f);
}
struct pix { uint32x4_t v[4]; };
inline pix pix_load_u8(const uint8_t* p) {
  const uint8x16_t b = vld1q_u8(p);
  const uint16x8_t l = vmovl_u8(vget_low_u8(b)), h = vmovl_u8(vget_high_u8(b));
  return {{vmovl_u16(vget_low_u16(l)), vmovl_u16(vget_high_u16(l)), vmovl_u16(vget_low_u16(h)), vmovl_u16(vget_high_u16(h))}};
}
inline pix pix_load_u16(const uint8_t* p) {
  const uint16x8_t l = vld1q_u16((const uint16_t*)p), h = vld1q_u16((const uint16_t*)p + 8);
  return {{vmovl_u16(vget_low_u16(l)), vmovl_u16(vget_high_u16(l)), vmovl_u16(vget_low_u16(h)), vmovl_u16(vget_high_u16(h))}};
}
template <int S, int NB>
inline pix pix_hi(pix idx, pix hi) {
  for (int i = 0; i < 4; i++) {
    uint32x4_t v = hi.v[i];
    if constexpr (S > 0) v = vshrq_n_u32(v, S);
    idx.v[i] = vorrq_u32(idx.v[i], vshlq_n_u32(vandq_u32(v, vdupq_n_u32((1u << NB) - 1)), 8));
  }
  return idx;
}
// no gather instruction: the 16 words through memory
inline pw pw_gather4(const uint32_t* t, pix i) {
  uint32_t idx[16], w[16];
  for (int k = 0; k < 4; k++) vst1q_u32(idx + 4 * k, i.v[k]);
  for (int r = 0; r < 16; r++) w[r] = t[idx[r]];
  return pw_load((const uint8_t*)w);
}
inline void pw_gather8(const uint64_t* t, pix i, pw& c0, pw& c1) {
  uint32_t idx[16], w0[16], w1[16];
  for (int k = 0; k < 4; k++) vst1q_u32(idx + 4 * k, i.v[k]);
  for (int r = 0; r < 16; r++) {
    const uint64_t e = t[idx[r]];
    w0[r] = (uint32_t)e;
    w1[r] = (uint32_t)(e >> 32);
  }
  c0 = pw_load((const uint8_t*)w0);
  c1 = pw_load((const uint8_t*)w1);
}
inline void pw_store(uint8_t* p, pw v) {
  for (int i = 0; i < 4; i++) vst1q_u8(p + 16 * i, v.v[i]);
}
inline pf pf_load(const float* p) { return {{vld1q_f32(p), vld1q_f32(p + 4), vld1q_f32(p + 8), vld1q_f32(p + 12)}}; }
inline pw pw_negate(pw v, const uint8_t* mask8) {
  static const uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bit = vld1q_u8(kBit);
  for (int i = 0; i < 4; i++) {  // bytes 16 i .. 16 i + 15: mask bytes 2 i, 2 i + 1
    const uint8x16_t s = vtstq_u8(vcombine_u8(vdup_n_u8(mask8[2 * i]), vdup_n_u8(mask8[2 * i + 1])), bit);
    v.v[i] = vbslq_u8(s, vreinterpretq_u8_s8(vnegq_s8(vreinterpretq_s8_u8(v.v[i]))), v.v[i]);
  }
  return v;
}
#endif

// Loads the first n < kW elements, the rest zero.
template <typename T>
inline vf vload_partial(const T* p, int64_t n) {
  T tmp[kW];
  std::memset((void*)tmp, 0, sizeof(tmp));
  std::memcpy((void*)tmp, (const void*)p, (size_t)n * sizeof(T));
  return vload(tmp);
}
inline void vstore_partial(float* p, vf v, int64_t n) {
  float tmp[kW];
  vstore(tmp, v);
  std::memcpy(p, tmp, (size_t)n * sizeof(float));
}

// exp(x) for x in float range: Cody-Waite range reduction, degree-6 polynomial (Cephes), ~2 ulp.
inline vf vexp(vf x) {
  x = vmin(vmax(x, vset1(-87.3f)), vset1(88.3f));
  vf fx = vround(vmul(x, vset1(1.44269504088896341f)));
  vf r = vsub(x, vmul(fx, vset1(0.693359375f)));
  r = vsub(r, vmul(fx, vset1(-2.12194440e-4f)));
  vf y = vset1(1.9875691500e-4f);
  y = vfmadd(y, r, vset1(1.3981999507e-3f));
  y = vfmadd(y, r, vset1(8.3334519073e-3f));
  y = vfmadd(y, r, vset1(4.1665795894e-2f));
  y = vfmadd(y, r, vset1(1.6666665459e-1f));
  y = vfmadd(y, r, vset1(5.0000001201e-1f));
  y = vfmadd(vmul(y, r), r, vadd(r, vset1(1.f)));
  return vmul(y, vpow2i(fx));
}

}  // namespace
}  // namespace ef
