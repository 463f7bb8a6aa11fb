// Quantized panels (quant.h) times 8-bit activations, written once: prefill GEMM and decode GEMV alike.
// A tile is RT tokens x the 16 rows of one panel; integer sums stay in 16-lane vectors for a whole block
// (one lane per row: no horizontal sums), then meet the block's scales in 16-lane float accumulators.
// The including kernel file supplies (scalar in ref/, SIMD in simd.h):
//   pi (16 x int32), pf (16 x float), pw (64 weight bytes: 16 rows x 4 k), kPanelRT (tile height)
//   kRowTileT x kRowTileP (tokens x panels of a row-scaled q8_0 tile), kRowDecodeP (panels of a decode step)
//   pi pi_set1(int32_t)  pi pi_add(pi, pi)  pf pf_zero()  pw pw_load(const uint8_t*)  void pw_nibbles(pw, pw& lo, pw& hi)
//   pw pw_signed(pw)                              int8 weights prepared for pi_dot_s8
//   pw pw_unoffset(pw)                            int8 weights stored + 128 (the row-scaled layout), the same
//   pi pi_dot_u8(pi, pw u, const int8_t* x4)      acc[r] += sum_j u[4r+j] x4[j]   (u in 0..63)
//   pi pi_dot_s8(pi, pw s, const int8_t* x4)      acc[r] += sum_j s[4r+j] x4[j] + kS8Bias * sum(x4)
//   pw pw_lut16(pw idx, const int8_t* table16)   bytes 0..15 looked up in a 16-byte table (16-byte aligned)
//   pw pw_and8(pw, uint8_t)  pw pw_or(pw, pw)  pw pw_sll16(pw, int)  pw pw_srl16(pw, int)  (16-bit lane shifts)
//   pf pf_load_f16(const uint8_t*)  pf pf_load_u8(const uint8_t*)  pf pf_load_s8(const uint8_t*)  pf pf_scale(pf, float)  pf pf_mul(pf, pf)
//   pf pf_fma_i(pi a, pf b, pf c) = float(a) * b + c     pf pf_fma(pf a, pf b, pf c) = a * b + c
//   void pf_store(float* y, pf v, const float* bias, int n)   y[0..n) = v[0..n) (+ bias[0..n))
// and for the i-quants' codebooks, pix (16 x int32 indices, one per row):
//   pix pix_load_u8(const uint8_t*)  pix pix_load_u16(const uint8_t*)   16 bytes / u16 zero-extended
//   pix pix_hi<S, NB>(pix idx, pix hi)            idx | ((hi >> S) & (2^NB - 1)) << 8
//   void pw_store(uint8_t*, pw)  pf pf_load(const float*)       64 bytes out, 16 floats in
//   pw pw_gather4(const uint32_t* t, pix i)       row r's 4 bytes: t[i[r]]
//   void pw_gather8(const uint64_t* t, pix i, pw& c0, pw& c1)   row r's 8 bytes t[i[r]]: 0..3 in c0, 4..7 in c1
//   pw pw_negate(pw v, const uint8_t* mask8)      bytes whose bit of the 64-bit mask is set negated
// and optionally (EF_HAVE_PW_GATHER_X4), 4 groups at once from an E-byte codebook (E = 4 or 8):
//   void pw_gather_x4<E, Hi, S>(t, planes, idx64, hi16, pw* c)   c[E / 4 * g + h] = bytes 4 h .. 4 h + 3 of
//       t[idx64[16 g + r] | (bit S + g of hi16[r]) << 8 (where Hi)], row r in lane r; planes (grid_planes):
//       byte j of every entry in plane j
// Integer sums are exact and the float steps the same in every copy, so every copy agrees to the last bit.
#pragma once
#include <algorithm>
#include <utility>
#include <vector>

#include "edgeformer/iquant.h"
#include "edgeformer/quant.h"

