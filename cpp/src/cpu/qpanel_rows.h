// Row-scaled q8_0 panels and their ternary form (quant.h) times activations with one scale per token: the second
// half of the panel kernels, written against the same primitives (included at the end of cpu/qpanel.h, in its
// namespace).
#pragma once

namespace ef {
namespace {

// Row-scaled q8_0 panels (quant.h) times activations quantized with one scale per token (quantize_rows_q8):
// integer sums over all of K, one float step per output, as CTranslate2's int8. RT tokens x RP panels.
// a: the tile's first token in its group of kRowGroup ([K / 4][kRowGroup][4 bytes]: one pointer serves the
// tile); xd[t], xsum[t]: token t's scale and int8 sum (VPDPBUSD's +128 on the weights comes back through it).
// kTernary: the ternary layout (BitNet's -1, 0, 1 at 2 bits): each 64-byte load holds four chunks of 4 k, the
// values plus 1 (so the sums come back less the int8 sum, on every ISA).
template <int RT, int RP, bool kTernary>
inline void q8_rows_tile(const int8_t* a, const float* xd, const int32_t* xsum, const uint8_t* p, int64_t pstride,
                         int64_t K, const float* bias, float* y, int64_t ldy, int n_last) {
  pi acc[RT][RP];
#pragma GCC unroll 8
  for (int t = 0; t < RT; t++)
#pragma GCC unroll 4
    for (int j = 0; j < RP; j++) acc[t][j] = pi_set1(0);
  // one chunk of 4 k (u: its index in a block of 32) of every tile row and panel
  auto step = [&](const pw* w, int u) EF_ALWAYS_INLINE_LAMBDA {
#pragma GCC unroll 8
    for (int t = 0; t < RT; t++)
#pragma GCC unroll 4
      for (int j = 0; j < RP; j++) {
        const int8_t* x = a + 4 * (kRowGroup * u + t);
        if constexpr (kTernary)
          acc[t][j] = RT == 1 ? pi_dot_u8_shared(acc[t][j], w[j], x) : pi_dot_u8(acc[t][j], w[j], x);
        else
          acc[t][j] = RT == 1 ? pi_dot_s8_shared(acc[t][j], w[j], x) : pi_dot_s8(acc[t][j], w[j], x);
      }
  };
  const uint8_t* q = p + 64;
  // a decode step's panels are fetched this far ahead of their loads: each of the RP streams is short (4 K bytes),
  // and the hardware prefetcher alone leaves decode steps 1.12x slower (Zen 5, BitNet 2B4T's shape)
  constexpr int64_t kTernaryPrefetch = 2048;
#if defined(EF_TERNARY_FIELD_ACCS)
  if constexpr (kTernary && RT == 1) {
    // a decode step: field f of each byte masked in place (its value times 4^f) into an accumulator of its own,
    // an AND and a product per field (no shift) and four independent sums per panel; the 4^f divided out at the
    // end, exactly (each sum is a multiple of it)
    pi fa[3][RP];
#pragma GCC unroll 4
    for (int j = 0; j < RP; j++) fa[0][j] = fa[1][j] = fa[2][j] = pi_set1(0);
    for (int64_t c = 0; c < K / 16; c++, q += 64, a += 16 * kRowGroup) {
#pragma GCC unroll 4
      for (int j = 0; j < RP; j++) {
        const pw raw = pw_load(q + j * pstride);
        prefetch_block(q + j * pstride + kTernaryPrefetch, 64);
        acc[0][j] = pi_dot_u8_shared(acc[0][j], pw_and8(raw, 0x03), a);
        fa[0][j] = pi_dot_u8_shared(fa[0][j], pw_and8(raw, 0x0C), a + 4 * kRowGroup);
        fa[1][j] = pi_dot_u8_shared(fa[1][j], pw_and8(raw, 0x30), a + 8 * kRowGroup);
        fa[2][j] = pi_dot_u8_shared(fa[2][j], pw_and8(raw, 0xC0), a + 12 * kRowGroup);
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < RP; j++)
      acc[0][j] = pi_add(pi_add(acc[0][j], pi_srai(fa[0][j], 2)), pi_add(pi_srai(fa[1][j], 4), pi_srai(fa[2][j], 6)));
  } else
#endif
  for (int64_t c = 0; c < K / 4; c += 8, a += 32 * kRowGroup) {  // K is whole blocks of 32: 8 chunks
    if constexpr (kTernary) {
#pragma GCC unroll 2
      for (int v = 0; v < 2; v++, q += 64) {
        pw raw[RP], w[RP];
#pragma GCC unroll 4
        for (int j = 0; j < RP; j++) {
          raw[j] = pw_load(q + j * pstride);
          if (RT == 1) prefetch_block(q + j * pstride + kTernaryPrefetch, 64);
        }
        static_for<4>([&](auto F) {  // the 2-bit field F of every byte: chunk 4v + F
#pragma GCC unroll 4
          for (int j = 0; j < RP; j++) w[j] = pw_bits<2 * F, 3>(raw[j]);
          step(w, 4 * v + F);
        });
      }
    } else {
#pragma GCC unroll 8
      for (int u = 0; u < 8; u++) {
        pw w[RP];
#pragma GCC unroll 4
        for (int j = 0; j < RP; j++) w[j] = pw_unoffset(pw_load(q + 64 * u + j * pstride));
        step(w, u);
      }
      q += 512;
    }
  }
  // fully unrolled, as every loop over acc: an index left at run time would keep acc in memory
  constexpr int32_t kBias = kTernary ? 1 : kS8Bias;
#pragma GCC unroll 4
  for (int j = 0; j < RP; j++) {
    const pf d = pf_load_f16(p + j * pstride);
#pragma GCC unroll 8
    for (int t = 0; t < RT; t++)
      pf_store(y + t * ldy + kPanel * j,
               pf_fma_i(pi_add(acc[t][j], pi_set1(-kBias * xsum[t])), pf_scale(d, xd[t]), pf_zero()),
               bias ? bias + kPanel * j : nullptr, j == RP - 1 ? n_last : (int)kPanel);
  }
}

// rt tokens (up to RT) x np panels (up to RP)
template <int RT, int RP, bool kTernary>
inline void q8_rows_part(int rt, int np, const int8_t* a, const float* xd, const int32_t* xsum, const uint8_t* p,
                         int64_t pstride, int64_t K, const float* bias, float* y, int64_t ldy, int n_last) {
  if constexpr (RT > 1) {
    if (rt < RT) return q8_rows_part<RT - 1, RP, kTernary>(rt, np, a, xd, xsum, p, pstride, K, bias, y, ldy, n_last);
  }
  if constexpr (RP > 1) {
    if (np < RP) return q8_rows_part<RT, RP - 1, kTernary>(rt, np, a, xd, xsum, p, pstride, K, bias, y, ldy, n_last);
  }
  q8_rows_tile<RT, RP, kTernary>(a, xd, xsum, p, pstride, K, bias, y, ldy, n_last);
}

static_assert(kRowGroup % kRowTileT == 0, "a tile's tokens lie in one group");

template <bool kTernary>
void qmatmul_q8_rows(const int8_t* xq, const float* xd, const int32_t* xsum, const void* wv, const float* bias,
                     float* y, int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const uint8_t* w = (const uint8_t*)wv;
  const int64_t pstride = kTernary ? ternary_panel_bytes(K) : row_panel_bytes(K);
  const int64_t P = T == 1 ? kRowDecodeP : kRowTileP;
  constexpr int64_t kChunk = 64;  // tokens whose activations stay in L2 while the panels stream past
  for (int64_t t0 = 0; t0 < T; t0 += kChunk) {
    const int64_t t1 = std::min(T, t0 + kChunk);
    for (int64_t o = o0; o < o1; o += P * kPanel) {
      const int np = (int)std::min<int64_t>(P, (o1 - o + kPanel - 1) / kPanel);
      const int n_last = (int)std::min<int64_t>(kPanel, o1 - o - (np - 1) * kPanel);
      const uint8_t* p = w + (o / kPanel) * pstride;
      const float* b = bias ? bias + o : nullptr;
      if (T == 1) {
        q8_rows_part<1, kRowDecodeP, kTernary>(1, np, xq, xd, xsum, p, pstride, K, b, y + o, ldy, n_last);
        continue;
      }
      for (int64_t t = t0; t < t1; t += kRowTileT) {
        const int8_t* a = xq + t / kRowGroup * kRowGroup * K + 4 * (t % kRowGroup);
        q8_rows_part<kRowTileT, kRowTileP, kTernary>((int)std::min<int64_t>(kRowTileT, t1 - t), np, a, xd + t,
                                                     xsum + t, p, pstride, K, b, y + t * ldy + o, ldy, n_last);
      }
    }
  }
}

#define EF_QPANEL_Q8_ROWS qmatmul_q8_rows<false>, qmatmul_q8_rows<true>

}  // namespace
}  // namespace ef
