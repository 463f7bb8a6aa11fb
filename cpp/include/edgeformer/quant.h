// llama.cpp's block-quantized weight layouts (q8_0, q4_0, q4_k, q6_k) and the 8-bit activation blocks the
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
  int8_t q[32];
  int8_t r[32];
};
constexpr int64_t kQ8Block = 32;

// q4_k packs 8 six-bit scales and 8 six-bit mins in 12 bytes: those of sub-block j. Static inline: the
// per-ISA kernel copies include this header (see dtype.h).
static inline void q4k_scale_min(int j, const uint8_t* s, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// x: n floats (n a multiple of 32) -> n / 32 blocks. q = round-half-away(x / d), d = max|x| / 127.
void quantize_row_q8(const float* x, BlockQ8* out, int64_t n);

// Weights: n floats (a multiple of the type's block) -> its blocks. q8_0 and q4_0 as gguf-py / llama.cpp's
// reference quantizers; q4_k and q6_k with a simpler scale search than llama.cpp's (same layout).
void quantize_row(DType to, const float* x, void* out, int64_t n);
// Blocks -> n floats, exactly as gguf-py computes them.
void dequantize_row(DType from, const void* src, float* out, int64_t n);

}  // namespace ef