namespace ef {
namespace {

// Inlined whatever the compiler's size heuristics say: a helper of a tile kernel left as a call passes its
// vectors through memory (the i-quant group lookup: decode steps 1.3x slower)
#if defined(__GNUC__)
#define EF_ALWAYS_INLINE inline __attribute__((always_inline))
#define EF_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))
#elif defined(_MSC_VER)
#define EF_ALWAYS_INLINE __forceinline
#define EF_ALWAYS_INLINE_LAMBDA
#else
#define EF_ALWAYS_INLINE inline
#define EF_ALWAYS_INLINE_LAMBDA
#endif

#if !defined(EF_HAVE_PI_DOT_S8_SHARED)
// pi_dot_s8 where a tile uses each broadcast for several panels; ISAs whose pi_dot_s8 takes the activation
// bytes straight from memory (the VNNI copies) keep one shared register here instead
inline pi pi_dot_s8_shared(pi acc, pw s, const int8_t* x) { return pi_dot_s8(acc, s, x); }
inline pi pi_dot_u8_shared(pi acc, pw u, const int8_t* x) { return pi_dot_u8(acc, u, x); }
#endif

// The next panel's bytes of one block, fetched while the first tile of this one runs: a panel is read from
// memory once per chunk of tokens, and its first tile would otherwise wait for every line of it.
inline void prefetch_block(const uint8_t* p, int64_t bytes) {
#if defined(__GNUC__)
  for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(p + i);
#else
  (void)p, (void)bytes;
#endif
}

inline int32_t xsum(const BlockQ8& b) { return (int32_t)b.sum[0] + b.sum[1]; }

// Scratch elements of this file's own (internal) types: a std::vector<float> or <uint8_t> here would emit weak
// copies of the vector's members into each per-ISA object, for the linker to pick (tools/check_isa_isolation.py)
struct ScratchF { float v; };
static_assert(sizeof(ScratchF) == sizeof(float), "mins are read as a float array");
struct alignas(64) ScratchLine { uint8_t b[64]; };

// kResidual: both activation levels (quant.h: BlockQ8), the error of the weights alone; without it the first
// level only, as llama.cpp and CTranslate2 compute int8 products, at half the integer work.
template <bool kResidual>
struct PanelQ8_0 {
  static constexpr int64_t kBlock = 32, kBytes = 16 * 34;
  static constexpr bool kMins = false;
  static constexpr bool kPrefetchOneTile = false;
  static constexpr bool kPrefetchAhead = false;
  template <int RT>
  static void tile(const BlockQ8* const* x, const float* const* xm, const uint8_t* p, int64_t nb, pf* out,
                   const uint8_t* next) {
    pf facc[RT];
    for (int t = 0; t < RT; t++) facc[t] = pf_zero();
    for (int64_t b = 0; b < nb; b++, p += kBytes) {
      if (next) prefetch_block(next + b * kBytes, kBytes);
      pi acc[RT], acc2[RT];
      for (int t = 0; t < RT; t++) {
        acc[t] = pi_set1(-kS8Bias * xsum(x[t][b]));
        if constexpr (kResidual) acc2[t] = pi_set1(-kS8Bias * (int32_t)x[t][b].rsum);
      }
      for (int g = 0; g < 8; g++) {
        const pw s = pw_signed(pw_load(p + 32 + 64 * g));
        for (int t = 0; t < RT; t++) {
          acc[t] = pi_dot_s8(acc[t], s, x[t][b].q + 4 * g);
          if constexpr (kResidual) acc2[t] = pi_dot_s8(acc2[t], s, x[t][b].r + 4 * g);
        }
      }
      const pf d = pf_load_f16(p);
      for (int t = 0; t < RT; t++) {
        facc[t] = pf_fma_i(acc[t], pf_scale(d, x[t][b].d), facc[t]);
        if constexpr (kResidual) facc[t] = pf_fma_i(acc2[t], pf_scale(d, x[t][b].d2), facc[t]);
      }
    }
    for (int t = 0; t < RT; t++) out[t] = facc[t];
  }
};

// (v >> S) & M in every byte (S < 0: (v << -S) & M): a bit field moved into place, the other bits cleared. M
// keeps only bits that a 16-bit lane shift fills from the same byte. Compile-time S and M: an immediate shift and
// a mask, no branch (a shift count in a register costs two micro-ops, and left q5_k decode steps 1.4x slower than
// llama.cpp's). (GFNI's GF2P8AFFINEQB does it in one instruction, but on the pipes VPDPBUSD needs: on Zen 4,
// q5_k decode steps 1.45x slower with it, q3_k 1.07x faster.)
template <int S, uint8_t M>
inline pw pw_bits(pw v) {
  static_assert(S >= 0 ? (S < 8 && (M >> (8 - S)) == 0) : (S > -8 && (M & ((1u << -S) - 1)) == 0),
                "pw_bits: a kept bit would come from the neighbouring byte");
  if constexpr (S > 0) return pw_and8(pw_srl16(v, S), M);
  else if constexpr (S < 0) return pw_and8(pw_sll16(v, -S), M);
  else return pw_and8(v, M);
}

// Bit FROM of every byte moved to bit TO, the others cleared.
template <int FROM, int TO>
inline pw pw_bit_to(pw v) {
  return pw_bits<FROM - TO, (uint8_t)(1 << TO)>(v);
}

// q4_0: w = d (q - 8); q4_1: w = d q + m; q5_0: w = d (q - 16); q5_1: w = d q + m, q a nibble (and a fifth
// bit: quant.h)
template <DType T>
struct PanelQ32 {
  static constexpr bool kM = T == DType::Q4_1 || T == DType::Q5_1, k5 = T == DType::Q5_0 || T == DType::Q5_1;
  static constexpr int64_t kBlock = 32;
  static constexpr int64_t kBytes = 16 * (T == DType::Q4_0 ? 18 : T == DType::Q4_1 ? 20 : T == DType::Q5_0 ? 22 : 24);
  static constexpr int64_t kQs = kM ? 64 : 32;  // the nibble chunks; the fifth bits follow them
  static constexpr int32_t kOffset = kM ? 0 : k5 ? 16 : 8;  // stored + offset: removed through the sums
  static constexpr bool kMins = false;
  // q4_0's tiles of several tokens alone in their chunk prefetch the next panel (qmatmul_panels); not measured
  // for the other layouts
  static constexpr bool kPrefetchOneTile = T == DType::Q4_0;
  static constexpr bool kPrefetchAhead = false;
  // chunk C of block p (4 k of 16 rows): its low-nibble values (k 4C..) and high ones (k 16 + 4C..), stored values
  // (with their fifth bits from H, q5: the block's vector of them)
  template <int C>
  static EF_ALWAYS_INLINE void chunk(const uint8_t* p, pw H, pw& lo, pw& hi) {
    pw_nibbles(pw_load(p + kQs + 64 * C), lo, hi);
    if constexpr (k5) {
      lo = pw_or(lo, pw_bit_to<C, 4>(H));
      hi = pw_or(hi, pw_bit_to<4 + C, 4>(H));
    }
  }
  template <int RT>
  static void tile(const BlockQ8* const* x, const float* const* xm, const uint8_t* p, int64_t nb, pf* out,
                   const uint8_t* next) {
    pf facc[RT];
    for (int t = 0; t < RT; t++) facc[t] = pf_zero();
    for (int64_t b = 0; b < nb; b++, p += kBytes) {
      if (next) prefetch_block(next + b * kBytes, kBytes);
      pi acc[RT], acc2[RT];
      for (int t = 0; t < RT; t++) {
        acc[t] = pi_set1(-kOffset * xsum(x[t][b]));
        acc2[t] = pi_set1(0);
      }
      pw H;
      if constexpr (k5) H = pw_load(p + kQs + 256);
      static_for<4>([&](auto C) {
        constexpr int c = C;
        pw lo, hi;
        chunk<c>(p, H, lo, hi);
        for (int t = 0; t < RT; t++) {
          acc[t] = pi_dot_u8(acc[t], lo, x[t][b].q + 4 * c);
          acc2[t] = pi_dot_u8(acc2[t], hi, x[t][b].q + 16 + 4 * c);
        }
      });
      const pf d = pf_load_f16(p);
      for (int t = 0; t < RT; t++) facc[t] = pf_fma_i(pi_add(acc[t], acc2[t]), pf_scale(d, x[t][b].d), facc[t]);
      if constexpr (kM) {
        const pf m = pf_load_f16(p + 32);
        for (int t = 0; t < RT; t++) facc[t] = pf_fma(m, pf_set1(x[t][b].d * (float)xsum(x[t][b])), facc[t]);
      }
    }
    for (int t = 0; t < RT; t++) out[t] = facc[t];
  }
};

// q4_k / q5_k (k5): w = d * sc * q - dmin * m per 32-element sub-block; q5_k's fifth bits after q4_k's layout
template <bool k5>
struct PanelQK {
  static constexpr int64_t kBlock = 256, kBytes = k5 ? 2880 : 2368;
  static constexpr bool kMins = true;  // xm[t][s] = -d * sum of activation block s, for the mins
  static constexpr bool kPrefetchOneTile = false;
  static constexpr bool kPrefetchAhead = false;
  // group g (4 k of 16 rows) of sub-blocks 2J (lo) and 2J + 1 (hi) of block p: stored values (q5_k: fifth bits in)
  template <int J>
  static EF_ALWAYS_INLINE void chunk(const uint8_t* p, int g, pw& lo, pw& hi) {
    pw_nibbles(pw_load(p + 320 + 64 * (8 * J + g)), lo, hi);
    if constexpr (k5) {
      const pw H = pw_load(p + 2368 + 64 * g);
      lo = pw_or(lo, pw_bit_to<2 * J, 4>(H));
      hi = pw_or(hi, pw_bit_to<2 * J + 1, 4>(H));
    }
  }
  template <int RT>
  static void tile(const BlockQ8* const* x, const float* const* xm, const uint8_t* p, int64_t nb, pf* out,
                   const uint8_t* next) {
    pf facc[RT];
    for (int t = 0; t < RT; t++) facc[t] = pf_zero();
    for (int64_t b = 0; b < nb; b++, p += kBytes) {
      if (next) prefetch_block(next + b * kBytes, kBytes);
      const pf d = pf_load_f16(p), dmin = pf_load_f16(p + 32);
      static_for<4>([&](auto J) {  // sub-blocks 2j (low nibbles) and 2j + 1 (high)
        constexpr int j = J;
        const int64_t s0 = 8 * b + 2 * j, s1 = s0 + 1;
        pi lo_acc[RT], hi_acc[RT];
        for (int t = 0; t < RT; t++) lo_acc[t] = hi_acc[t] = pi_set1(0);
        for (int g = 0; g < 8; g++) {
          pw lo, hi;
          chunk<j>(p, g, lo, hi);
          for (int t = 0; t < RT; t++) {
            lo_acc[t] = pi_dot_u8(lo_acc[t], lo, x[t][s0].q + 4 * g);
            hi_acc[t] = pi_dot_u8(hi_acc[t], hi, x[t][s1].q + 4 * g);
          }
        }
        const pf sc0 = pf_mul(d, pf_load_u8(p + 64 + 16 * (2 * j))), sc1 = pf_mul(d, pf_load_u8(p + 64 + 16 * (2 * j + 1)));
        const pf m0 = pf_mul(dmin, pf_load_u8(p + 192 + 16 * (2 * j)));
        const pf m1 = pf_mul(dmin, pf_load_u8(p + 192 + 16 * (2 * j + 1)));
        for (int t = 0; t < RT; t++) {
          const BlockQ8 &x0 = x[t][s0], &x1 = x[t][s1];
          facc[t] = pf_fma_i(lo_acc[t], pf_scale(sc0, x0.d), facc[t]);
          facc[t] = pf_fma_i(hi_acc[t], pf_scale(sc1, x1.d), facc[t]);
          facc[t] = pf_fma(m0, pf_set1(xm[t][s0]), facc[t]);
          facc[t] = pf_fma(m1, pf_set1(xm[t][s1]), facc[t]);
        }
      });
    }
    for (int t = 0; t < RT; t++) out[t] = facc[t];
  }
};

// q3_k: w = d * sc * (q - 4), q = 2 bits | a high bit << 2; q2_k: w = d * sc * q - dmin * m, q 2 bits. One
// scale (and min) per 16 k, as q6_k.
template <bool kQ3>
struct PanelQLow {
  static constexpr int64_t kBlock = 256, kBytes = kQ3 ? 1824 : 1600, kL = kQ3 ? 288 : 576;
  static constexpr bool kMins = false;
  static constexpr bool kPrefetchOneTile = false;
  static constexpr bool kPrefetchAhead = kQ3;
  // 16-k group u (h = u % 2) of block p, d its scale: g[i] the values of k 4i.. of each row, [16 rows][4 bytes]
  // (q3_k: before its offset of 4), dsc the group's scale, dm its min (q2_k)
  template <int h>
  static void group(const uint8_t* p, pf d, int u, pw* g, pf& dsc, pf& dm) {
    const pw L = pw_load(p + kL + 64 * u);
    static_for<4>([&](auto I) { g[I] = pw_bits<2 * I, 0x03>(L); });
    if constexpr (kQ3) {
      const pw H = pw_load(p + 1312 + 64 * (u / 2));
      static_for<4>([&](auto I) { g[I] = pw_or(g[I], pw_bit_to<4 * h + I, 2>(H)); });
      dsc = pf_mul(d, pf_load_s8(p + 32 + 16 * u));
    } else {
      dsc = pf_mul(d, pf_load_u8(p + 64 + 16 * u));
      dm = pf_mul(pf_load_f16(p + 32), pf_load_u8(p + 320 + 16 * u));
    }
  }
  template <int RT>
  static void tile(const BlockQ8* const* x, const float* const* xm, const uint8_t* p, int64_t nb, pf* out,
                   const uint8_t* next) {
    pf facc[RT];
    for (int t = 0; t < RT; t++) facc[t] = pf_zero();
    for (int64_t b = 0; b < nb; b++, p += kBytes) {
      if (next) prefetch_block(next + b * kBytes, kBytes);
      const pf d = pf_load_f16(p);
      for (int u2 = 0; u2 < 16; u2 += 2) static_for<2>([&](auto H_) {  // 16 elements: half h of block 8b + u / 2
        constexpr int h = H_;
        const int u = u2 + h;
        pw g[4];
        pf dsc, dm;
        group<h>(p, d, u, g, dsc, dm);
        for (int t = 0; t < RT; t++) {
          const BlockQ8& xb = x[t][8 * b + u / 2];
          const int8_t* xq = xb.q + 16 * h;
          pi acc = pi_set1(kQ3 ? -4 * (int32_t)xb.sum[h] : 0);
          for (int i = 0; i < 4; i++) acc = pi_dot_u8(acc, g[i], xq + 4 * i);
          facc[t] = pf_fma_i(acc, pf_scale(dsc, xb.d), facc[t]);
          if constexpr (!kQ3) facc[t] = pf_fma(dm, pf_set1(-xb.d * (float)xb.sum[h]), facc[t]);
        }
      });
    }
    for (int t = 0; t < RT; t++) out[t] = facc[t];
  }
};

struct PanelQ6_K {  // w = d * sc * (q - 32), q = 4 low bits | 2 high bits << 4, one int8 scale per 16 k
  static constexpr int64_t kBlock = 256, kBytes = 3360;
  static constexpr bool kMins = false;
  static constexpr bool kPrefetchOneTile = false;
  static constexpr bool kPrefetchAhead = false;
  // 16-k group u of block p, d its scale: g[i] the values of k 4i.. of each row, [16 rows][4 bytes], before their
  // offset of 32; dsc the group's scale
  static void group(const uint8_t* p, pf d, int u, pw* g, pf& dsc) {
    const uint8_t* q = p + 288 + 192 * u;
    const pw A = pw_load(q), B = pw_load(q + 64), H = pw_load(q + 128);
    g[0] = pw_or(pw_and8(A, 0x0F), pw_bits<-4, 0x30>(H));
    g[1] = pw_or(pw_bits<4, 0x0F>(A), pw_bits<-2, 0x30>(H));
    g[2] = pw_or(pw_and8(B, 0x0F), pw_and8(H, 0x30));
    g[3] = pw_or(pw_bits<4, 0x0F>(B), pw_bits<2, 0x30>(H));
    dsc = pf_mul(d, pf_load_s8(p + 32 + 16 * u));
  }
  template <int RT>
  static void tile(const BlockQ8* const* x, const float* const* xm, const uint8_t* p, int64_t nb, pf* out,
                   const uint8_t* next) {
    pf facc[RT];
    for (int t = 0; t < RT; t++) facc[t] = pf_zero();
    for (int64_t b = 0; b < nb; b++, p += kBytes) {
      if (next) prefetch_block(next + b * kBytes, kBytes);
      const pf d = pf_load_f16(p);
      for (int u = 0; u < 16; u++) {  // 16 elements: half (u % 2) of activation block 8b + u / 2
        pw g[4];
        pf dsc;
        group(p, d, u, g, dsc);
        for (int t = 0; t < RT; t++) {
          const BlockQ8& xb = x[t][8 * b + u / 2];
          const int8_t* xq = xb.q + 16 * (u % 2);
          pi acc = pi_set1(-32 * (int32_t)xb.sum[u % 2]);
          acc = pi_dot_u8(acc, g[0], xq);
          acc = pi_dot_u8(acc, g[1], xq + 4);
          acc = pi_dot_u8(acc, g[2], xq + 8);
          acc = pi_dot_u8(acc, g[3], xq + 12);
          facc[t] = pf_fma_i(acc, pf_scale(dsc, xb.d), facc[t]);
        }
      }
    }
    for (int t = 0; t < RT; t++) out[t] = facc[t];
  }
};

// iq4_nl: w = d * kIQ4Values[nibble] (q4_0's panel); iq4_xs (kXS): 8 sub-blocks of 32, w = d * sc * value,
// sc an int8 per row and sub-block. The looked-up values are signed (-127..113): signed products.
template <bool kXS>
struct PanelIQ4 {
  static constexpr int64_t kBlock = kXS ? 256 : 32, kBytes = kXS ? 2208 : 288;
  static constexpr int kSubs = kXS ? 8 : 1;
  static constexpr bool kMins = false;
  static constexpr bool kPrefetchOneTile = false;
  static constexpr bool kPrefetchAhead = false;
  template <int RT>
  static void tile(const BlockQ8* const* x, const float* const* xm, const uint8_t* p, int64_t nb, pf* out,
                   const uint8_t* next) {
    pf facc[RT];
    for (int t = 0; t < RT; t++) facc[t] = pf_zero();
    for (int64_t b = 0; b < nb; b++, p += kBytes) {
      if (next) prefetch_block(next + b * kBytes, kBytes);
      const pf d = pf_load_f16(p);
      for (int ib = 0; ib < kSubs; ib++) {
        const uint8_t* q = p + (kXS ? 160 + 256 * ib : 32);
        pi acc[RT], acc2[RT];
        for (int t = 0; t < RT; t++) {
          acc[t] = pi_set1(-kS8Bias * xsum(x[t][kSubs * b + ib]));
          acc2[t] = pi_set1(0);
        }
        for (int c = 0; c < 4; c++) {
          pw lo, hi;
          pw_nibbles(pw_load(q + 64 * c), lo, hi);
          lo = pw_signed(pw_lut16(lo, kIQ4Values));
          hi = pw_signed(pw_lut16(hi, kIQ4Values));
          for (int t = 0; t < RT; t++) {
            const int8_t* xq = x[t][kSubs * b + ib].q;
            acc[t] = pi_dot_s8(acc[t], lo, xq + 4 * c);
            acc2[t] = pi_dot_s8(acc2[t], hi, xq + 16 + 4 * c);
          }
        }
        const pf dsc = kXS ? pf_mul(d, pf_load_s8(p + 32 + 16 * ib)) : d;
        for (int t = 0; t < RT; t++)
          facc[t] = pf_fma_i(pi_add(acc[t], acc2[t]), pf_scale(dsc, x[t][kSubs * b + ib].d), facc[t]);
      }
    }
    for (int t = 0; t < RT; t++) out[t] = facc[t];
  }
};

#if defined(EF_HAVE_PW_GATHER_X4)
constexpr bool kGatherX4 = true;
#else
constexpr bool kGatherX4 = false;  // PanelGrid looks up one group at a time: never called
template <int E, bool Hi, int S>
void pw_gather_x4(const void* t, const uint8_t* planes, const uint8_t* idx64, const uint8_t* hi16, pw* c);
#endif

// Type T's codebook as planes of its entries' bytes, plane j holding byte j of every entry (pw_gather_x4)
template <DType T>
const uint8_t* grid_planes() {
  constexpr GridTraits tr = grid_traits(T);
  constexpr int E = tr.gw, N = 256 << tr.hi_bits;  // bytes per entry (8 or 4 elements), entries
  struct Planes {
    alignas(64) uint8_t b[E * N];
  };
  static const Planes planes = [] {
    Planes p{};
    for (int i = 0; i < N; i++) {
      const void* t = grid_traits(T).table;
      const uint64_t v = E == 8 ? ((const uint64_t*)t)[i] : ((const uint32_t*)t)[i];
      for (int j = 0; j < E; j++) p.b[N * j + i] = (uint8_t)(v >> (8 * j));
    }
    return p;
  }();
  return planes.b;
}

// The i-quants (iquant.h): w = d * sc * mul * v, v a codebook entry's bytes with signs (iq2, iq3) or a signed
// entry (iq1). Per group of 8 (4) elements of 16 rows: the index bytes zero-extended to 16 lanes, high bits
// merged in, 16 codebook words looked up (pw_gather4 / pw_gather8), signs applied by mask; then the signed
// products, an integer sum per scale unit (16 or 32 elements), a float step per unit. The lookups dominate
// (4 in 5 of a decode step's time), so prompts look each panel up once per chunk of tokens (decode() into
// int8 values and float scales, then tile_decoded for every token) rather than once per tile.
template <DType T>
struct PanelGrid {
  static constexpr GridTraits kTr = grid_traits(T);
  static constexpr GridPanel kP = grid_panel(T);
  static constexpr int64_t kBlock = 256, kBytes = kP.bytes;
  static constexpr int kGps = 32 / kTr.gw, kChunks = kTr.gw / 4;  // groups per sub-block of 32, chunks per group
  static constexpr int kUnits = 256 / kTr.unit;
  static constexpr int64_t kDecodedBytes = 64 * kUnits + 4096;  // unit scales (16 floats each) | 64 chunks
  static constexpr bool kMins = false;
  static constexpr bool kPrefetchOneTile = false;
  static constexpr bool kPrefetchAhead = true;

