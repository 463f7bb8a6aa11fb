// AMX (Sapphire Rapids and later Xeons): the avx512bf16 table, whose products of several tokens run on the tile
// unit instead: bf16 panels through TDPBF16PS, row-scaled q8_0 panels ("int8") through TDPBSUD, block formats
// through TDPBSSD per block of 32 k (from 16 tokens) or, for long prompts (all but the grid i-quants), decoded
// to bf16 tiles for TDPBF16PS. Decode steps and short inputs keep the AVX-512 kernels (a tile is 16 tokens; below
// kAmxMinBf16 / kAmxMinInt8 / kAmxMinBlocks the padding costs more than the tiles save).
//
// The panel layouts of quant.h are already what a B tile wants: a bf16 panel's 32 k are 16 rows of [16 outputs][2
// bf16] and a row-scaled panel's 64 k are 16 rows of [16 outputs][4 bytes], 64 bytes a row. The activations (the A
// tiles) are rows of tokens: x rounded to bf16 as avx512bf16 rounds it, or the int8 rows transposed out of
// quantize_rows_q8's groups of 8. Integer sums are exact and meet the scales in the AVX-512 kernel's float steps,
// so int8 outputs equal avx512vnni's bit for bit; bf16 outputs differ from avx512bf16's by summation order.
//
// Compiled once, with the avx512bf16 copy's flags plus -mamx-tile -mamx-bf16 -mamx-int8 (cmake/EfIsa.cmake).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/kernel_tables.h"
#include "cpu/simd.h"
// after simd.h: the panel primitives (pw_nibbles, pw_bit_to, pf_fma_i, pf_store ...) the AVX-512 kernels' float steps
// are written with, and their scratch line
#include "cpu/qpanel.h"

