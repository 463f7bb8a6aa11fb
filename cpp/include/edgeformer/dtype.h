// Element types of weights and activations, defined once (exposed to Python with py::enum_).
// Helpers are static inline: this header is compiled into each per-ISA kernel copy, and a shared inline
// (COMDAT) function could otherwise be taken from the AVX-512 copy.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace ef {

// Weight types first (kernel tables are indexed by them): the float types, then llama.cpp's block-quantized
// layouts (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl: blocks of 32; q4_k, q6_k, q5_k, q3_k, q2_k, iq4_xs: super-
// blocks of 256), the i-quants (iq2_xxs .. iq1_m: blocks of 256, grid codebooks: iquant.h). Integer types
// follow. The values are this process's only (nothing stores them).
enum class DType : int32_t {
  F32 = 0, F16 = 1, BF16 = 2, Q8_0 = 3, Q4_0 = 4, Q4_K = 5, Q6_K = 6,
  Q4_1 = 7, Q5_0 = 8, Q5_1 = 9, Q5_K = 10, Q3_K = 11, Q2_K = 12, IQ4_NL = 13, IQ4_XS = 14,
  IQ2_XXS = 15, IQ2_XS = 16, IQ2_S = 17, IQ3_XXS = 18, IQ3_S = 19, IQ1_S = 20, IQ1_M = 21,
  I32 = 22, I64 = 23, U8 = 24, I8 = 25, I16 = 26, F64 = 27, BOOL = 28,
  // stored, never computed with: GGUF's MXFP4 (gpt-oss's experts) is read as q5_0 at load (python/edgeformer/mxfp4.py);
  // FP8 (e4m3) checkpoints' matrices are dequantized to bf16 at load with their scales (python/edgeformer/fp8.py)
  MXFP4 = 29, F8_E4M3 = 30,
  // llama.cpp's ternary types (BitNet's -1, 0, 1 times a block scale): read as q8_0 rows at load (quant.h), value for
  // value, whose blocks then share their row's scale where the model's do (the ternary panels)
  TQ1_0 = 31, TQ2_0 = 32
};
constexpr int kNumFloatDTypes = 3;
constexpr int kNumWeightDTypes = 22;

static inline bool is_float_weight(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }
static inline bool is_quantized(DType t) { return (int)t >= kNumFloatDTypes && (int)t < kNumWeightDTypes; }
static inline bool is_weight(DType t) { return (int)t < kNumWeightDTypes; }

// Elements per block (1 for plain types) and bytes per block.
static inline int64_t dtype_block(DType t) {
  switch (t) {
    case DType::Q8_0: case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::IQ4_NL:
    case DType::MXFP4:
      return 32;
    case DType::Q4_K: case DType::Q6_K: case DType::Q5_K: case DType::Q3_K: case DType::Q2_K: case DType::IQ4_XS:
    case DType::IQ2_XXS: case DType::IQ2_XS: case DType::IQ2_S: case DType::IQ3_XXS: case DType::IQ3_S:
    case DType::IQ1_S: case DType::IQ1_M: case DType::TQ1_0: case DType::TQ2_0:
      return 256;
    default: return 1;
  }
}
static inline size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I64: case DType::F64: return 8;
    case DType::U8: case DType::I8: case DType::BOOL: case DType::F8_E4M3: return 1;
    case DType::Q8_0: return 34;   // f16 d, 32 x int8
    case DType::Q4_0: return 18;   // f16 d, 16 bytes of nibbles
    case DType::Q4_K: return 144;  // f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
    case DType::Q6_K: return 210;  // 128 low nibbles, 64 high 2-bits, 16 int8 scales, f16 d
    case DType::Q4_1: return 20;   // f16 d, f16 m, 16 bytes of nibbles
    case DType::Q5_0: return 22;   // f16 d, 32 high bits, 16 bytes of nibbles
    case DType::Q5_1: return 24;   // f16 d, f16 m, 32 high bits, 16 bytes of nibbles
    case DType::Q5_K: return 176;  // q4_k's 144 bytes with 32 bytes of high bits before the nibbles
    case DType::Q3_K: return 110;  // 32 bytes of high bits, 64 of 2-bit pairs, 12 of 6-bit scales, f16 d
    case DType::Q2_K: return 84;   // 16 bytes of 4-bit scale | min, 64 of 2-bit values, f16 d, f16 dmin
    case DType::IQ4_NL: return 18; // f16 d, 16 bytes of nibbles: indices into kIQ4Values (quant.h)
    case DType::IQ4_XS: return 136;  // f16 d, 8 6-bit scales (a u16 of high bits, 4 bytes of low), 128 of nibbles
    case DType::IQ2_XXS: return 66;  // the i-quants' layouts: iquant.cc
    case DType::IQ2_XS: return 74;
    case DType::IQ2_S: return 82;
    case DType::IQ3_XXS: return 98;
    case DType::IQ3_S: return 110;
    case DType::IQ1_S: return 50;
    case DType::IQ1_M: return 56;
    case DType::MXFP4: return 17;  // an E8M0 scale byte, 16 bytes of e2m1 nibbles
    case DType::TQ1_0: return 54;  // 48 bytes of 5 base-3 digits, 4 bytes of 4, f16 d
    case DType::TQ2_0: return 66;  // 64 bytes of 2-bit values (plus 1), f16 d
  }
  return 0;
}
// Bytes of one element for plain types; 0 for block types (use dtype_block / dtype_block_bytes).
static inline size_t dtype_size(DType t) { return dtype_block(t) == 1 ? dtype_block_bytes(t) : 0; }
// Bytes of n elements (n a multiple of the block size).
static inline size_t dtype_bytes(DType t, int64_t n) { return (size_t)(n / dtype_block(t)) * dtype_block_bytes(t); }

const char* dtype_name(DType t);
// Parse "f32"/"float32"/"F32", "f16"/"float16", "bf16"/"bfloat16"; throws ValueError naming `what`.
DType parse_dtype(const std::string& s, const std::string& what);

// IEEE half <-> float, portable (the SIMD kernels use F16C / NEON conversions instead).
static inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do { mant <<= 1; e++; } while (!(mant & 0x400));
      bits = sign | (uint32_t)(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

static inline uint16_t f32_to_f16(float f) {  // round to nearest even
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t absx = x & 0x7fffffff;
  if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
  if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // overflow to inf
  if (absx < 0x38800000u) {  // subnormal or zero in half
    if (absx < 0x33000000u) return (uint16_t)sign;
    // value = m * 2^(e - 150) = half_m * 2^-24  ->  half_m = m >> (126 - e), shift in [14, 24]
    uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;
    uint32_t half_m = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_m & 1))) half_m++;
    return (uint16_t)(sign | half_m);
  }
  uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15
  uint32_t half = r >> 13, rem = r & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
  return (uint16_t)(sign | half);
}

// An f16 stored at any (unaligned) address: the scales inside quantized blocks.
static inline float f16_load(const void* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

static inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

static inline uint16_t f32_to_bf16(float f) {  // round to nearest even, NaN kept quiet
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

}  // namespace ef