  static EF_ALWAYS_INLINE pix hi_bits(const uint8_t* p, int sb) {  // sub-block sb's high index bits, one lane per row
    if constexpr (kTr.hi_bits == 0) return pix{};
    else return kP.hb == 1 ? pix_load_u8(p + kP.hi + 16 * sb) : pix_load_u16(p + kP.hi + 32 * sb);
  }
  // group l of sub-block sb: its chunks' signed values, ready for pi_dot_s8
  template <int l>
  static EF_ALWAYS_INLINE void group(const uint8_t* p, int sb, const pix& hi, pw* c) {
    pix idx = pix_load_u8(p + kP.lo + 16 * (kGps * sb + l));
    if constexpr (kTr.hi_bits != 0) idx = pix_hi<kTr.hi_bits * l, kTr.hi_bits>(idx, hi);
    if constexpr (kTr.gw == 8) pw_gather8((const uint64_t*)kTr.table, idx, c[0], c[1]);
    else c[0] = pw_gather4((const uint32_t*)kTr.table, idx);
    for (int c4 = 0; c4 < kChunks; c4++) {
      const int e = l * kTr.gw + 4 * c4;  // the chunk's first element in the sub-block
      if constexpr (kTr.signs) c[c4] = pw_negate(c[c4], p + kP.sg + 16 * (4 * sb + e / 8) + 8 * (e % 8 / 4));
      c[c4] = pw_signed(c[c4]);
    }
  }