namespace ef {
namespace cpu {
namespace {

// Fewer tokens than these: the AVX-512 kernels (bf16: 3 tokens break even on TinyLlama's shapes, int8: 8 to 16)
constexpr int64_t kAmxMinBf16 = 4, kAmxMinInt8 = 12;
constexpr int64_t kTok = 16;           // tokens of an A tile; a B tile is one panel's 16 outputs
static_assert(kTok == kBf16TileTokens, "the tile layout's blocks are A tiles");
constexpr int64_t kStepBytes = 64;     // bytes of k per tile row: 32 bf16, 64 int8
constexpr int64_t kTileBytes = 1024;   // 16 rows of 64 bytes

// Tiles 0-3: a 2 x 2 block of 16 x 16 sums (tokens x outputs); 4-5: two A tiles (16 tokens each); 6-7: two B tiles
// (a panel each). Every tile 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// The configuration is per thread, and other code in the process (oneDNN under PyTorch) may load its own between
// two calls: each call loads it once its buffers are in place, and releases the tiles at its end (no tile data for
// the OS to save at a switch). Explicit calls, not a destructor: nothing between them can throw, and an object
// with a destructor would bring exception-handling symbols into this copy (tools/check_isa_isolation.py).
inline void tiles_on(const TileConfig& cfg) { _tile_loadconfig(&cfg); }
inline void tiles_off() { _tile_release(); }

// Every tile 16 rows of 64 bytes (the bf16 and row-scaled products).
const TileConfig& full_tiles() {
  static const TileConfig cfg = [] {
    TileConfig c;
    for (int i = 0; i < 8; i++) {
      c.colsb[i] = 64;
      c.rows[i] = 16;
    }
    return c;
  }();
  return cfg;
}

// The block-quantized products (32 k a step): sums 0-1 (16 x 16 int32), activations 2-3 (16 tokens x 32 bytes),
// weights 4-5 (8 rows of 4 k x 16 outputs).
const TileConfig& block_tiles() {
  static const TileConfig cfg = [] {
    TileConfig c;
    for (int i = 0; i < 6; i++) {
      c.colsb[i] = i < 2 || i >= 4 ? 64 : 32;
      c.rows[i] = i >= 4 ? 8 : 16;
    }
    return c;
  }();
  return cfg;
}

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Per-thread scratch, `n` elements of T on 64-byte lines (qpanel.h's line type: a std::vector<float> or <int8_t>
// here would emit weak copies of its members, compiled for this ISA, for the linker to pick for generic code too;
// tools/check_isa_isolation.py).
template <typename T>
T* scratch(std::vector<ScratchLine>& v, int64_t n) {
  const size_t lines = (size_t)((n * (int64_t)sizeof(T) + 63) / 64);
  if (v.size() < lines) v.resize(lines);
  return (T*)v.data();
}

#if defined(__GNUC__)
#define EF_AMX_INLINE __attribute__((always_inline))
#else
#define EF_AMX_INLINE
#endif

// Tokens [0, nt) (A: a_tile(t) the first of the 16 rows from token t, all readable, `lda` bytes apart, k-step s
// `astep` bytes on) times outputs [o0, o1) (panels `pstride` bytes apart; panel p's k-step s at p + first + s *
// 1024): two panels and 32 tokens a block, `steps` k-steps. `tail` (if not null): the last step's B tiles, two of
// 1024 bytes, in place of the panels' (filled by fill_tail(panel, buffer) for each pair of panels). out(t, o,
// sums, n): token t's 16 sums of the panel at output o, its first n in use.
template <bool kInt8, typename ATile, typename FillTail, typename Out>
void amx_product(ATile&& a_tile, int64_t lda, int64_t astep, int64_t nt, const uint8_t* w, int64_t pstride,
                 int64_t first, int64_t o0, int64_t o1, int64_t steps, bool tail, FillTail&& fill_tail, Out&& out) {
  using Acc = std::conditional_t<kInt8, int32_t, float>;
  alignas(64) Acc c[4][256];
  alignas(64) uint8_t tails[2][kTileBytes];
  for (int64_t o = o0; o < o1; o += 2 * kPanel) {
    const bool two = o1 - o > kPanel;
    const uint8_t* p0 = w + (o / kPanel) * pstride + first;
    const uint8_t* p1 = two ? p0 + pstride : p0;  // (one panel: its sums twice, the second copy unused)
    const int64_t full = tail ? steps - 1 : steps;
    if (tail) {
      fill_tail(p0, tails[0]);
      fill_tail(p1, tails[1]);
    }
    for (int64_t t = 0; t < nt; t += 2 * kTok) {
      const uint8_t* a0 = a_tile(t);
      const uint8_t* a1 = nt - t > kTok ? a_tile(t + kTok) : a0;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      auto step = [&](const uint8_t* b0, const uint8_t* b1, int64_t s) {
        _tile_loadd(4, a0 + astep * s, lda);
        _tile_loadd(5, a1 + astep * s, lda);
        _tile_loadd(6, b0, 64);
        _tile_loadd(7, b1, 64);
        if constexpr (kInt8) {
          _tile_dpbsud(0, 4, 6);
          _tile_dpbsud(1, 4, 7);
          _tile_dpbsud(2, 5, 6);
          _tile_dpbsud(3, 5, 7);
        } else {
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
      };
      for (int64_t s = 0; s < full; s++) step(p0 + kTileBytes * s, p1 + kTileBytes * s, s);
      if (tail) step(tails[0], tails[1], full);
      _tile_stored(0, c[0], 64);
      _tile_stored(1, c[1], 64);
      _tile_stored(2, c[2], 64);
      _tile_stored(3, c[3], 64);
      for (int i = 0; i < 2; i++)
        for (int r = 0; r < kTok && t + i * kTok + r < nt; r++) {
          out(t + i * kTok + r, o, c[2 * i] + 16 * r, (int)std::min<int64_t>(kPanel, o1 - o));
          if (two) out(t + i * kTok + r, o + kPanel, c[2 * i + 1] + 16 * r, (int)std::min<int64_t>(kPanel, o1 - o - kPanel));
        }
    }
  }
}

// Tokens per pass over the panels: their A rows (~1 MB, half of L2) stay in L2 while the panels stream past (1.1B,
// bf16, 512 tokens: 430 tok/s at 512 KB, 467 at 1 MB, 407 at 1.5 MB).
inline int64_t chunk_tokens(int64_t row_bytes) {
  return std::clamp<int64_t>((1 << 20) / row_bytes / (2 * kTok) * (2 * kTok), 2 * kTok, 512);
}

const KernelTable& base() { return *kernels_avx512bf16(); }

// bf16 panels (quant.h; pstride = ldw elements, 0: 16 K) times T tokens of bf16 activations in the tile layout
// (cpu.h: bf16_tile_at; the last block's rows past T zero), in chunks of tokens whose A tiles stay in L2.
void bf16_tiles_amx(const bf16_t* xt, const void* wv, int64_t ldw, const float* bias, float* y, int64_t ldy, int64_t T,
                    int64_t o0, int64_t o1, int64_t K) {
  const int64_t pstride = 2 * (ldw ? ldw : kPanel * K);
  const int64_t chunk = chunk_tokens(2 * K);
  tiles_on(full_tiles());
  for (int64_t c0 = 0; c0 < T; c0 += chunk) {
    const int64_t nt = std::min(chunk, T - c0);
    amx_product<false>(
        [&](int64_t t) { return (const uint8_t*)(xt + bf16_tile_at(c0 + t, 0, K)); }, 64, kTileBytes, nt,
        (const uint8_t*)wv, pstride, 0, o0, o1, K / 32, false, [](const uint8_t*, uint8_t*) {},
        [&](int64_t t, int64_t o, const float* s, int n) {
          pf_store(y + (c0 + t) * ldy + o, pf_load(s), bias ? bias + o : nullptr, n);
        });
  }
  tiles_off();
}

// (linear_group gives the tile layout from kAmxMinBf16 tokens where K is a multiple of 32: bf16x_tiles_from)
void matmul_bf16x_amx(const uint16_t* xb, int64_t ldx, const void* wv, int64_t ldw, const float* bias, float* y,
                      int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  if (T < kAmxMinBf16 || K % 32)  // (K % 32: no packed matrix; only a cache's panels might have one)
    return base().matmul_panel_bf16x(xb, ldx, wv, ldw, bias, y, ldy, T, o0, o1, K);
  bf16_tiles_amx((const bf16_t*)xb, wv, ldw, bias, y, ldy, T, o0, o1, K);
}

// bf16 panels times f32 activations: rounded here into the tile layout (linear_group rounds them once per group
// instead)
void matmul_bf16_amx(const float* x, int64_t ldx, const void* wv, int64_t ldw, const float* bias, float* y,
                     int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  if (T < kAmxMinBf16 || K % 32)
    return base().matmul_panel[(int)DType::BF16](x, ldx, wv, ldw, bias, y, ldy, T, o0, o1, K);
  thread_local std::vector<ScratchLine> buf;
  const int64_t rows = round_up(T, kTok), steps = K / 32;
  bf16_t* xt = scratch<bf16_t>(buf, rows * K);
  for (int64_t t = 0; t < rows; t++)
    for (int64_t s = 0; s < steps; s++) {
      bf16_t* d = xt + bf16_tile_at(t, s, K);
      if (t < T) row_to_bf16(x + t * ldx + 32 * s, d, 32);
      else std::memset((void*)d, 0, 64);
    }
  bf16_tiles_amx(xt, wv, ldw, bias, y, ldy, T, o0, o1, K);
}

// Row-scaled q8_0 panels (quant.h: 64-byte header of 16 f16 scales, then K / 4 chunks [16 rows][4 bytes + 128]).
void q8_rows_amx(const int8_t* xq, const float* xd, const int32_t* xsum, const void* wv, const float* bias, float* y,
                 int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  if (T < kAmxMinInt8) return base().q8_0_rows(xq, xd, xsum, wv, bias, y, ldy, T, o0, o1, K);
  const int64_t Kp = round_up(K, kStepBytes), steps = Kp / kStepBytes, pstride = row_panel_bytes(K);
  const int64_t chunk = chunk_tokens(Kp);
  thread_local std::vector<ScratchLine> abuf_lines;
  int8_t* abuf = scratch<int8_t>(abuf_lines, chunk * Kp);
  // token t's 4 bytes of chunk g (4 k) at 32 g + 4 (t % 8) of its group: 16 chunks of one token gathered at once
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32((int)kRowGroup));
  // A tiles in bf16's tile layout (cpu.h: bf16_tile_at, 64 bytes a row), a step of 64 int8 k taking the place of
  // 32 bf16 k: token t's step s in the chunk's buffer
  const auto at = [&](int64_t t, int64_t s) { return abuf + 2 * bf16_tile_at(t, s, Kp / 2); };
  tiles_on(full_tiles());
  for (int64_t c0 = 0; c0 < T; c0 += chunk) {  // c0: a multiple of 32, so of kRowGroup
    const int64_t nt = std::min(chunk, T - c0);
    const int64_t rows = round_up(nt, kTok);
    for (int64_t t = 0; t < nt; t++) {
      const int8_t* g = xq + (c0 + t) / kRowGroup * kRowGroup * K + 4 * ((c0 + t) % kRowGroup);
      int64_t k = 0;
      for (; k + 64 <= K; k += 64)
        _mm512_store_si512(at(t, k / 64), _mm512_i32gather_epi32(idx, (const void*)(g + k * kRowGroup), 4));
      if (k < K)  // 32 k left: 8 chunks, the rest of the step zero
        _mm512_store_si512(at(t, k / 64), _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), 0x00FF, idx,
                                                                      (const void*)(g + k * kRowGroup), 4));
    }
    for (int64_t t = nt; t < rows; t++)
      for (int64_t s = 0; s < steps; s++) _mm512_store_si512(at(t, s), _mm512_setzero_si512());
    amx_product<true>(
        [&](int64_t t) { return (const uint8_t*)at(t, 0); }, 64, kTileBytes, nt, (const uint8_t*)wv, pstride, 64, o0,
        o1, steps, Kp != K,
        [&](const uint8_t* p, uint8_t* out) {  // the last 32 k: 8 rows of the panel, 8 of zeros
          std::memcpy(out, p + kTileBytes * (Kp / kStepBytes - 1), kTileBytes / 2);
          std::memset(out + kTileBytes / 2, 0, kTileBytes / 2);
        },
        [&](int64_t t, int64_t o, const int32_t* s, int n) {
          // the AVX-512 kernel's steps (qpanel_rows.h): float(sum - 128 xsum) * (d xd) + 0, then the bias
          const int64_t tt = c0 + t;
          const pf d = pf_load_f16((const uint8_t*)wv + (o / kPanel) * pstride);
          const pi sum = pi_add(_mm512_load_si512(s), pi_set1(-kS8Bias * xsum[tt]));
          pf_store(y + tt * ldy + o, pf_fma_i(sum, pf_scale(d, xd[tt]), pf_zero()), bias ? bias + o : nullptr, n);
        });
  }
  tiles_off();
}

// -- Block-quantized panels (quant.h) times 8-bit activation blocks (BlockQ8, the first level: prompts) ------------
// Each panel's blocks are decoded once per call into B tiles of signed bytes, 32 k a tile (8 rows of [16 outputs][4
// bytes]) and a float scale per output (and a min for the formats with them), then every tile of 16 tokens runs
// over them: one TDPBSSD per block, its sums meeting the scales in the float steps of the AVX-512 kernels
// (qpanel.h), in the same order: the outputs equal avx512vnni's bit for bit.
struct Decoded {
  uint8_t* b;     // [blocks][512]: the B tiles
  float* scale;   // [blocks][16]
  float* mins;    // [blocks][16] (formats with mins: facc += mins * xm, xm = -d * sum of the activation block)
};

// q8_0 (544 bytes a block): 16 f16 scales | the B tile as it is
struct AmxQ8_0 {
  static constexpr DType kType = DType::Q8_0;
  static constexpr int64_t kBlock = PanelQ8_0<false>::kBlock, kBytes = PanelQ8_0<false>::kBytes;
  static constexpr bool kMins = false, kPairMins = false;
  static void decode(const uint8_t* p, Decoded& d, int64_t s) {
    std::memcpy(d.b + 512 * s, p + 32, 512);
    _mm512_storeu_ps(d.scale + 16 * s, pf_load_f16(p));
  }
};

// q4_0, q4_1, q5_0, q5_1 (32 k): 16 f16 d | (q4_1, q5_1: 16 f16 m |) 4 chunks of [16 rows][4 bytes], chunk c: low
// nibbles k 4c.., high k 16 + 4c.. | (q5: a vector of fifth bits, row r's byte 4r + i, bit c: k 4c + i, bit 4 + c:
// k 16 + 4c + i). Values less their offset (8, 16; none with m); a min of -m (times -d * sum: m d sum exactly).
template <DType T>
struct AmxQ32 {
  using P = PanelQ32<T>;  // (its layout: sizes, offset, the chunks' unpacking)
  static constexpr DType kType = T;
  static constexpr int64_t kBlock = P::kBlock, kBytes = P::kBytes;
  static constexpr bool kMins = P::kM, kPairMins = false;  // (qpanel.h: each block's sums, then its min)
  static void decode(const uint8_t* p, Decoded& d, int64_t s) {
    const __m512i off = _mm512_set1_epi8((char)P::kOffset);
    uint8_t* b = d.b + 512 * s;
    pw H = _mm512_setzero_si512();
    if constexpr (P::k5) H = pw_load(p + P::kQs + 256);
    static_for<4>([&](auto C) {
      constexpr int c = C;
      pw lo, hi;
      P::template chunk<c>(p, H, lo, hi);
      pw_store(b + 64 * c, _mm512_sub_epi8(lo, off));
      pw_store(b + 64 * (4 + c), _mm512_sub_epi8(hi, off));
    });
    _mm512_storeu_ps(d.scale + 16 * s, pf_load_f16(p));
    if constexpr (P::kM) _mm512_storeu_ps(d.mins + 16 * s, _mm512_sub_ps(pf_zero(), pf_load_f16(p + 32)));
  }
};

// q4_k / q5_k (256 k): 16 f16 d | 16 f16 dmin | 8 x 16 u8 scales | 8 x 16 u8 mins | 32 chunks, chunk 8j + g: low
// nibbles sub-block 2j k 4g.., high sub-block 2j + 1 | (q5_k: 8 vectors of fifth bits, vector g, byte 4r + i, bit j:
// sub-block j's k 4g + i). Scales d * sc, mins dmin * m (times -d * sum).
template <bool k5>
struct AmxQK {
  static constexpr DType kType = k5 ? DType::Q5_K : DType::Q4_K;
  static constexpr int64_t kBlock = PanelQK<k5>::kBlock, kBytes = PanelQK<k5>::kBytes;
  static constexpr bool kMins = true, kPairMins = true;  // (qpanel.h: both sub-blocks' sums, then both mins)
  static void decode(const uint8_t* p, Decoded& d, int64_t s) {  // s: the first of its 8 sub-blocks
    const pf dd = pf_load_f16(p), dmin = pf_load_f16(p + 32);
    static_for<4>([&](auto J) {
      constexpr int j = J;
      uint8_t* lo = d.b + 512 * (s + 2 * j);
      for (int g = 0; g < 8; g++) {
        pw l, h;
        PanelQK<k5>::template chunk<j>(p, g, l, h);
        pw_store(lo + 64 * g, l);
        pw_store(lo + 512 + 64 * g, h);
      }
    });
    for (int i = 0; i < 8; i++) {
      _mm512_storeu_ps(d.scale + 16 * (s + i), pf_mul(dd, pf_load_u8(p + 64 + 16 * i)));
      _mm512_storeu_ps(d.mins + 16 * (s + i), pf_mul(dmin, pf_load_u8(p + 192 + 16 * i)));
    }
  }
};

// iq4_nl (32 k: q4_0's panel) and iq4_xs (256 k: 16 f16 d | 8 x 16 int8 scales | 8 sub-blocks of q4_0's chunks):
// the nibbles index kIQ4Values; scales d (iq4_nl) or d times the sub-block's scale.
template <bool kXS>
struct AmxIQ4 {
  static constexpr DType kType = kXS ? DType::IQ4_XS : DType::IQ4_NL;
  static constexpr int64_t kBlock = PanelIQ4<kXS>::kBlock, kBytes = PanelIQ4<kXS>::kBytes;
  static constexpr bool kMins = false, kPairMins = false;
  static void decode(const uint8_t* p, Decoded& d, int64_t s) {
    const pf dd = pf_load_f16(p);
    for (int ib = 0; ib < (kXS ? 8 : 1); ib++) {
      const uint8_t* q = p + (kXS ? 160 + 256 * ib : 32);
      uint8_t* b = d.b + 512 * (s + ib);
      for (int c = 0; c < 4; c++) {
        pw lo, hi;
        pw_nibbles(pw_load(q + 64 * c), lo, hi);
        pw_store(b + 64 * c, pw_lut16(lo, kIQ4Values));
        pw_store(b + 64 * (4 + c), pw_lut16(hi, kIQ4Values));
      }
      _mm512_storeu_ps(d.scale + 16 * (s + ib), kXS ? pf_mul(dd, pf_load_s8(p + 32 + 16 * ib)) : dd);
    }
  }
};

// One panel's blocks (K values a row, at p) decoded by F into dec: a B tile, scales (and mins) per 32 k
template <class F>
void decode_panel(const uint8_t* p, int64_t K, Decoded& dec) {
  for (int64_t i = 0; i < K / F::kBlock; i++) F::decode(p + i * F::kBytes, dec, i * (F::kBlock / 32));
}

constexpr int64_t kAmxMinBlocks = 16;  // fewer tokens: the AVX-512 kernels (each panel decoded once per call)

template <class F>
void qmatmul_amx(const BlockQ8* xq, int64_t ldxq, const void* wv, int64_t row_bytes, const float* bias, float* y,
                 int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const KernelTable& b0 = base();
  const auto fallback = F::kType == DType::Q8_0 ? b0.q8_0_panel_one_level : b0.qmatmul_panel[(int)F::kType];
  if (T < kAmxMinBlocks) return fallback(xq, ldxq, wv, row_bytes, bias, y, ldy, T, o0, o1, K);
  const int64_t nb = K / kQ8Block, pb = K / F::kBlock * F::kBytes, tiles_t = (T + 15) / 16;
  thread_local std::vector<ScratchLine> wbuf, abuf, fbuf;
  Decoded dec;
  dec.b = scratch<uint8_t>(wbuf, 512 * nb);
  uint8_t* atiles = scratch<uint8_t>(abuf, 512 * nb * tiles_t);
  float* f = scratch<float>(fbuf, 32 * nb + 32 * nb * tiles_t);
  dec.scale = f;
  dec.mins = f + 16 * nb;
  float* xd = f + 32 * nb;
  float* xm = xd + 16 * nb * tiles_t;
  // The activations once per call as A tiles: tile i, block s at atiles[i * nb + s], 16 rows of 32 bytes (a token's
  // blocks lie 80 bytes apart: a tile straight from them reads 16 lines, half of each), their scales (and -d *
  // sum for the mins) beside them; rows past T zero.
  for (int64_t i = 0; i < tiles_t; i++)
    for (int64_t r = 0; r < 16; r++) {
      const int64_t t = 16 * i + r;
      for (int64_t b = 0; b < nb; b++) {
        uint8_t* a = atiles + 512 * (i * nb + b) + 32 * r;
        float& d = xd[(i * nb + b) * 16 + r];
        float& m = xm[(i * nb + b) * 16 + r];
        if (t < T) {
          const BlockQ8& x = xq[t * ldxq + b];
          std::memcpy(a, x.q, 32);
          d = x.d;
          m = -x.d * (float)((int32_t)x.sum[0] + x.sum[1]);  // (qpanel.h's xm: its float steps)
        } else {
          std::memset(a, 0, 32);
          d = m = 0.f;
        }
      }
    }
  tiles_on(block_tiles());
  alignas(64) int32_t c[2][256];
  for (int64_t o = o0; o < o1; o += kPanel) {
    const uint8_t* p = (const uint8_t*)wv + (o / kPanel) * pb;
    decode_panel<F>(p, K, dec);
    const int n = (int)std::min<int64_t>(kPanel, o1 - o);
    for (int64_t i = 0; i < tiles_t; i++) {
      const uint8_t* at = atiles + 512 * i * nb;
      const float* dt = xd + i * nb * 16;
      const float* mt = xm + i * nb * 16;
      const int rows = (int)std::min<int64_t>(16, T - 16 * i);
      pf facc[16];
#pragma GCC unroll 16
      for (int r = 0; r < 16; r++) facc[r] = pf_zero();
      // one block's sums (tile u) into the float sums: float(sum) * (scale * d) + facc, as pf_fma_i(.., pf_scale(..))
      auto meet = [&](int u, int64_t s) EF_AMX_INLINE {
        const pf sc = pf_load(dec.scale + 16 * s);
        const float* d = dt + 16 * s;
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++) facc[r] = pf_fma_i(_mm512_load_si512(c[u] + 16 * r), pf_scale(sc, d[r]), facc[r]);
      };
      auto mins_of = [&](int64_t s) EF_AMX_INLINE {
        const pf mn = pf_load(dec.mins + 16 * s);
        const float* m = mt + 16 * s;
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++) facc[r] = pf_fma(mn, pf_set1(m[r]), facc[r]);
      };
      // Block s's sums are stored from tile s % 2 and met one block later, while block s + 1's product runs: a
      // load right behind a tile store waits for the store to reach the cache (the wait was a fifth of the time)
      auto finish = [&](int u, int64_t s) EF_AMX_INLINE {
        meet(u, s);
        if constexpr (F::kMins && F::kPairMins) {  // (q4_k's order: both sub-blocks' sums, then both mins)
          if (s & 1) {
            mins_of(s - 1);
            mins_of(s);
          }
        } else if constexpr (F::kMins) {
          mins_of(s);
        }
      };
      for (int64_t s = 0; s < nb; s += 2) {
        _tile_loadd(2, at + 512 * s, 32);
        _tile_loadd(4, dec.b + 512 * s, 64);
        _tile_zero(0);
        _tile_dpbssd(0, 2, 4);
        _tile_stored(0, c[0], 64);
        if (s > 0) finish(1, s - 1);
        if (s + 1 == nb) {  // (an odd number of blocks of 32: the 32-k formats)
          finish(0, s);
          break;
        }
        _tile_loadd(3, at + 512 * (s + 1), 32);
        _tile_loadd(5, dec.b + 512 * (s + 1), 64);
        _tile_zero(1);
        _tile_dpbssd(1, 3, 5);
        _tile_stored(1, c[1], 64);
        finish(0, s);
        if (s + 2 == nb) finish(1, s + 1);
      }
#pragma GCC unroll 16
      for (int r = 0; r < 16; r++) {
        if (r >= rows) break;
        pf_store(y + (16 * i + r) * ldy + o, facc[r], bias ? bias + o : nullptr, n);
      }
    }
  }
  tiles_off();
}

