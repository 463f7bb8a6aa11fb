// SIMD kernels, written once against simd.h and compiled once per ISA (cmake/EfIsa.cmake).
// Each kernel matches its scalar twin in ref/kernels_ref.cc up to float summation order.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/kernel_tables.h"
#include "cpu/simd.h"
// after simd.h: qdot.h is written against its integer primitives
#include "cpu/qdot.h"
#if defined(EF_HAVE_PANELS)
#include "cpu/qpanel.h"
#else
#define EF_QPANEL_TABLE {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr}
#define EF_QPANEL_Q8_ONE_LEVEL nullptr
#define EF_QPANEL_Q8_ROWS nullptr, nullptr
#endif

namespace ef {
namespace cpu {
namespace {

// One register tile of y = x W^T: RT tokens x RW weight rows, K reduced in vectors.
// x: [RT, K] (row stride ldx)  w: [RW, K] (row stride ldw)  ->  y: [RT, RW] (row stride ldy)
template <typename X, typename W, int RT, int RW>
inline void mm_tile(const X* x, int64_t ldx, const W* w, int64_t ldw, const float* bias, float* y, int64_t ldy,
                    int64_t K) {
  vf acc[RT][RW];
  for (int t = 0; t < RT; t++)
    for (int r = 0; r < RW; r++) acc[t][r] = vzero();
  int64_t k = 0;
  for (; k + kW <= K; k += kW) {
    vf wv[RW];
    for (int r = 0; r < RW; r++) wv[r] = vload(w + r * ldw + k);
    for (int t = 0; t < RT; t++) {
      vf xv = vload(x + t * ldx + k);
      for (int r = 0; r < RW; r++) acc[t][r] = vfmadd(xv, wv[r], acc[t][r]);
    }
  }
  if (k < K) {
    int64_t n = K - k;
    vf wv[RW];
    for (int r = 0; r < RW; r++) wv[r] = vload_partial(w + r * ldw + k, n);
    for (int t = 0; t < RT; t++) {
      vf xv = vload_partial(x + t * ldx + k, n);
      for (int r = 0; r < RW; r++) acc[t][r] = vfmadd(xv, wv[r], acc[t][r]);
    }
  }
#if defined(EF_HAVE_VSUM8)
  if constexpr (RW == 8) {
    for (int t = 0; t < RT; t++) {
      float s[8];
      vsum8(acc[t], s);
      for (int r = 0; r < RW; r++) y[t * ldy + r] = s[r] + (bias ? bias[r] : 0.f);
    }
    return;
  }
#endif
  for (int t = 0; t < RT; t++)
    for (int r = 0; r < RW; r++) y[t * ldy + r] = vsum(acc[t][r]) + (bias ? bias[r] : 0.f);
}

// Tokens [t0, t1) against weight rows [o0, o1): kTileT x kTileW tiles, then the ragged edges.
template <typename X, typename W>
void mm_block(const X* x, int64_t ldx, const W* w, int64_t ldw, const float* bias, float* y, int64_t ldy, int64_t t0,
              int64_t t1, int64_t o0, int64_t o1, int64_t K) {
  int64_t o = o0;
  for (; o + kTileW <= o1; o += kTileW) {
    const float* b = bias ? bias + o : nullptr;
    int64_t t = t0;
    for (; t + kTileT <= t1; t += kTileT)
      mm_tile<X, W, kTileT, kTileW>(x + t * ldx, ldx, w + o * ldw, ldw, b, y + t * ldy + o, ldy, K);
    for (; t < t1; t++) mm_tile<X, W, 1, kTileW>(x + t * ldx, ldx, w + o * ldw, ldw, b, y + t * ldy + o, ldy, K);
  }
  for (; o < o1; o++) {
    const float* b = bias ? bias + o : nullptr;
    int64_t t = t0;
    for (; t + kTileT <= t1; t += kTileT)
      mm_tile<X, W, kTileT, 1>(x + t * ldx, ldx, w + o * ldw, ldw, b, y + t * ldy + o, ldy, K);
    for (; t < t1; t++) mm_tile<X, W, 1, 1>(x + t * ldx, ldx, w + o * ldw, ldw, b, y + t * ldy + o, ldy, K);
  }
}

// Decode: 8 weight rows in flight per step (more independent streams, one x load for all)
template <typename X, typename W>
void mm_row(const X* x, const W* w, int64_t ldw, const float* bias, float* y, int64_t o0, int64_t o1, int64_t K) {
  int64_t o = o0;
  for (; o + 8 <= o1; o += 8) mm_tile<X, W, 1, 8>(x, 0, w + o * ldw, ldw, bias ? bias + o : nullptr, y + o, 0, K);
  for (; o < o1; o++) mm_tile<X, W, 1, 1>(x, 0, w + o * ldw, ldw, bias ? bias + o : nullptr, y + o, 0, K);
}

// Tokens in chunks whose rows stay in L2 while every weight tile of the range streams past them.
constexpr int64_t kChunk = 32;

template <typename W>
void matmul_simd(const float* x, int64_t ldx, const void* wv, int64_t ldw, const float* bias, float* y, int64_t ldy,
                 int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const W* w = (const W*)wv;
  if (T == 1) return mm_row(x, w, ldw, bias, y, o0, o1, K);
  for (int64_t c0 = 0; c0 < T; c0 += kChunk)
    mm_block(x, ldx, w, ldw, bias, y, ldy, c0, T < c0 + kChunk ? T : c0 + kChunk, o0, o1, K);
}

// f32_to_bf16 in vectors where the ISA has them (bit for bit)
void f32_to_bf16_simd(const float* src, uint16_t* dst, int64_t n) {
#if defined(EF_ISA_AVX512)
  row_to_bf16(src, (bf16_t*)dst, n);
#else
  for (int64_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
#endif
}

// Rows [t0, t1) of x rounded to bf16 (x_for<bf16_t>) into this thread's buffer, row stride K.
const bf16_t* rows_to_bf16(const float* x, int64_t ldx, int64_t t0, int64_t t1, int64_t K) {
  thread_local std::vector<bf16_t> buf;
  const size_t need = (size_t)((t1 - t0) * K);
  if (buf.size() < need) buf.resize(need);
  for (int64_t t = t0; t < t1; t++) f32_to_bf16_simd(x + t * ldx, (uint16_t*)(buf.data() + (t - t0) * K), K);
  return buf.data();
}

template <>
void matmul_simd<bf16_t>(const float* x, int64_t ldx, const void* wv, int64_t ldw, const float* bias, float* y,
                         int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const bf16_t* w = (const bf16_t*)wv;
  for (int64_t c0 = 0; c0 < T; c0 += kChunk) {
    const int64_t c1 = T < c0 + kChunk ? T : c0 + kChunk;
    const bf16_t* xb = rows_to_bf16(x, ldx, c0, c1, K);
    if (T == 1) mm_row(xb, w, ldw, bias, y, o0, o1, K);
    else mm_block(xb, K, w, ldw, bias, y + c0 * ldy, ldy, 0, c1 - c0, o0, o1, K);
  }
}

#if defined(EF_ISA_AVX512) || defined(EF_ISA_AVX2) || defined(EF_ISA_NEON)
// Float panels (quant.h): 16 rows of one k (f32, f16) or of a pair of k (bf16) side by side. A step of a
// tile broadcasts one token's activation (or pair) and advances 16 outputs per accumulator row, with no
// horizontal sums: per product, a tile reads a sixteenth of the weights and activations a row tile does.
// FPanel<W>: the step for weights of type W (kStep: k per vector; V: the weight vector; kLanes vectors per
// 16 rows).
template <typename W>
struct FPanel {  // f32 and f16: exact products, fused multiply-adds
  using X = float;
  using V = vf;
  static constexpr int64_t kStep = 1;
  static constexpr int kLanes = kPanel / kW;
  static const X* rows(const float* x, int64_t ldx, int64_t t0, int64_t, int64_t, int64_t& ld) {
    ld = ldx;
    return x + t0 * ldx;
  }
  static V wload(const W* p) { return vload(p); }
  static V bcast(const X* x) { return vset1(*x); }
  static vf madd(vf acc, V x, V w) { return vfmadd(x, w, acc); }
};
#if defined(EF_ISA_AVX512BF16)
template <>
struct FPanel<bf16_t> {  // bf16: VDPBF16PS on activations rounded to bf16 (x_for), exact products
  using X = bf16_t;
  using V = __m512bh;
  static constexpr int64_t kStep = 2;
  static constexpr int kLanes = 1;
  static const X* rows(const float* x, int64_t ldx, int64_t t0, int64_t t1, int64_t K, int64_t& ld) {
    ld = K;
    return rows_to_bf16(x, ldx, t0, t1, K);
  }
  static V wload(const bf16_t* p) { return (V)_mm512_loadu_si512(p); }
  static V bcast(const X* x) {
    int32_t pair;
    std::memcpy(&pair, x, 4);
    return (V)_mm512_set1_epi32(pair);
  }
  static vf madd(vf acc, V x, V w) { return _mm512_dpbf16_ps(acc, x, w); }
};
#endif

// RT tokens x RP panels; n_last: rows in use of the last panel.
template <typename W, int RT, int RP>
inline void fpanel_tile(const typename FPanel<W>::X* x, int64_t ldx, const W* p, int64_t pstride, const float* bias,
                        float* y, int64_t ldy, int n_last, int64_t K) {
  using F = FPanel<W>;
  constexpr int L = F::kLanes, NV = RP * L;  // vectors across the tile's rows
  vf acc[RT][NV];
  // every loop over acc fully unrolled (an index left at run time keeps acc in memory)
#pragma GCC unroll 8
  for (int t = 0; t < RT; t++)
#pragma GCC unroll 8
    for (int i = 0; i < NV; i++) acc[t][i] = vzero();
  for (int64_t k = 0; k < K; k += F::kStep) {
    if constexpr (RT < NV) {  // fewer tokens than weight vectors: hold the broadcasts, stream the weights
      typename F::V xv[RT];
#pragma GCC unroll 8
      for (int t = 0; t < RT; t++) xv[t] = F::bcast(x + t * ldx + k);
#pragma GCC unroll 8
      for (int i = 0; i < NV; i++) {
        const typename F::V wv = F::wload(p + (i / L) * pstride + kPanel * k + (i % L) * (kPanel / L));
#pragma GCC unroll 8
        for (int t = 0; t < RT; t++) acc[t][i] = F::madd(acc[t][i], xv[t], wv);
      }
    } else {
      typename F::V wv[NV];
#pragma GCC unroll 8
      for (int i = 0; i < NV; i++) wv[i] = F::wload(p + (i / L) * pstride + kPanel * k + (i % L) * (kPanel / L));
#pragma GCC unroll 8
      for (int t = 0; t < RT; t++) {
        const typename F::V xv = F::bcast(x + t * ldx + k);
#pragma GCC unroll 8
        for (int i = 0; i < NV; i++) acc[t][i] = F::madd(acc[t][i], xv, wv[i]);
      }
    }
  }
  const int rows = (RP - 1) * kPanel + n_last;
#pragma GCC unroll 8
  for (int i = 0; i < NV; i++) {
    const int64_t o = (int64_t)i * (kPanel / L), n = std::min<int64_t>(kPanel / L, rows - o);
    if (n <= 0) break;
    const vf b = bias ? vload_partial(bias + o, n) : vzero();
#pragma GCC unroll 8
    for (int t = 0; t < RT; t++) vstore_partial(y + t * ldy + o, vadd(acc[t][i], b), n);
  }
}

// AVX-512: 8 tokens x 3 panels (24 accumulators, 3 weight vectors, one broadcast). AVX2: 3 tokens x 2 panels
// of two vectors each (12 accumulators, 3 broadcasts held, one weight vector at a time: its 16 registers);
// single thread, f16 at 1.1B shapes, 49-50 GMAC/s against 38-39 for 6 tokens x one panel (Zen 4)
// NEON: 6 tokens x one panel of four vectors (24 accumulators, 4 weight vectors, a broadcast: 29 of its 32
// registers).
#if defined(EF_ISA_AVX512)
constexpr int kPanelTileT = 8, kPanelTileP = 3;
#elif defined(EF_ISA_NEON)
constexpr int kPanelTileT = 6, kPanelTileP = 1;
#else
constexpr int kPanelTileT = 3, kPanelTileP = 2;
#endif

constexpr int kDecodeP = 3;  // decode: 3 panels per step, independent accumulators to hide the FMA latency

// rt tokens (up to RT) x np panels (up to P)
template <typename W, int RT, int P>
inline void fpanel_rows(int rt, int np, const typename FPanel<W>::X* x, int64_t ldx, const W* p, int64_t pstride,
                        const float* bias, float* y, int64_t ldy, int n_last, int64_t K) {
  if constexpr (RT > 1) {
    if (rt < RT) return fpanel_rows<W, RT - 1, P>(rt, np, x, ldx, p, pstride, bias, y, ldy, n_last, K);
  }
  if constexpr (P > 1) {
    if (np < P) return fpanel_rows<W, RT, P - 1>(rt, np, x, ldx, p, pstride, bias, y, ldy, n_last, K);
  }
  fpanel_tile<W, RT, P>(x, ldx, p, pstride, bias, y, ldy, n_last, K);
}

// Tokens [c0, c1) (their rows xc, row stride ld, in the tile's activation type) against panels [o0, o1).
template <typename W>
void fpanel_chunk(const typename FPanel<W>::X* xc, int64_t ld, const W* w, int64_t pstride, const float* bias,
                  float* y, int64_t ldy, int64_t T, int64_t c0, int64_t c1, int64_t o0, int64_t o1, int64_t K) {
  const int64_t P = T == 1 ? kDecodeP : kPanelTileP;
  for (int64_t o = o0; o < o1; o += P * kPanel) {
    const int np = (int)std::min<int64_t>(P, (o1 - o + kPanel - 1) / kPanel);
    const int n_last = (int)std::min<int64_t>(kPanel, o1 - o - (np - 1) * kPanel);
    const W* p = w + (o / kPanel) * pstride;
    const float* b = bias ? bias + o : nullptr;
    for (int64_t t = c0; t < c1; t += kPanelTileT) {
      const int rt = (int)std::min<int64_t>(kPanelTileT, c1 - t);
      const auto* xt = xc + (t - c0) * ld;
      float* yt = y + t * ldy + o;
      if (T == 1) fpanel_rows<W, 1, kDecodeP>(1, np, xt, ld, p, pstride, b, yt, ldy, n_last, K);
      else fpanel_rows<W, kPanelTileT, kPanelTileP>(rt, np, xt, ld, p, pstride, b, yt, ldy, n_last, K);
    }
  }
}

// Tokens per chunk: their rows (~384 KB) and a tile's panels share L2 while the panels stream past.
template <typename W>
int64_t fpanel_chunk_rows(int64_t K) {
  const int64_t xb = (int64_t)sizeof(typename FPanel<W>::X) * K;
  return std::max<int64_t>(kPanelTileT, std::min<int64_t>(96, (384 << 10) / xb) / kPanelTileT * kPanelTileT);
}

template <typename W>
void matmul_fpanel(const float* x, int64_t ldx, const void* wv, int64_t ldw, const float* bias, float* y,
                   int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const int64_t pstride = ldw ? ldw : kPanel * K;  // elements from one panel to the next
  const int64_t rows = fpanel_chunk_rows<W>(K);
  for (int64_t c0 = 0; c0 < T; c0 += rows) {
    const int64_t c1 = std::min(T, c0 + rows);
    int64_t ld;
    const typename FPanel<W>::X* xc = FPanel<W>::rows(x, ldx, c0, c1, K, ld);
    fpanel_chunk<W>(xc, ld, (const W*)wv, pstride, bias, y, ldy, T, c0, c1, o0, o1, K);
  }
}

#if defined(EF_ISA_AVX512BF16)
// The same on activations rounded to bf16 beforehand (KernelTable::matmul_panel_bf16x)
void matmul_panel_bf16x_simd(const uint16_t* xb, int64_t ldx, const void* wv, int64_t ldw, const float* bias, float* y,
                             int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const int64_t pstride = ldw ? ldw : kPanel * K, rows = fpanel_chunk_rows<bf16_t>(K);
  for (int64_t c0 = 0; c0 < T; c0 += rows)
    fpanel_chunk<bf16_t>((const bf16_t*)xb + c0 * ldx, ldx, (const bf16_t*)wv, pstride, bias, y, ldy, T, c0,
                         std::min(T, c0 + rows), o0, o1, K);
}
#define EF_MATMUL_PANEL_BF16X matmul_panel_bf16x_simd
#endif
#if defined(EF_ISA_AVX512BF16)
#define EF_MATMUL_PANEL_TABLE {matmul_fpanel<float>, matmul_fpanel<f16_t>, matmul_fpanel<bf16_t>}
#else
#define EF_MATMUL_PANEL_TABLE {matmul_fpanel<float>, matmul_fpanel<f16_t>, nullptr}
#endif
#else
#define EF_MATMUL_PANEL_TABLE {nullptr, nullptr, nullptr}
#endif
#if !defined(EF_MATMUL_PANEL_BF16X)
#define EF_MATMUL_PANEL_BF16X nullptr
#endif

template <typename W>
void to_f32_simd(const void* src, float* dst, int64_t n) {
  const W* s = (const W*)src;
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vstore(dst + i, vload(s + i));
  if (i < n) vstore_partial(dst + i, vload_partial(s + i, n - i), n - i);
}

float dot_simd(const float* a, const float* b, int64_t n) {
  vf acc0 = vzero(), acc1 = vzero();
  int64_t i = 0;
  for (; i + 2 * kW <= n; i += 2 * kW) {
    acc0 = vfmadd(vload(a + i), vload(b + i), acc0);
    acc1 = vfmadd(vload(a + i + kW), vload(b + i + kW), acc1);
  }
  for (; i + kW <= n; i += kW) acc0 = vfmadd(vload(a + i), vload(b + i), acc0);
  if (i < n) acc1 = vfmadd(vload_partial(a + i, n - i), vload_partial(b + i, n - i), acc1);
  return vsum(vadd(acc0, acc1));
}

// Applies y[i] = f(y[i], x[i]) over vectors with a partial tail.
template <typename F>
inline void map2(float* y, const float* x, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vstore(y + i, f(vload(y + i), vload(x + i)));
  if (i < n) vstore_partial(y + i, f(vload_partial(y + i, n - i), vload_partial(x + i, n - i)), n - i);
}
template <typename F>
inline void map1(float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vstore(y + i, f(vload(y + i)));
  if (i < n) vstore_partial(y + i, f(vload_partial(y + i, n - i)), n - i);
}

void axpy_simd(float a, const float* x, float* y, int64_t n) {
  vf va = vset1(a);
  map2(y, x, n, [&](vf yv, vf xv) { return vfmadd(va, xv, yv); });
}
// Up to 4 vectors of the output held in registers across all rows, two rows per step (independent chains).
void wsum_simd(const float* p, const float* rows, int64_t ld, int64_t n, int64_t d, float* out) {
  for (int64_t i0 = 0; i0 < d; i0 += 4 * kW) {
    const int64_t m = std::min<int64_t>(4 * kW, d - i0);
    vf a[4] = {vzero(), vzero(), vzero(), vzero()}, b[4] = {vzero(), vzero(), vzero(), vzero()};
    const float* r = rows + i0;
    if (m == 4 * kW) {
      int64_t j = 0;
      for (; j + 2 <= n; j += 2) {
        const vf p0 = vset1(p[j]), p1 = vset1(p[j + 1]);
        for (int v = 0; v < 4; v++) {
          a[v] = vfmadd(p0, vload(r + j * ld + v * kW), a[v]);
          b[v] = vfmadd(p1, vload(r + (j + 1) * ld + v * kW), b[v]);
        }
      }
      if (j < n)
        for (int v = 0; v < 4; v++) a[v] = vfmadd(vset1(p[j]), vload(r + j * ld + v * kW), a[v]);
      for (int v = 0; v < 4; v++) vstore(out + i0 + v * kW, vadd(a[v], b[v]));
    } else {
      for (int64_t j = 0; j < n; j++)
        for (int v = 0; v * kW < m; v++) {
          const int64_t c = std::min<int64_t>(kW, m - v * kW);
          a[v] = vfmadd(vset1(p[j]), c == kW ? vload(r + j * ld + v * kW) : vload_partial(r + j * ld + v * kW, c), a[v]);
        }
      for (int v = 0; v * kW < m; v++) {
        const int64_t c = std::min<int64_t>(kW, m - v * kW);
        if (c == kW) vstore(out + i0 + v * kW, a[v]);
        else vstore_partial(out + i0 + v * kW, a[v], c);
      }
    }
  }
}
void scale_simd(float* x, float a, int64_t n) {
  vf va = vset1(a);
  map1(x, n, [&](vf v) { return vmul(v, va); });
}
void add_simd(float* y, const float* x, int64_t n) { map2(y, x, n, [](vf a, vf b) { return vadd(a, b); }); }
void mul_simd(float* y, const float* x, int64_t n) { map2(y, x, n, [](vf a, vf b) { return vmul(a, b); }); }

float sum_sq(const float* x, int64_t n, float center) {
  vf acc = vzero(), c = vset1(center);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) {
    vf d = vsub(vload(x + i), c);
    acc = vfmadd(d, d, acc);
  }
  float s = vsum(acc);
  for (; i < n; i++) s += (x[i] - center) * (x[i] - center);
  return s;
}

void rmsnorm_simd(const float* x, const float* w, float eps, float* y, int64_t n) {
  float r = 1.f / std::sqrt(sum_sq(x, n, 0.f) / (float)n + eps);
  vf vr = vset1(r);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) {
    vf v = vmul(vload(x + i), vr);
    vstore(y + i, w ? vmul(v, vload(w + i)) : v);
  }
  for (; i < n; i++) y[i] = x[i] * r * (w ? w[i] : 1.f);
}

void layernorm_simd(const float* x, const float* w, const float* b, float eps, float* y, int64_t n) {
  vf acc = vzero();
  int64_t i = 0;
  for (; i + kW <= n; i += kW) acc = vadd(acc, vload(x + i));
  float mean = vsum(acc);
  for (; i < n; i++) mean += x[i];
  mean /= (float)n;
  float r = 1.f / std::sqrt(sum_sq(x, n, mean) / (float)n + eps);
  vf vr = vset1(r), vm = vset1(mean);
  for (i = 0; i + kW <= n; i += kW) {
    vf v = vmul(vsub(vload(x + i), vm), vr);
    if (w) v = vmul(v, vload(w + i));
    if (b) v = vadd(v, vload(b + i));
    vstore(y + i, v);
  }
  for (; i < n; i++) y[i] = (x[i] - mean) * r * (w ? w[i] : 1.f) + (b ? b[i] : 0.f);
}

// f32_to_f16 in vectors (F16C / AVX-512 / NEON conversions round to nearest even as it does)
void f32_to_f16_simd(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vstore_f16(dst + i, vload(src + i));
  for (; i < n; i++) dst[i] = f32_to_f16(src[i]);
}

void softmax_simd(float* x, int64_t n) {
  if (n <= 0) return;
  vf vm = vset1(x[0]);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vm = vmax(vm, vload(x + i));
  float m = vmaxall(vm);
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  vf vmx = vset1(m), acc = vzero();
  for (i = 0; i + kW <= n; i += kW) {
    vf e = vexp(vsub(vload(x + i), vmx));
    vstore(x + i, e);
    acc = vadd(acc, e);
  }
  if (i < n) {  // (the tail in one partial vector: its unused lanes are not stored, and read back as zeros)
    vstore_partial(x + i, vexp(vsub(vload_partial(x + i, n - i), vmx)), n - i);
    acc = vadd(acc, vload_partial(x + i, n - i));
  }
  scale_simd(x, 1.f / vsum(acc), n);
}

inline vf vact(Act a, vf x) {
  switch (a) {
    case Act::ReLU: return vmax(x, vzero());
    case Act::ReLU2: {
      vf r = vmax(x, vzero());
      return vmul(r, r);
    }
    case Act::SiLU: return vdiv(x, vadd(vset1(1.f), vexp(vsub(vzero(), x))));
    case Act::GELU: {  // x Phi(x) = max(x, 0) - |x| erfc(|x| / sqrt 2) / 2, erfc by Numerical Recipes' erfcc
      // (relative error below 1e-5 over the whole range, so the far negative tail stays accurate too)
      static constexpr float c[10] = {0.17087277f,  -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                                      -0.18628806f, 0.09678418f,  0.37409196f, 1.00002368f,  -1.26551223f};
      const vf ax = vabs(x), z = vmul(ax, vset1(0.70710678118654752f));
      const vf t = vdiv(vset1(1.f), vfmadd(vset1(0.5f), z, vset1(1.f)));
      vf p = vset1(c[0]);
      for (int k = 1; k < 10; k++) p = vfmadd(p, t, vset1(c[k]));
      const vf half_erfc = vmul(vmul(vset1(0.5f), t), vexp(vsub(p, vmul(z, z))));
      return vsub(vmax(x, vzero()), vmul(ax, half_erfc));
    }
    case Act::GELUTanh: {  // 0.5 x (1 + tanh(z)) = x / (1 + exp(-2z)): no cancellation for negative x
      vf z = vmul(vset1(0.7978845608028654f), vfmadd(vmul(vset1(0.044715f), vmul(x, x)), x, x));
      return vdiv(x, vadd(vexp(vsub(vzero(), vadd(z, z))), vset1(1.f)));
    }
    default: return x;
  }
}

void act_simd(Act a, float* x, int64_t n) {
  if (a == Act::None) return;
  map1(x, n, [&](vf v) { return vact(a, v); });
}

void act_mul_simd(Act a, float* g, const float* u, int64_t n) {
  map2(g, u, n, [&](vf gv, vf uv) { return vmul(vact(a, gv), uv); });
}

void ssm_step_simd(const float* A, const float* dt, const float* x, const float* B, const float* C, float* S,
                   float* y, int64_t channels, int64_t N) {
  for (int64_t c = 0; c < channels; c++) {
    const vf d = vset1(dt[c]), dx = vset1(dt[c] * x[c]);
    const float* a = A + c * N;
    float* s = S + c * N;
    vf acc = vzero();
    int64_t n = 0;
    for (; n + kW <= N; n += kW) {
      const vf v = vfmadd(vexp(vmul(d, vload(a + n))), vload(s + n), vmul(dx, vload(B + n)));
      vstore(s + n, v);
      acc = vfmadd(v, vload(C + n), acc);
    }
    if (n < N) {  // (zeros past the end: exp(0) * 0 + 0, times C's zeros)
      const vf v = vfmadd(vexp(vmul(d, vload_partial(a + n, N - n))), vload_partial(s + n, N - n),
                          vmul(dx, vload_partial(B + n, N - n)));
      vstore_partial(s + n, v, N - n);
      acc = vfmadd(v, vload_partial(C + n, N - n), acc);
    }
    y[c] = vsum(acc);
  }
}

// quantize_row_q8 (quant.cc) in vectors, bit for bit: the same float steps, rounding half away from zero.
void quantize_q8_simd(const float* x, BlockQ8* out, int64_t n) {
  constexpr int kV = 32 / kW;  // vectors per block
  for (int64_t b = 0; b < n / 32; b++, x += 32) {
    vf v[kV], am = vzero();
    for (int i = 0; i < kV; i++) {
      v[i] = vload(x + i * kW);
      am = vmax(am, vabs(v[i]));
    }
    const float amax = vmaxall(am), d = amax / 127.f, id = d != 0 ? 1.f / d : 0.f;
    BlockQ8& o = out[b];
    o.d = d;
    vf res[kV], rm = vzero(), s0 = vzero(), s1 = vzero();
    const vf vid = vset1(id), vd = vset1(d);
    for (int i = 0; i < kV; i++) {
      const vf q = vround_away(vmul(v[i], vid));
      vstore_i8(o.q + i * kW, q);
      if (i < kV / 2) s0 = vadd(s0, q);
      else s1 = vadd(s1, q);
      res[i] = vsub(v[i], vmul(q, vd));
      rm = vmax(rm, vabs(res[i]));
    }
    o.sum[0] = (int16_t)vsum(s0);  // sums of small integers: exact in float
    o.sum[1] = (int16_t)vsum(s1);
    const float d2 = vmaxall(rm) / 127.f, id2 = d2 != 0 ? 1.f / d2 : 0.f;
    o.d2 = d2;
    vf rs = vzero();
    const vf vid2 = vset1(id2);
    for (int i = 0; i < kV; i++) {
      const vf r = vround_away(vmul(res[i], vid2));
      vstore_i8(o.r + i * kW, r);
      rs = vadd(rs, r);
    }
    o.rsum = (int16_t)vsum(rs);
    o.unused = 0;
  }
}

// quantize_rows_q8 (quant.cc) in vectors, bit for bit: the same float steps, the grouped layout.
void quantize_q8_rows_simd(const float* x, int64_t ldx, int64_t t0, int64_t t1, int64_t K, int8_t* q, float* d,
                           int32_t* sum) {
  for (int64_t t = t0; t < t1; t++) {
    const float* xr = x + t * ldx;
    vf am = vzero();
    for (int64_t i = 0; i < K; i += kW) am = vmax(am, vabs(vload(xr + i)));  // K: whole blocks of 32
    const float dt = vmaxall(am) / 127.f, id = dt != 0 ? 1.f / dt : 0.f;
    const vf vid = vset1(id);
    int8_t* o = q + t / kRowGroup * kRowGroup * K + 4 * (t % kRowGroup);
    vf s = vzero();
    for (int64_t i = 0; i < K; i += kW) {
      const vf v = vround_away(vmul(vload(xr + i), vid));
      int8_t b[kW];
      vstore_i8(b, v);
      for (int g = 0; g < kW / 4; g++) std::memcpy(o + (i / 4 + g) * 4 * kRowGroup, b + 4 * g, 4);
      s = vadd(s, v);
    }
    d[t] = dt;
    sum[t] = (int32_t)vsum(s);  // integers of at most 127 * 65536 in magnitude: exact in float
  }
}

#if defined(EF_ISA_AVX512BF16)
constexpr Isa kIsa = Isa::AVX512BF16;
#elif defined(EF_ISA_AVX512VNNI)
constexpr Isa kIsa = Isa::AVX512VNNI;
#elif defined(EF_ISA_AVX512)
constexpr Isa kIsa = Isa::AVX512;
#elif defined(EF_ISA_AVX2)
constexpr Isa kIsa = Isa::AVX2;
#elif defined(EF_ISA_NEONDOT)
constexpr Isa kIsa = Isa::NEONDOT;
#else
constexpr Isa kIsa = Isa::NEON;
#endif

const KernelTable kTable = {
    kIsa,
    {matmul_simd<float>, matmul_simd<f16_t>, matmul_simd<bf16_t>},
    EF_MATMUL_PANEL_TABLE,
    EF_QMATMUL_TABLE,
    EF_QPANEL_TABLE,
    EF_QPANEL_Q8_ONE_LEVEL,
    EF_QPANEL_Q8_ROWS,
    {to_f32_simd<float>, to_f32_simd<f16_t>, to_f32_simd<bf16_t>, EF_DEQUANT_ENTRIES},
    quantize_q8_simd,
    quantize_q8_rows_simd,
    dot_simd, axpy_simd, wsum_simd, scale_simd, add_simd, mul_simd, rmsnorm_simd, layernorm_simd, softmax_simd, act_simd,
    act_mul_simd,
    ssm_step_simd,
    f32_to_f16_simd,
    f32_to_bf16_simd,
    EF_MATMUL_PANEL_BF16X,    0,   // bf16x_tiles_from: rows always
    {},  // qmatmul_panel_bf16x: none
    0,   // qbf16x_from
};

}  // namespace

#define EF_CAT2(a, b) a##b
#define EF_CAT(a, b) EF_CAT2(a, b)
const KernelTable* EF_CAT(kernels_, EF_ISA_NS)() { return &kTable; }

}  // namespace cpu
}  // namespace ef