  // With pw_gather_x4 (AVX512-VBMI), 4 groups at a time where the codebook has at most 512 entries (all but
  // iq2_s and iq1): groups 4 q .. 4 q + 3 of sub-block sb, chunk i of them (of 4 elements) in c[i]
  static constexpr bool kX4 = kGatherX4 && kTr.signs && kTr.hi_bits <= 1;
  template <int q>
  static EF_ALWAYS_INLINE void groups_x4(const uint8_t* p, int sb, const uint8_t* planes, pw* c) {
    static_assert(kP.hb == 1 && 32 / kTr.gw >= 4, "one high-bit byte per row and sub-block");
    pw_gather_x4<kTr.gw, kTr.hi_bits == 1, 4 * q>(kTr.table, planes, p + kP.lo + 16 * (kGps * sb + 4 * q),
                                                   p + kP.hi + 16 * sb, c);
    for (int i = 0; i < 4 * kChunks; i++)
      c[i] = pw_signed(pw_negate(c[i], p + kP.sg + 64 * sb + 8 * (4 * kChunks * q + i)));
  }
  static const uint8_t* planes() {
    if constexpr (kX4) return grid_planes<T>();
    else return nullptr;
  }

  template <int RT>
  static void tile(const BlockQ8* const* x, const float* const* /*xm*/, const uint8_t* p, int64_t nb, pf* out,
                   const uint8_t* next) {
    const uint8_t* const pl = planes();
    pf facc[RT];
    for (int t = 0; t < RT; t++) facc[t] = pf_zero();
    for (int64_t b = 0; b < nb; b++, p += kBytes) {
      if (next) prefetch_block(next + b * kBytes, kBytes);
      const pf d = pf_load_f16(p);
      for (int sb = 0; sb < 8; sb++) {  // sub-block sb: activation block 8 b + sb
        const pix hi = hi_bits(p, sb);
        pi acc[RT];
        pw c[8];  // kX4: the sub-block's chunks (8-element groups: all 8 at once; 4-element: a half's 4)
        if constexpr (kX4 && kTr.gw == 8) groups_x4<0>(p, sb, pl, c);
        static_for<2>([&](auto H_) {  // halves of 16 elements
          constexpr int h = H_;
          if constexpr (kTr.unit == 16 || h == 0)
            for (int t = 0; t < RT; t++) {
              const BlockQ8& xb = x[t][8 * b + sb];
              acc[t] = pi_set1(-kS8Bias * (kTr.unit == 16 ? (int32_t)xb.sum[h] : xsum(xb)));
            }
          if constexpr (kX4) {  // this half's 4 chunks of 4 elements
            if constexpr (kTr.gw == 4) groups_x4<h>(p, sb, pl, c);
            const pw* ch = kTr.gw == 4 ? c : c + 4 * h;
            for (int i = 0; i < 4; i++)
              for (int t = 0; t < RT; t++) acc[t] = pi_dot_s8(acc[t], ch[i], x[t][8 * b + sb].q + 16 * h + 4 * i);
          } else {
            static_for<kGps / 2>([&](auto L_) {
              constexpr int l = h * (kGps / 2) + L_;
              pw c[2];
              group<l>(p, sb, hi, c);
              for (int c4 = 0; c4 < kChunks; c4++)
                for (int t = 0; t < RT; t++) acc[t] = pi_dot_s8(acc[t], c[c4], x[t][8 * b + sb].q + l * kTr.gw + 4 * c4);
            });
          }
          if constexpr (kTr.unit == 16 || h == 1) {
            const int u = kTr.unit == 16 ? 2 * sb + h : sb;
            const pf dsc = pf_mul(d, pf_load_u8(p + kP.sc + 16 * u));
            for (int t = 0; t < RT; t++)
              facc[t] = pf_fma_i(acc[t], pf_scale(dsc, x[t][8 * b + sb].d * kTr.mul), facc[t]);
          }
        });
      }
    }
    for (int t = 0; t < RT; t++) out[t] = facc[t];
  }