// -- Block-quantized panels times bf16 activations (long prompts) ----------------------------------------------------
// The 8-bit products above meet each block's sums with its scales in float steps that bound their speed (~340
// GMAC/s a core); from kAmxBf16Blocks tokens each panel's blocks are instead decoded to bf16 B tiles once per
// chunk of tokens (w = scale * q - min, as the float steps weigh the sums: the min's term is -min times the
// activations' sum), and the tokens' bf16 tiles multiply them as bf16_tiles_amx's do. The values are exact in
// bf16's 8 bits before the scale; rounding the scaled weight adds at most 2^-9 of it, less than the 8-bit
// activations' error it replaces (1.1B q8_0, relative RMS error of the logits against f32: 0.033 against 0.047
// for the one-level 8-bit products; q6_k 0.096 against 0.102).
constexpr int64_t kAmxBf16Blocks = 64;
constexpr int64_t kDecodedBytes = 8 << 20;  // a thread's decoded bf16 panels at a time

// 8 int8 rows of [16 outputs][4 k] (32 k: rows 0-3 scaled by sc0 less mn0, 4-7 by sc1 less mn1) -> a bf16 B tile
// (16 rows of [16 outputs][2 k]) at out: w = (q - off) * sc - mn, rounded to nearest even
inline void rows_to_bf16(const uint8_t* q8, pf sc0, pf sc1, pf mn0, pf mn1, int off, uint8_t* out) {
  const __m512i half = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1), hi = _mm512_set1_epi32((int)0xffff0000u);
  const __m512i o = _mm512_set1_epi32(off);
  for (int r = 0; r < 8; r++) {
    const __m512i q = _mm512_loadu_si512(q8 + 64 * r);
    const pf sc = r < 4 ? sc0 : sc1, mn = r < 4 ? mn0 : mn1;
    __m512i u[4];
    static_for<4>([&](auto J) {
      constexpr int j = J;  // k 4r + j of each output: byte j of its lane
      const __m512i v = _mm512_sub_epi32(_mm512_srai_epi32(_mm512_slli_epi32(q, 24 - 8 * j), 24), o);
      const __m512i w = _mm512_castps_si512(_mm512_sub_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), sc), mn));
      u[j] = _mm512_add_epi32(w, _mm512_add_epi32(half, _mm512_and_si512(_mm512_srli_epi32(w, 16), one)));
    });
    _mm512_store_si512(out + 128 * r, _mm512_or_si512(_mm512_srli_epi32(u[0], 16), _mm512_and_si512(u[1], hi)));
    _mm512_store_si512(out + 128 * r + 64, _mm512_or_si512(_mm512_srli_epi32(u[2], 16), _mm512_and_si512(u[3], hi)));
  }
}

