// Vector wrappers for the kernel copy being compiled: exactly one of EF_ISA_AVX512 / EF_ISA_AVX2 / EF_ISA_NEON
// is defined by CMake. Kernels are written once against these names; no #ifdef inside kernel bodies.
// Everything here has internal linkage (see scalar_math.h for why).
#pragma once
#include <cstdint>
#include <cstring>

#include "cpu/scalar_math.h"

#if defined(EF_ISA_AVX512) || defined(EF_ISA_AVX2)
#include <immintrin.h>
#elif defined(EF_ISA_NEON)
#include <arm_neon.h>
#endif

namespace ef {
namespace {

#if defined(EF_ISA_AVX512)
#define EF_ISA_NS avx512
constexpr int kW = 16;
constexpr int kTileT = 4, kTileW = 4;  // matmul register tile: tokens x weight rows (16 accumulators)
using vf = __m512;
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vset1(float a) { return _mm512_set1_ps(a); }
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline vf vload(const f16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
inline vf vload(const bf16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
inline vf vfmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
inline vf vround(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline vf vpow2i(vf n) {  // 2^n for integral n in [-126, 127]
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
inline float vsum(vf a) { return _mm512_reduce_add_ps(a); }
inline float vmaxall(vf a) { return _mm512_reduce_max_ps(a); }

#elif defined(EF_ISA_AVX2)
#define EF_ISA_NS avx2
constexpr int kW = 8;
constexpr int kTileT = 2, kTileW = 4;  // 8 accumulators of 16 ymm registers
using vf = __m256;
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vset1(float a) { return _mm256_set1_ps(a); }
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline vf vload(const f16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
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
#define EF_ISA_NS neon
constexpr int kW = 4;
constexpr int kTileT = 2, kTileW = 4;
using vf = float32x4_t;
inline vf vzero() { return vdupq_n_f32(0.f); }
inline vf vset1(float a) { return vdupq_n_f32(a); }
inline vf vload(const float* p) { return vld1q_f32(p); }
inline vf vload(const f16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t*)p))); }
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
inline vf vpow2i(vf n) {
  return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23));
}
inline float vsum(vf a) { return vaddvq_f32(a); }
inline float vmaxall(vf a) { return vmaxvq_f32(a); }

#else
#error "simd.h: compile with one of EF_ISA_AVX512, EF_ISA_AVX2, EF_ISA_NEON"
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
