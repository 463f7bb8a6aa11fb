// llama.cpp's block-quantized weight layouts (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k .. q6_k) and the 8-bit activation blocks the
// quantized dot products use. Dequantization matches gguf-py's (gguf.quants.dequantize) bit for bit.
#pragma once
#include <cstdint>

#include "edgeformer/dtype.h"

namespace ef {

// 32 activations quantized to int8 with one float scale; sum[h] = sum of q over elements 16h .. 16h+15
// (the K-quants' minimums and q4_0's offset need them). r holds the rounding residual quantized again
// (x ~ q * d + r * d2): 8-bit weights multiply both, so their error stays that of the weights alone;
// 4- and 6-bit weights, whose own error dwarfs it, use q only.
struct BlockQ8 {
  float d, d2;
  int16_t sum[2];
  int16_t rsum, unused;  // sum of r
  int8_t q[32];
  int8_t r[32];
};
constexpr int64_t kQ8Block = 32;

#if defined(__CUDACC__)
#define EF_HOST_DEVICE __host__ __device__
#else
#define EF_HOST_DEVICE
#endif

// iq4_nl / iq4_xs: a nibble is an index into these 16 values (llama.cpp's kvalues_iq4nl), times the scale
alignas(16) constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
// iq4_xs sub-block ib's 6-bit scale (stored + 32): 4 low bits in byte ib / 2 of 4, 2 high in a uint16
static inline EF_HOST_DEVICE int iq4xs_scale(int ib, const uint8_t* block) {
  const int hi = ((block[2] | (block[3] << 8)) >> (2 * ib)) & 3;
  return (((block[4 + ib / 2] >> (4 * (ib % 2))) & 0x0F) | (hi << 4)) - 32;
}
// ... and written (sc in -32..31) into a block whose scale bytes are zero
static inline void iq4xs_put_scale(int ib, int sc, uint8_t* block) {
  const int s6 = sc + 32;
  block[4 + ib / 2] |= (uint8_t)((s6 & 0x0F) << (4 * (ib % 2)));
  block[2 + ib / 4] |= (uint8_t)((s6 >> 4) << (2 * (ib % 4)));
}
// q3_k group g's 6-bit scale (stored + 32): 4 low bits in byte g % 8 of 8 (nibble g / 8), 2 high in byte g % 4
// of the next 4 (bits 2 (g / 4)); the 12 bytes start at 96
static inline int q3k_scale(int g, const uint8_t* block) {
  return (((block[96 + g % 8] >> (4 * (g / 8))) & 0x0F) | (((block[104 + g % 4] >> (2 * (g / 4))) & 0x03) << 4)) - 32;
}
static inline void q3k_put_scale(int g, int sc, uint8_t* block) {
  const int s6 = sc + 32;
  block[96 + g % 8] |= (uint8_t)((s6 & 0x0F) << (4 * (g / 8)));
  block[104 + g % 4] |= (uint8_t)((s6 >> 4) << (2 * (g / 4)));
}

// q4_k packs 8 six-bit scales and 8 six-bit mins in 12 bytes: those of sub-block j. Static inline: the
// per-ISA kernel copies include this header (see dtype.h); the CUDA kernels call it on the device too.
static inline EF_HOST_DEVICE void q4k_scale_min(int j, const uint8_t* s, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// -- Panels: the layout quantized matrices are repacked into at load, the one the kernels stream. --------
// kPanel output rows are interleaved 4 bytes at a time, so one 64-byte vector holds 4 consecutive k of 16
// rows and one VPDPBUSD (or SDOT / PMADDUBSW pair) advances all 16 rows by 4 k, with no horizontal sums.
// Per panel and block (rows past the matrix's end are zero):
//   q8_0 (32 k):   16 f16 scales | 8 chunks [16 rows][4 int8], chunk g = k 4g..4g+3           (544 bytes)
//   q4_0 (32 k):   16 f16 scales | 4 chunks [16 rows][4 bytes], chunk c: low nibbles k 4c.., high k 16+4c..
//                  (each row's 4 bytes are its stored bytes 4c..4c+3)                          (288 bytes)
//   q4_k (256 k):  16 f16 d | 16 f16 dmin | 8 x 16 u8 scales | 8 x 16 u8 mins | 32 chunks, chunk 8j+g: low
//                  nibbles sub-block 2j k 4g.., high sub-block 2j+1 (stored bytes 32j+4g..)  (2368 bytes)
//   q6_k (256 k):  16 f16 d | 16 units x 16 int8 scales | 16 units of 16 k (one scale each): nibble vectors A
//                  (k-groups 0, 1 of the unit: low, high nibble), B (2, 3), then a vector of the 2 high bits
//                  of all four (k-group g at bits 2g)                                          (3360 bytes)
//   q4_1 (32 k):   16 f16 d | 16 f16 m | 4 chunks as q4_0's                                    (320 bytes)
//   q5_0, q5_1:    16 f16 d | (q5_1: 16 f16 m |) 4 chunks as q4_0's | a vector of fifth bits: row r's byte
//                  4r + i, bit c: k 4c + i, bit 4 + c: k 16 + 4c + i                   (352 / 384 bytes)
//   q5_k (256 k):  q4_k's layout | 8 vectors of fifth bits: vector g, byte 4r + i, bit j: sub-block j's k
//                  4g + i (row r's stored high-bit bytes 4g..4g+3)                           (2880 bytes)
//   q3_k (256 k):  16 f16 d | 16 units x 16 int8 scales (-32..31) | 16 units of 16 k: a vector of 2-bit
//                  values (k-group g at bits 2g) | 8 vectors of high bits, one per 32 k: bit 4h + g of
//                  byte 4r + i is k 16h + 4g + i's; a value is the 3 bits minus 4             (1824 bytes)
//   q2_k (256 k):  16 f16 d | 16 f16 dmin | 16 units x 16 u8 scales | 16 x 16 u8 mins | 16 units of 16 k:
//                  2-bit values as q3_k's                                                    (1600 bytes)
//   iq4_nl (32 k): q4_0's panel (the nibbles index kIQ4Values)                               (288 bytes)
//   iq4_xs (256 k): 16 f16 d | 8 x 16 int8 scales (-32..31) | 8 sub-blocks of 4 chunks as q4_0's (2208 bytes)
//   iq1_s .. iq3_s (256 k): grid indices, signs and scales per row, laid out for gathers (iquant.h: GridPanel):
//                  iq2_xxs 1184, iq2_xs / iq2_s 1440, iq3_xxs 1696, iq3_s 1824, iq1_s 928, iq1_m 1056 bytes
//   bf16 (32 k):   16 chunks [16 rows][2 bf16], chunk j = k 2j, 2j+1: one VDPBF16PS advances 16 rows by 2 k
//                  (so a panel is K / 2 such 64-byte vectors in k order)                       (1024 bytes)
//   f32, f16 (16 k): 16 chunks [16 rows][1 element], chunk j = k j: one FMA advances 16 rows by 1 k
//                  (a panel is K such vectors in k order)                               (1024 / 512 bytes)
//   q8_0 rows sharing one scale (Tensor::row_scaled; "int8", CTranslate2's scheme): a header of 16 f16 scales (one
//                  per row, then 32 zero bytes) | K / 4 chunks [16 rows][4 int8 + 128], chunk g = k 4g..4g+3
//                  (stored + 128: VPDPBUSD's unsigned operand as it is): the integer sums run over all of K,
//                  and meet the scales once per output                                      (64 + 16 K bytes)
//   ternary (row-scaled q8_0 whose values are all -1, 0, 1: BitNet's): the row-scaled header | K / 16 vectors, vector
//                  v's byte 4r + i holds row r's k 16v + 4j + i plus 1 (0, 1 or 2) at bits 2j: one load, four
//                  2-bit fields, four products with the row-scaled activations                  (64 + 4 K bytes)
// In the float layouts, row o's element k sits in panel o / 16 at element (k / s) 16 s + (o % 16) s + k % s,
// with s = 2 for bf16 and 1 for f32 and f16.
constexpr int64_t kPanel = 16;
// Bytes of one panel of 16 rows of K elements, or 0 if `t` has no panel layout.
int64_t panel_bytes(DType t, int64_t K);
// Elements of a row in one panel block: the type's block; 32 for bf16, 16 for f32 and f16.
static inline int64_t panel_block(DType t) {
  return t == DType::BF16 ? 32 : t == DType::F32 || t == DType::F16 ? 16 : dtype_block(t);
}
// Whether a [rows, K] matrix of this type can be repacked.
static inline bool packable(DType t, int64_t K) {
  return is_weight(t) && K > 0 && K % panel_block(t) == 0;  // the float and quantized types
}

// The row-scaled q8_0 layout: bytes of one panel, and the longest row it takes (the int32 sums of
// (int8 + 128) * int8 products stay exact up to 65536 of them).
static inline int64_t row_panel_bytes(int64_t K) { return 64 + 16 * K; }
static inline int64_t ternary_panel_bytes(int64_t K) { return 64 + 4 * K; }
constexpr int64_t kRowScaledMaxK = 65536;
// Whether every q8_0 block of a row of K elements has the same scale.
bool q8_0_row_shares_scale(const uint8_t* row, int64_t K);

// x: n floats (n a multiple of 32) -> n / 32 blocks. q = round-half-away(x / d), d = max|x| / 127.
void quantize_row_q8(const float* x, BlockQ8* out, int64_t n);

// Activations of row-scaled q8_0 matrices: one scale per token, d = max|x| / 127 over the row, q = round-half-
// away(x / d), laid out for the tiles: tokens in groups of kRowGroup, each group [K / 4][kRowGroup][4 int8]
// (token t of a group at bytes 4 t of every 32), so that one pointer serves a tile of tokens. quantize_rows_q8
// fills tokens [t0, t1) (t0 a multiple of kRowGroup) of x (row stride ldx): q (groups of kRowGroup K bytes),
// d[t] and sum[t] (the sum of token t's int8 values).
constexpr int64_t kRowGroup = 8;
void quantize_rows_q8(const float* x, int64_t ldx, int64_t t0, int64_t t1, int64_t K, int8_t* q, float* d,
                      int32_t* sum);

// Weights: n floats (a multiple of the type's block) -> its blocks. q8_0, q4_0, q4_1, q5_0 and q5_1 as gguf-py /
// llama.cpp's reference quantizers (bit for bit); the K-quants with a simpler scale search than llama.cpp's
// (same layout).
void quantize_row(DType to, const float* x, void* out, int64_t n);
// q8_0 blocks that share one scale, f16(max|x| / 127) over all n: a row of an "int8" matrix.
void quantize_row_q8_0_shared(const float* x, void* out, int64_t n);
// One row of GGUF's MXFP4 (ggml's block: an E8M0 scale byte, 16 bytes of e2m1 nibbles, the low ones elements
// 0..15) as q5_0, value for value: 2 * e2m1 is an integer in [-12, 12] and the scale halved an exact f16 (scales
// up to 2^16; a larger one throws ValueError). n: the row's elements (whole blocks).
void mxfp4_row_to_q5_0(const uint8_t* src, uint8_t* dst, int64_t n);
// One row of llama.cpp's TQ1_0 or TQ2_0 (ternary: -1, 0, 1 times the block's f16 d) as q8_0, value for value: each
// block of 32 takes its block's d. n: the row's elements (whole blocks of 256).
void ternary_row_to_q8_0(DType from, const uint8_t* src, uint8_t* dst, int64_t n);
// Blocks -> n floats, exactly as gguf-py computes them.
void dequantize_row(DType from, const void* src, float* out, int64_t n);

}  // namespace ef