// One panel's blocks (K values a row) -> its bf16 B tiles, K / 32 of 1 KB at out: through the 8-bit decoders
// (w = scale * q - min, as the float steps weigh the sums: the min's term is -min times the activations' sum)
template <class F>
struct ToBf16 {
  static constexpr int64_t kBlock = F::kBlock, kBytes = F::kBytes;
  static void panel(const uint8_t* src, int64_t K, Decoded& dec, uint8_t* out) {
    decode_panel<F>(src, K, dec);
    for (int64_t s = 0; s < K / 32; s++) {
      const pf sc = pf_load(dec.scale + 16 * s), mn = F::kMins ? pf_load(dec.mins + 16 * s) : pf_zero();
      rows_to_bf16(dec.b + 512 * s, sc, sc, mn, mn, 0, out + s * kTileBytes);
    }
  }
};

// The formats with a scale (and min) per 16 k and 256-k blocks, which have no 8-bit tile decoder, straight to
// bf16: group(p, d, u, rows, sc, mn) writes 16-k group u of block p (d: its f16 scale) as 4 int8 rows of [16
// outputs][4 k] and returns its scale and min; two groups make a tile, their values less `off`.
template <int64_t kBlockBytes, int kOff, typename Group>
void groups16_to_bf16(const uint8_t* src, int64_t K, Decoded& dec, uint8_t* out, Group&& group) {
  for (int64_t b = 0; b < K / 256; b++) {
    const uint8_t* p = src + b * kBlockBytes;
    const pf d = pf_load_f16(p);
    for (int u = 0; u < 16; u += 2) {  // two groups of 16 k: one tile of 32 (rows 0-3, then 4-7)
      pf sc[2], mn[2];
      static_for<2>([&](auto H) { group(p, d, u + H, H, dec.b + 256 * H, sc[H], mn[H]); });
      rows_to_bf16(dec.b, sc[0], sc[1], mn[0], mn[1], kOff, out + (b * 8 + u / 2) * kTileBytes);
    }
  }
}

