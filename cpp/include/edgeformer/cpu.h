// CPU features, the instruction set chosen at run time, and the table of raw-pointer kernels for it.
// Every SIMD table has a scalar twin (the generic table, cpp/src/cpu/ref/) used as the test oracle.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "edgeformer/dtype.h"
#include "edgeformer/quant.h"

namespace ef {

// AVX512VNNI and NEONDOT are AVX512 / NEON whose 8-bit dot products use VPDPBUSD / SDOT; AVX512BF16 is
// AVX512VNNI whose bf16-weight products use VDPBF16PS; AMX is AVX512BF16 whose products of 16 tokens or more on bf16
// and row-scaled int8 weights run on the tile unit (TDPBF16PS, TDPBSUD).
enum class Isa : int32_t {
  Generic = 0, AVX2 = 1, AVX512 = 2, NEON = 3, AVX512VNNI = 4, NEONDOT = 5, AVX512BF16 = 6, AMX = 7
};
const char* isa_name(Isa isa);

struct CpuInfo {
  std::string arch;  // "x86_64", "aarch64", ...
  std::string vendor, brand;
  // x86 (each already checked against the OS's saved register state via xgetbv)
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vnni = false, avx512_vbmi = false, avx512_bf16 = false, amx_tile = false, amx_int8 = false, amx_bf16 = false;
  bool amx_permitted = false;  // Linux: the kernel granted this process the tile data state (arch_prctl)
  // aarch64
  bool neon = false, dotprod = false, i8mm = false, sve = false;
  int physical_cores = 1, logical_cores = 1;
  std::vector<Isa> supported;  // every ISA this build has kernels for and this CPU + OS can run
};

const CpuInfo& cpu_info();
bool isa_supported(Isa isa);

enum class Act : int32_t { None = 0, ReLU = 1, SiLU = 2, GELU = 3, GELUTanh = 4, ReLU2 = 5 };  // ReLU2: relu(x)^2

struct KernelTable {
  Isa isa;
  // y[t, o] = sum_k x[t, k] * w[o, k] (+ bias[o]) for o in [o0, o1), t in [0, T).
  // x: [T, K] row stride ldx floats; w: rows of K elements of the indexed dtype, row stride ldw elements;
  // y: row stride ldy floats. bias may be null.
  using MatmulFn = void (*)(const float* x, int64_t ldx, const void* w, int64_t ldw, const float* bias, float* y,
                            int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K);
  MatmulFn matmul[kNumFloatDTypes];
  // The same product on weights repacked into 16-row panels (quant.h); o0 a multiple of 16; ldw: elements from
  // one panel to the next, 0 for 16 K (packed matrices; the KV cache's value panels are longer). Null where
  // this ISA has no such kernel (the loader then keeps the stored rows).
  MatmulFn matmul_panel[kNumFloatDTypes];
  // Quantized weights times 8-bit activations: y[t, o] = sum over K of w[o, :] . x[t, :] (+ bias[o]).
  // xq: T rows of K / 32 activation blocks (row stride ldxq blocks); w: rows of `row_bytes` bytes.
  using QMatmulFn = void (*)(const BlockQ8* xq, int64_t ldxq, const void* w, int64_t row_bytes, const float* bias,
                             float* y, int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K);
  QMatmulFn qmatmul[kNumWeightDTypes];  // entries of the quantized types
  // The same product on weights repacked into 16-row panels (quant.h); o0 a multiple of 16, row_bytes unused.
  // Null where this ISA has no panel kernels (the loader then keeps the stored rows).
  QMatmulFn qmatmul_panel[kNumWeightDTypes];
  // q8_0 panels times the activations' first level only (BlockQ8::q): half the integer work of the two-level
  // product, and the error of llama.cpp's and CTranslate2's int8 products. Null where there are no panels.
  QMatmulFn q8_0_panel_one_level;
  // Row-scaled q8_0 panels (quant.h; Tensor::row_scaled) times activations from quantize_q8_rows (xq, xd, xsum
  // for T tokens): integer sums over all of K; o0 a multiple of 16. Null where there are no panels.
  using RowMatmulFn = void (*)(const int8_t* xq, const float* xd, const int32_t* xsum, const void* w,
                               const float* bias, float* y, int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K);
  RowMatmulFn q8_0_rows;
  // The same product on the ternary layout (quant.h; Tensor::ternary): BitNet's -1, 0, 1 at 2 bits a value
  RowMatmulFn q8_0_rows_ternary;
  // dst[i] = float(src[i]) for any weight dtype (quantized: n a multiple of the block)
  void (*to_f32[kNumWeightDTypes])(const void* src, float* dst, int64_t n);
  // quantize_row_q8 (quant.h), bit for bit
  void (*quantize_q8)(const float* x, BlockQ8* out, int64_t n);
  // quantize_rows_q8 (quant.h), bit for bit: the activations of row-scaled matrices
  void (*quantize_q8_rows)(const float* x, int64_t ldx, int64_t t0, int64_t t1, int64_t K, int8_t* q, float* d,
                           int32_t* sum);
  float (*dot)(const float* a, const float* b, int64_t n);
  void (*axpy)(float a, const float* x, float* y, int64_t n);  // y += a * x
  // out[i] = sum over j < n of p[j] * rows[j * ld + i], for i < d (a decode step's attention-weighted values)
  void (*wsum)(const float* p, const float* rows, int64_t ld, int64_t n, int64_t d, float* out);
  void (*scale)(float* x, float a, int64_t n);                 // x *= a
  void (*add)(float* y, const float* x, int64_t n);            // y += x
  void (*mul)(float* y, const float* x, int64_t n);            // y *= x
  // y = x / sqrt(mean(x^2) + eps) * w   (w may be null)
  void (*rmsnorm)(const float* x, const float* w, float eps, float* y, int64_t n);
  // y = (x - mean) / sqrt(var + eps) * w + b   (w, b may be null)
  void (*layernorm)(const float* x, const float* w, const float* b, float eps, float* y, int64_t n);
  // x = softmax(x) in place; returns nothing. Stable (max subtracted).
  void (*softmax)(float* x, int64_t n);
  void (*act)(Act a, float* x, int64_t n);  // in place
  // g = act(g) * u  (the gated unit of SwiGLU / GeGLU)
  void (*act_mul)(Act a, float* g, const float* u, int64_t n);
  // one token's selective-scan step over channels (Mamba): per channel c and state n,
  // S[c][n] = exp(dt[c] A[c][n]) S[c][n] + dt[c] x[c] B[n];  y[c] = sum_n S[c][n] C[n]   (S, A: [channels][N])
  void (*ssm_step)(const float* A, const float* dt, const float* x, const float* B, const float* C, float* S,
                   float* y, int64_t channels, int64_t N);
  // dst[i] = f32_to_f16(src[i]) (round to nearest even; a NaN stays a NaN, its payload as the hardware keeps it):
  // the KV cache's f16 rows
  void (*f32_to_f16)(const float* src, uint16_t* dst, int64_t n);
  // dst[i] = f32_to_bf16(src[i]) (dtype.h), bit for bit: the activations of bf16 weights
  void (*f32_to_bf16)(const float* src, uint16_t* dst, int64_t n);
  // matmul_panel[BF16] on activations already rounded to bf16 by f32_to_bf16 (xb: T rows, row stride ldx
  // elements): a group of products on one input converts it once (ops::linear_group). Null where this ISA has no
  // bf16 panel kernel.
  using Bf16MatmulFn = void (*)(const uint16_t* xb, int64_t ldx, const void* w, int64_t ldw, const float* bias,
                                float* y, int64_t ldy, int64_t T, int64_t o0, int64_t o1, int64_t K);
  Bf16MatmulFn matmul_panel_bf16x;
  // From this many tokens (0: never), and where K is a multiple of 32, matmul_panel_bf16x reads xb in the tile
  // layout (bf16_tile_at; ldx unused) instead of rows: AMX's A tiles, each row 64 bytes from the next (rows
  // K * 2 bytes apart, a power of two, fell into one L1 set: 0.65x the speed at K = 2048)
  int64_t bf16x_tiles_from;
  // Block-quantized panels (quant.h) times activations rounded to bf16 in the tile layout, from qbf16x_from
  // tokens (0: never; always past bf16x_tiles_from): each panel's weights decoded to bf16 once per call (scale *
  // q - min, rounded to nearest even), then a bf16 product. Long prompts on the tile unit, where the 8-bit
  // products' per-block float steps bound the speed (and bf16 activations err less than 8-bit ones). Null for
  // the types without.
  Bf16MatmulFn qmatmul_panel_bf16x[kNumWeightDTypes];
  int64_t qbf16x_from;
};

// The tile layout of bf16 activations: token t's 32 values from k = 32 s at this element offset. A block of 16
// tokens holds 16 K elements; rows of the last block past the last token are zero.
constexpr int64_t kBf16TileTokens = 16;
inline int64_t bf16_tile_at(int64_t t, int64_t s, int64_t K) {
  return t / kBf16TileTokens * kBf16TileTokens * K + s * 32 * kBf16TileTokens + t % kBf16TileTokens * 32;
}

// The table for the active ISA: chosen once (best supported, or EDGEFORMER_ISA), or set_isa().
const KernelTable& kernels();
const KernelTable& kernels_for(Isa isa);  // throws ValueError if this build or CPU lacks it
Isa active_isa();
void set_isa(Isa isa);                    // throws ValueError if unsupported
Isa parse_isa(const std::string& name);   // "generic", "avx2", "avx512", "amx", "neon", ...; throws ValueError

}  // namespace ef
