// llama.cpp's 1- to 3-bit i-quants (iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s): each group of 8
// (iq1, iq2) or 4 (iq3) elements is an index into a codebook (a grid: iq_grids.cc), with sign bits (iq2, iq3)
// and an integer scale per 16 or 32 elements. Every type is read into one unpacked form (GridBlock), from
// which the dequantizer, the row kernels and the panels work; emit_grid_block writes the stored bytes back.
//
// Every element is d * (sc * kMul) * v exactly (no rounding anywhere: 11-bit d, 5-bit sc, 6-bit v), v the
// signed grid value: iq2 8 / 25 / 43, iq3 4 .. 62 (xxs) or 1 .. 15 (s), iq1 8 g +- 1 (g in -1 / 0 / 1, its
// +-1/8 offset scaled by 8); sc = 2 s + 1 from the stored s. Loading only: there is no quantizer for these
// (llama.cpp's needs an importance matrix to make them useful).
#pragma once
#include <cstdint>

#include "edgeformer/dtype.h"

namespace ef {

extern const uint64_t kIQ2XXSGrid[256], kIQ2XSGrid[512], kIQ2SGrid[1024], kIQ1SGrid[2048];
extern const uint64_t kIQ1Grid8[4096];  // 8 g + 1 (entries 0..2047), 8 g - 1 (2048..4095), as int8
extern const uint32_t kIQ3XXSGrid[256], kIQ3SGrid[512];

static inline bool is_grid(DType t) { return (int)t >= (int)DType::IQ2_XXS && (int)t <= (int)DType::IQ1_M; }

// What distinguishes the types, for the code that serves them all.
struct GridTraits {
  int gw;        // elements per grid entry: 8, or 4 (iq3)
  int unit;      // elements per scale: 16 or 32
  int hi_bits;   // index bits above the low byte (iq1: 3, and the offset's sign as a fourth)
  bool signs;    // sign bits per element (iq2, iq3); iq1's grid values carry their signs
  float mul;     // element = d * sc * mul * v
  const void* table;  // uint64 (gw 8) or uint32 (gw 4) entries of v's magnitudes (iq1: kIQ1Grid8, signed)
};
static constexpr GridTraits grid_traits(DType t) {
  switch (t) {
    case DType::IQ2_XXS: return {8, 32, 0, true, 0.125f, kIQ2XXSGrid};
    case DType::IQ2_XS: return {8, 16, 1, true, 0.125f, kIQ2XSGrid};
    case DType::IQ2_S: return {8, 16, 2, true, 0.125f, kIQ2SGrid};
    case DType::IQ3_XXS: return {4, 32, 0, true, 0.25f, kIQ3XXSGrid};
    case DType::IQ3_S: return {4, 32, 1, true, 1.f, kIQ3SGrid};
    case DType::IQ1_S: return {8, 32, 4, false, 0.125f, kIQ1Grid8};
    case DType::IQ1_M: return {8, 16, 4, false, 0.125f, kIQ1Grid8};
    default: return {0, 0, 0, false, 0.f, nullptr};  // not a grid type (is_grid): nothing to index with
  }
}

// The panel layout of a block of 16 rows (quant.h's panels; offsets in bytes):
//   0: 16 f16 d | sc: nu units x 16 rows, u8 | lo: ng groups x 16 rows, the index's low byte | hi (hi_bits):
//   8 sub-blocks of 32 elements x 16 rows, u8 or u16 (hb bytes): group l of the sub-block at bits hi_bits * l |
//   sg (signs): 32 x 16 bytes, per 8 elements two 64-bit masks, one per 4 elements (c = 0, 1): bit 4 r + i of
//   mask c is the sign of row r's element 4 c + i. Rows are thus laid out as one gathered 4-element grid word
//   per row, 16 rows to a 64-byte vector: the quantized panels' shape (quant.h).
struct GridPanel {
  int nu, ng, hb, sc, lo, hi, sg, bytes;
};
static constexpr GridPanel grid_panel(DType t) {
  const GridTraits tr = grid_traits(t);
  const int nu = 256 / tr.unit, ng = 256 / tr.gw, hb = tr.hi_bits * (32 / tr.gw) > 8 ? 2 : 1;
  const int lo = 32 + 16 * nu, hi = lo + 16 * ng, sg = hi + (tr.hi_bits ? 8 * 16 * hb : 0);
  return {nu, ng, hb, 32, lo, hi, sg, sg + (tr.signs ? 512 : 0)};
}

// One 256-element block, unpacked.
struct GridBlock {
  uint16_t d;         // f16 bits
  uint8_t sc[16];     // per unit (16 units of 16 elements, or 8 of 32): 2 s + 1
  uint16_t idx[64];   // per group (32 of 8 elements, or 64 of 4): the grid index (iq1: | offset sign << 11)
  uint8_t sign[32];   // per 8 elements: bit i negates element 8 j + i (zero for iq1)
};
void parse_grid_block(DType t, const uint8_t* block, GridBlock& g);
void emit_grid_block(DType t, const GridBlock& g, uint8_t* block);

// The 256 signed values v of a block (the scale and d apart).
static inline void grid_values(DType t, const GridBlock& g, int8_t* v) {
  const GridTraits tr = grid_traits(t);
  for (int e = 0; e < 256; e++) {
    const int grp = e / tr.gw, i = e % tr.gw;
    const uint32_t idx = g.idx[grp];
    const int8_t m = tr.gw == 8 ? (int8_t)(((const uint64_t*)tr.table)[idx] >> (8 * i))
                                : (int8_t)(((const uint32_t*)tr.table)[idx] >> (8 * i));
    v[e] = (g.sign[e / 8] >> (e % 8)) & 1 ? (int8_t)-m : m;
  }
}

}  // namespace ef
