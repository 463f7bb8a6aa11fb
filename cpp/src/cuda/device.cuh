// Device helpers shared by the kernel files: reductions, f16/bf16 loads, and the element loader of every
// weight layout (DevMatrix, kernels.h) that the gathers and the tensor-core tiles dequantize with.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "edgeformer/quant.h"
#include "kernels.h"

namespace ef {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Over the whole block (blockDim.x a multiple of 32); every thread gets the result. sh: 32 floats of shared
// memory, reusable right after (the leading barrier protects the previous call's readers).
__device__ __forceinline__ float block_sum(float v, float* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  return warp_sum(lane < nw ? sh[lane] : 0.f);
}

__device__ __forceinline__ float block_max(float v, float* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  return warp_max(lane < nw ? sh[lane] : -INFINITY);
}

__device__ __forceinline__ float f16_bits_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
__device__ __forceinline__ float f16_at(const uint8_t* p) {  // an f16 at a 2-byte aligned address
  return f16_bits_to_f32(*reinterpret_cast<const uint16_t*>(p));
}

// Element k of row r of W, dequantized as quant.cc's dequantize_row computes it.
template <int DT>
__device__ __forceinline__ float weight_at(const DevMatrix& W, int64_t r, int64_t k) {
  if constexpr (DT == (int)DType::F16) {
    return f16_bits_to_f32(static_cast<const uint16_t*>(W.data)[r * W.ld + k]);
  } else if constexpr (DT == (int)DType::BF16) {
    return bf16_bits_to_f32(static_cast<const uint16_t*>(W.data)[r * W.ld + k]);
  } else if constexpr (DT == (int)DType::Q8_0) {
    const int64_t nb = W.cols >> 5;
    return (float)static_cast<const int8_t*>(W.data)[r * W.cols + k] * f16_bits_to_f32(W.scales[r * nb + (k >> 5)]);
  } else if constexpr (DT == (int)DType::Q4_0) {
    const int64_t nb = W.cols >> 5, b = k >> 5;
    const int i = (int)(k & 31);
    const uint8_t byte = static_cast<const uint8_t*>(W.data)[(r * nb + b) * 16 + (i & 15)];
    const int q = i < 16 ? (byte & 15) : (byte >> 4);
    return f16_bits_to_f32(W.scales[r * nb + b]) * (float)(q - 8);
  } else if constexpr (DT == (int)DType::Q4_K) {
    const uint8_t* p = static_cast<const uint8_t*>(W.data) + r * W.ld + (k >> 8) * 144;
    const int f = (int)(k & 255), j = f >> 5, i = f & 31;
    int sc, m;
    q4k_scale_min(j, p + 4, sc, m);
    const float ds = f16_at(p) * (float)sc, dm = f16_at(p + 2) * (float)m;
    const int q = (p[16 + 32 * (j >> 1) + i] >> (4 * (j & 1))) & 15;
    return ds * (float)q - dm;
  } else {  // Q6_K
    static_assert(DT == (int)DType::Q6_K, "weight_at: not a weight layout of the CUDA path");
    const uint8_t* p = static_cast<const uint8_t*>(W.data) + r * W.ld + (k >> 8) * 210;
    const int f = (int)(k & 255), a = f >> 7, rr = f & 127;
    const int lo = (p[a * 64 + (rr & 63)] >> (4 * (rr >> 6))) & 15;
    const int hi = (p[128 + a * 32 + (rr & 31)] >> (2 * (rr >> 5))) & 3;
    return (f16_at(p + 208) * (float)(int8_t)p[192 + (f >> 4)]) * (float)((lo | (hi << 4)) - 32);
  }
}

// Calls f.template operator()<DT>() with the DevMatrix type as a compile-time constant (host side).
#define EF_CUDA_DISPATCH_WEIGHT(dtype, F)                                                       \
  do {                                                                                          \
    switch (dtype) {                                                                            \
      case DType::F16: F((int)DType::F16); break;                                               \
      case DType::BF16: F((int)DType::BF16); break;                                             \
      case DType::Q8_0: F((int)DType::Q8_0); break;                                             \
      case DType::Q4_0: F((int)DType::Q4_0); break;                                             \
      case DType::Q4_K: F((int)DType::Q4_K); break;                                             \
      case DType::Q6_K: F((int)DType::Q6_K); break;                                             \
      default: throw ::ef::ValueError(std::string("CUDA: no kernels for weights of type ") + dtype_name(dtype)); \
    }                                                                                           \
  } while (0)

// Grid size for a grid-stride loop over n elements with `threads` per block.
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return (unsigned)(b < max_blocks ? b : max_blocks);
}

// Grid of a loop over rows (blockIdx.y, striding) and their columns (256-thread blocks, striding).
inline dim3 rows_grid(int64_t rows, int64_t cols) {
  const int64_t x = (cols + 255) / 256;
  return dim3((unsigned)(x < 1 ? 1 : x < 1024 ? x : 1024), (unsigned)(rows < 1 ? 1 : rows < 65535 ? rows : 65535));
}

}  // namespace cuda
}  // namespace ef