// q6_k (16 f16 d | 16 x 16 int8 scales | 16 groups of 16 k, each A, B, H of 64 bytes; qpanel.h's PanelQ6_K):
// w = d * sc * (q - 32)
struct Q6KToBf16 {
  static constexpr DType kType = DType::Q6_K;
  static constexpr int64_t kBlock = PanelQ6_K::kBlock, kBytes = PanelQ6_K::kBytes;
  static void panel(const uint8_t* src, int64_t K, Decoded& dec, uint8_t* out) {
    groups16_to_bf16<kBytes, 32>(src, K, dec, out, [](const uint8_t* p, pf d, int u, int, uint8_t* rows, pf& sc,
                                                      pf& mn) {
      pw g[4];
      PanelQ6_K::group(p, d, u, g, sc);
      for (int i = 0; i < 4; i++) pw_store(rows + 64 * i, g[i]);
      mn = pf_zero();
    });
  }
};

// q3_k (w = d * sc * (q - 4), q 2 bits | a high bit << 2) and q2_k (w = d * sc * q - dmin * m, q 2 bits); qpanel.h's
// PanelQLow layout
template <bool kQ3>
struct QLowToBf16 {
  using P = PanelQLow<kQ3>;
  static constexpr DType kType = kQ3 ? DType::Q3_K : DType::Q2_K;
  static constexpr int64_t kBlock = P::kBlock, kBytes = P::kBytes;
  static void panel(const uint8_t* src, int64_t K, Decoded& dec, uint8_t* out) {
    groups16_to_bf16<kBytes, kQ3 ? 4 : 0>(src, K, dec, out, [](const uint8_t* p, pf d, int u, auto H, uint8_t* rows,
                                                               pf& sc, pf& mn) {
      constexpr int h = H;  // (the group's half of the tile: which high bits q3_k's takes)
      pw g[4];
      mn = pf_zero();  // (q3_k: none)
      P::template group<h>(p, d, u, g, sc, mn);
      for (int i = 0; i < 4; i++) pw_store(rows + 64 * i, g[i]);
    });
  }
};