  // One block of a panel -> kUnits x 16 float scales d * sc * mul | 64 chunks [16 rows][4 values] (pw_signed)
  static void decode(const uint8_t* p, uint8_t* out) {
    const pf d = pf_load_f16(p);
    for (int u = 0; u < kUnits; u++)
      pf_store((float*)out + 16 * u, pf_scale(pf_mul(d, pf_load_u8(p + kP.sc + 16 * u)), kTr.mul), nullptr, 16);
    for (int sb = 0; sb < 8; sb++) {
      if constexpr (kX4) {
        const uint8_t* const pl = planes();
        static_for<kGps / 4>([&](auto Q_) {
          constexpr int q = Q_;
          pw c[8];
          groups_x4<q>(p, sb, pl, c);
          for (int i = 0; i < 4 * kChunks; i++) pw_store(out + 64 * kUnits + 64 * (8 * sb + 4 * kChunks * q + i), c[i]);
        });
      } else {
        const pix hi = hi_bits(p, sb);
        static_for<kGps>([&](auto L_) {
          constexpr int l = L_;
          pw c[2];
          group<l>(p, sb, hi, c);
          for (int c4 = 0; c4 < kChunks; c4++) pw_store(out + 64 * kUnits + 64 * (8 * sb + l * kChunks + c4), c[c4]);
        });
      }
    }
  }
  // tile() on decoded blocks: the same integer sums and float steps ((d sc mul) x.d = (d sc) (x.d mul), mul a
  // power of 2), so a prompt's logits are those of its tokens one at a time
  template <int RT>
  static void tile_decoded(const BlockQ8* const* x, const uint8_t* q, int64_t nb, pf* out) {
    constexpr int kC = kTr.unit / 4;  // chunks per unit
    pf facc[RT];
    for (int t = 0; t < RT; t++) facc[t] = pf_zero();
    for (int64_t b = 0; b < nb; b++, q += kDecodedBytes) {
      for (int u = 0; u < kUnits; u++) {
        const int ib = kTr.unit == 16 ? u / 2 : u, h = u % 2;  // activation block 8 b + ib (half h)
        pi acc[RT];
        for (int t = 0; t < RT; t++) {
          const BlockQ8& xb = x[t][8 * b + ib];
          acc[t] = pi_set1(-kS8Bias * (kTr.unit == 16 ? (int32_t)xb.sum[h] : xsum(xb)));
        }
        const uint8_t* w = q + 64 * kUnits + 64 * kC * u;
        for (int c = 0; c < kC; c++) {
          const pw v = pw_load(w + 64 * c);
          for (int t = 0; t < RT; t++)
            acc[t] = pi_dot_s8(acc[t], v, x[t][8 * b + ib].q + (kTr.unit == 16 ? 16 * h : 0) + 4 * c);
        }
        const pf sc = pf_load((const float*)q + 16 * u);
        for (int t = 0; t < RT; t++) facc[t] = pf_fma_i(acc[t], pf_scale(sc, x[t][8 * b + ib].d), facc[t]);
      }
    }
    for (int t = 0; t < RT; t++) out[t] = facc[t];
  }
};

template <class F, int RT>
inline void decoded_tile(int r, const BlockQ8* const* x, const uint8_t* q, int64_t nb, pf* out) {
  if constexpr (RT > 1) {
    if (r < RT) return decoded_tile<F, RT - 1>(r, x, q, nb, out);
  }
  F::template tile_decoded<RT>(x, q, nb, out);
}

// Prompts of an i-quant matrix: each panel looked up once per chunk of tokens (PanelGrid::decode), then every
// tile of the chunk on the decoded values. Not for a few tokens, whose tiles share each lookup already.
template <class F>
void qmatmul_decoded(const BlockQ8* xq, int64_t ldxq, const uint8_t* w, const float* bias, float* y, int64_t ldy,
                     int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const int64_t nb = K / F::kBlock, pb = nb * F::kBytes;
  constexpr int64_t kChunk = 64;
  thread_local std::vector<ScratchLine> lines;
  const size_t need = (size_t)((nb * F::kDecodedBytes + 63) / 64);
  if (lines.size() < need) lines.resize(need);
  uint8_t* dec = lines.data()->b;
  for (int64_t t0 = 0; t0 < T; t0 += kChunk) {
    const int64_t t1 = std::min(T, t0 + kChunk);
    for (int64_t o = o0; o < o1; o += kPanel) {
      const uint8_t* p = w + (o / kPanel) * pb;
      for (int64_t b = 0; b < nb; b++) F::decode(p + b * F::kBytes, dec + b * F::kDecodedBytes);
      const int n = (int)std::min<int64_t>(kPanel, o1 - o);
      for (int64_t t = t0; t < t1; t += kPanelRT) {
        const int r = (int)std::min<int64_t>(kPanelRT, t1 - t);
        const BlockQ8* x[kPanelRT];
        pf out[kPanelRT];
        for (int i = 0; i < r; i++) x[i] = xq + (t + i) * ldxq;
        decoded_tile<F, kPanelRT>(r, x, dec, nb, out);
        for (int i = 0; i < r; i++) pf_store(y + (t + i) * ldy + o, out[i], bias ? bias + o : nullptr, n);
      }
    }
  }
}

template <class F, int RT>
inline void panel_tile(int r, const BlockQ8* const* x, const float* const* xm, const uint8_t* p, int64_t nb, pf* out,
                       const uint8_t* next) {
  if constexpr (RT > 1) {
    if (r < RT) return panel_tile<F, RT - 1>(r, x, xm, p, nb, out, next);
  }
  F::template tile<RT>(x, xm, p, nb, out, next);
}

// y[t, o] for o in [o0, o1) (o0 a multiple of 16), t in [0, T). Tokens are taken in chunks whose
// activations stay in L2 while every panel of the range streams past them.
template <class F>
void qmatmul_panels(const BlockQ8* xq, int64_t ldxq, const void* wv, int64_t /*row_bytes*/, const float* bias, float* y,
                    int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const uint8_t* w = (const uint8_t*)wv;
  const int64_t nb = K / F::kBlock, pb = nb * F::kBytes;
  constexpr int64_t kChunk = 64;
  // formats with mins: each activation block's -d * sum, once per call instead of once per panel
  const int64_t nx = K / kQ8Block;
  thread_local std::vector<ScratchF> mins;
  if constexpr (F::kMins) {
    if (mins.size() < (size_t)(kChunk * nx)) mins.resize((size_t)(kChunk * nx));
  }
  for (int64_t t0 = 0; t0 < T; t0 += kChunk) {
    const int64_t t1 = std::min(T, t0 + kChunk);
    if constexpr (F::kMins)
      for (int64_t t = t0; t < t1; t++)
        for (int64_t i = 0; i < nx; i++) {
          const BlockQ8& b = xq[t * ldxq + i];
          mins[(t - t0) * nx + i].v = -b.d * (float)xsum(b);
        }
    for (int64_t o = o0; o < o1; o += kPanel) {
      const uint8_t* p = w + (o / kPanel) * pb;
      const int n = (int)std::min<int64_t>(kPanel, o1 - o);
      for (int64_t t = t0; t < t1; t += kPanelRT) {
        const int r = (int)std::min<int64_t>(kPanelRT, t1 - t);
        const BlockQ8* x[kPanelRT];
        const float* xm[kPanelRT] = {};
        pf out[kPanelRT];
        for (int i = 0; i < r; i++) {
          x[i] = xq + (t + i) * ldxq;
          if constexpr (F::kMins) xm[i] = &mins[(size_t)((t - t0 + i) * nx)].v;  // ScratchF is one float
        }
        // The first tile of a chunk of several streams each panel from memory. Where there are more, it fetches
        // the next panel meanwhile; q4_0 does so from 3 tokens on (a batch of decode steps waits on memory
        // without it: 1.1B, 2 threads, a step of 4 sequences: 34 -> 29 ms, of 6: 42 -> 33 ms), while the other
        // formats' longer blocks lose 10-30% with it (measured: q4_k, q8_0). Where a tile is alone in its chunk
        // (a decode step), the hardware's prefetch suffices for most formats: fetching ahead too made steps
        // slower (1.1B shapes, one thread, one process: q5_k 1.48x, q4_k 1.25x, q4_0 1.19x, q2_k and q6_k 1.14x,
        // q8_0 and q5_0 1.08x). Formats with kPrefetchAhead fetch two blocks ahead: q3_k steps wait on memory
        // without it (1.4x faster with it on one thread, 1.26x on two), as the i-quants' lookups do on their
        // index bytes (iq3_xxs 1.35x, iq2_xs 1.13x). (At a panel's end those are the next panel's first blocks:
        // panels are contiguous; past the matrix's end a prefetch fetches nothing.)
        const int64_t tiles_over = F::kPrefetchOneTile ? 2 : kPanelRT;
        const uint8_t* next = t == t0 && t1 - t0 > tiles_over && o + kPanel < o1 ? p + pb
                              : F::kPrefetchAhead && t1 - t0 <= kPanelRT     ? p + 2 * F::kBytes
                                                                              : nullptr;
        panel_tile<F, kPanelRT>(r, x, xm, p, nb, out, next);
        for (int i = 0; i < r; i++) pf_store(y + (t + i) * ldy + o, out[i], bias ? bias + o : nullptr, n);
      }
    }
  }
}

template <class F>
void qmatmul_grid(const BlockQ8* xq, int64_t ldxq, const void* wv, int64_t row_bytes, const float* bias, float* y,
                  int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  if (T > 2 * kPanelRT) return qmatmul_decoded<F>(xq, ldxq, (const uint8_t*)wv, bias, y, ldy, T, o0, o1, K);
  qmatmul_panels<F>(xq, ldxq, wv, row_bytes, bias, y, ldy, T, o0, o1, K);
}

#define EF_QPANEL_TABLE                                                                                          \
  {nullptr, nullptr, nullptr, qmatmul_panels<PanelQ8_0<true>>, qmatmul_panels<PanelQ32<DType::Q4_0>>, qmatmul_panels<PanelQK<false>>, \
   qmatmul_panels<PanelQ6_K>, qmatmul_panels<PanelQ32<DType::Q4_1>>, qmatmul_panels<PanelQ32<DType::Q5_0>>,         \
   qmatmul_panels<PanelQ32<DType::Q5_1>>, qmatmul_panels<PanelQK<true>>, qmatmul_panels<PanelQLow<true>>,          \
   qmatmul_panels<PanelQLow<false>>, qmatmul_panels<PanelIQ4<false>>, qmatmul_panels<PanelIQ4<true>>,            \
   qmatmul_grid<PanelGrid<DType::IQ2_XXS>>, qmatmul_grid<PanelGrid<DType::IQ2_XS>>,                               \
   qmatmul_grid<PanelGrid<DType::IQ2_S>>, qmatmul_grid<PanelGrid<DType::IQ3_XXS>>,                                \
   qmatmul_grid<PanelGrid<DType::IQ3_S>>, qmatmul_grid<PanelGrid<DType::IQ1_S>>,                                  \
   qmatmul_grid<PanelGrid<DType::IQ1_M>>}
#define EF_QPANEL_Q8_ONE_LEVEL qmatmul_panels<PanelQ8_0<false>>

}  // namespace
}  // namespace ef

// the row-scaled and ternary panels' products (one activation scale per token)
#include "cpu/qpanel_rows.h"