// xt: T tokens of bf16 activations in the tile layout (linear_group gives it from qbf16x_from tokens)
template <class P>
void qmatmul_bf16x_amx(const uint16_t* xt, int64_t, const void* wv, int64_t, const float* bias, float* y, int64_t ldy,
                       int64_t T, int64_t o0, int64_t o1, int64_t K) {
  const int64_t nb = K / kQ8Block, pb = K / P::kBlock * P::kBytes, pbytes = nb * kTileBytes;
  const int64_t chunk = chunk_tokens(2 * K);
  thread_local std::vector<ScratchLine> wbuf, fbuf, tbuf;
  Decoded dec;
  dec.b = scratch<uint8_t>(wbuf, 512 * nb);
  float* f = scratch<float>(fbuf, 32 * nb);
  dec.scale = f;
  dec.mins = f + 16 * nb;
  // panels decoded once per call, as many at a time as fit kDecodedBytes (a 7B down product: 176 KB a panel), then
  // every chunk of tokens against them: decoding per chunk and pair of panels cost as much as the products where
  // long rows make the chunks short (K = 5632: 64 tokens)
  const int64_t group = std::max<int64_t>(2, kDecodedBytes / pbytes / 2 * 2) * kPanel;
  uint8_t* bt = scratch<uint8_t>(tbuf, std::min(group, round_up(o1 - o0, 2 * kPanel)) / kPanel * pbytes);
  for (int64_t g0 = o0; g0 < o1; g0 += group) {
    const int64_t g1 = std::min(o1, g0 + group);
    for (int64_t o = g0; o < g1; o += kPanel)
      P::panel((const uint8_t*)wv + (o / kPanel) * pb, K, dec, bt + (o - g0) / kPanel * pbytes);
    tiles_on(full_tiles());
    for (int64_t c0 = 0; c0 < T; c0 += chunk) {
      const int64_t nt = std::min(chunk, T - c0);
      amx_product<false>(
          [&](int64_t t) { return (const uint8_t*)(xt + bf16_tile_at(c0 + t, 0, K)); }, 64, kTileBytes, nt, bt,
          pbytes, 0, 0, g1 - g0, nb, false, [](const uint8_t*, uint8_t*) {},
          [&](int64_t t, int64_t oo, const float* s, int m) {
            pf_store(y + (c0 + t) * ldy + g0 + oo, pf_load(s), bias ? bias + g0 + oo : nullptr, m);
          });
    }
    tiles_off();
  }
}

KernelTable make_table() {
  KernelTable k = base();
  k.isa = Isa::AMX;
  k.matmul_panel[(int)DType::BF16] = matmul_bf16_amx;
  k.matmul_panel_bf16x = matmul_bf16x_amx;
  k.bf16x_tiles_from = kAmxMinBf16;
  k.q8_0_rows = q8_rows_amx;
  k.q8_0_panel_one_level = qmatmul_amx<AmxQ8_0>;
  k.qmatmul_panel[(int)DType::Q4_0] = qmatmul_amx<AmxQ32<DType::Q4_0>>;
  k.qmatmul_panel[(int)DType::Q4_1] = qmatmul_amx<AmxQ32<DType::Q4_1>>;
  k.qmatmul_panel[(int)DType::Q5_0] = qmatmul_amx<AmxQ32<DType::Q5_0>>;
  k.qmatmul_panel[(int)DType::Q5_1] = qmatmul_amx<AmxQ32<DType::Q5_1>>;
  k.qmatmul_panel[(int)DType::Q4_K] = qmatmul_amx<AmxQK<false>>;
  k.qmatmul_panel[(int)DType::Q5_K] = qmatmul_amx<AmxQK<true>>;
  k.qmatmul_panel[(int)DType::IQ4_NL] = qmatmul_amx<AmxIQ4<false>>;
  k.qmatmul_panel[(int)DType::IQ4_XS] = qmatmul_amx<AmxIQ4<true>>;
  k.qmatmul_panel_bf16x[(int)DType::Q4_0] = qmatmul_bf16x_amx<ToBf16<AmxQ32<DType::Q4_0>>>;
  k.qmatmul_panel_bf16x[(int)DType::Q4_1] = qmatmul_bf16x_amx<ToBf16<AmxQ32<DType::Q4_1>>>;
  k.qmatmul_panel_bf16x[(int)DType::Q5_0] = qmatmul_bf16x_amx<ToBf16<AmxQ32<DType::Q5_0>>>;
  k.qmatmul_panel_bf16x[(int)DType::Q5_1] = qmatmul_bf16x_amx<ToBf16<AmxQ32<DType::Q5_1>>>;
  k.qmatmul_panel_bf16x[(int)DType::Q4_K] = qmatmul_bf16x_amx<ToBf16<AmxQK<false>>>;
  k.qmatmul_panel_bf16x[(int)DType::Q5_K] = qmatmul_bf16x_amx<ToBf16<AmxQK<true>>>;
  k.qmatmul_panel_bf16x[(int)DType::IQ4_NL] = qmatmul_bf16x_amx<ToBf16<AmxIQ4<false>>>;
  k.qmatmul_panel_bf16x[(int)DType::IQ4_XS] = qmatmul_bf16x_amx<ToBf16<AmxIQ4<true>>>;
  k.qmatmul_panel_bf16x[(int)DType::Q6_K] = qmatmul_bf16x_amx<Q6KToBf16>;
  k.qmatmul_panel_bf16x[(int)DType::Q3_K] = qmatmul_bf16x_amx<QLowToBf16<true>>;
  k.qmatmul_panel_bf16x[(int)DType::Q2_K] = qmatmul_bf16x_amx<QLowToBf16<false>>;
  k.qmatmul_panel_bf16x[(int)DType::Q8_0] = qmatmul_bf16x_amx<ToBf16<AmxQ8_0>>;
  k.qbf16x_from = kAmxBf16Blocks;
  return k;
}

// At load time, after the avx512bf16 table's constant initialization (a function-local static would need a guard
// and an exception path: exception-handling symbols in this copy)
const KernelTable kTable = make_table();

}  // namespace

const KernelTable* kernels_amx() { return &kTable; }

}  // namespace cpu
}  // namespace ef
