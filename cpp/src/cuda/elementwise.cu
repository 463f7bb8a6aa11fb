// Gathers, norms, activations and the upload conversions: memory-bound kernels, one row per block where a row
// needs a reduction, grid-stride loops elsewhere.
#include <algorithm>
#include <string>

#include "device.cuh"

namespace ef {
namespace cuda {

namespace {

// ---- embedding ------------------------------------------------------------------------------------------------
template <int DT>
__global__ void embedding_kernel(DevMatrix table, const int32_t* __restrict__ ids, float* __restrict__ out, int64_t ldo,
                                 bool accumulate) {
  const int64_t t = blockIdx.x;
  const int64_t row = ids[t];
  float* o = out + t * ldo;
  for (int64_t k = threadIdx.x; k < table.cols; k += blockDim.x) {
    const float v = weight_at<DT>(table, row, k);
    o[k] = accumulate ? o[k] + v : v;
  }
}

// ---- norms ----------------------------------------------------------------------------------------------------
// One block per row. As the CPU reference: rmsnorm r = 1 / sqrt(mean(x^2) + eps); layernorm in two passes. The
// loops are unrolled so that each thread has several loads in flight (a decode step's row is one block's work).
// vec: rows of float4 (n a multiple of 4, x, w and y 16-byte aligned).
// Row r sits at (r / heads) * ld + (r % heads) * n: heads = 1, ld = n for plain rows; a token's heads for the
// per-head query / key norms (qk_norm), its rows ld apart.
__global__ void rmsnorm_kernel(const float* x, const float* __restrict__ w, float eps, float* y, int64_t n,
                               int64_t heads, int64_t ld, bool vec) {
  __shared__ float sh[32];
  const int64_t at = (int64_t)(blockIdx.x / heads) * ld + (int64_t)(blockIdx.x % heads) * n;
  const float* xr = x + at;
  float* yr = y + at;
  float ss = 0.f;
  if (vec) {
    const float4* x4 = reinterpret_cast<const float4*>(xr);
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < n / 4; i += blockDim.x) {
      const float4 v = x4[i];
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
  }
  ss = block_sum(ss, sh);
  const float r = 1.f / sqrtf(ss / (float)n + eps);
  if (vec) {
    const float4* x4 = reinterpret_cast<const float4*>(xr);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    float4* y4 = reinterpret_cast<float4*>(yr);
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < n / 4; i += blockDim.x) {
      float4 v = x4[i];
      const float4 g = w ? w4[i] : make_float4(1.f, 1.f, 1.f, 1.f);
      v.x = v.x * r * g.x, v.y = v.y * r * g.y, v.z = v.z * r * g.z, v.w = v.w * r * g.w;
      y4[i] = v;
    }
  } else {
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * r * (w ? w[i] : 1.f);
  }
}

__global__ void layernorm_kernel(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                                 float eps, float* y, int64_t n) {
  __shared__ float sh[32];
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  float s = 0.f;
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += xr[i];
  const float mean = block_sum(s, sh) / (float)n;
  float v = 0.f;
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
  const float r = 1.f / sqrtf(block_sum(v, sh) / (float)n + eps);
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = (xr[i] - mean) * r * (w ? w[i] : 1.f) + (b ? b[i] : 0.f);
}

__global__ void norm_heads_kernel(bool ln, const float* x, const float* __restrict__ w, int64_t w_head, float eps,
                                  float* y, int64_t n, int64_t heads, int64_t ld) {
  __shared__ float sh[32];
  const int64_t h = blockIdx.x % heads, at = (int64_t)(blockIdx.x / heads) * ld + h * n;
  const float* xr = x + at;
  float* yr = y + at;
  const float* wr = w ? w + h * w_head : nullptr;
  float mean = 0.f;
  if (ln) {
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += xr[i];
    mean = block_sum(s, sh) / (float)n;
  }
  float v = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
  const float r = 1.f / sqrtf(block_sum(v, sh) / (float)n + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = (xr[i] - mean) * r * (wr ? wr[i] : 1.f);
}

__global__ void softmax_kernel(float* x, int64_t n) {
  __shared__ float sh[32];
  float* xr = x + blockIdx.x * n;
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, xr[i]);
  m = block_max(m, sh);
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float e = expf(xr[i] - m);
    xr[i] = e;
    s += e;
  }
  const float inv = 1.f / block_sum(s, sh);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) xr[i] *= inv;
}

// ---- activations (the formulas of cpp/src/cpu/scalar_math.h) -----------------------------------------------------
__device__ __forceinline__ float act_dev(Act a, float x) {
  switch (a) {
    case Act::None: return x;
    case Act::ReLU: return x > 0.f ? x : 0.f;
    case Act::ReLU2: return x > 0.f ? x * x : 0.f;
    case Act::SiLU: return x / (1.f + expf(-x));
    case Act::GELU: return 0.5f * x * erfcf(x * -0.70710678118654752f);  // (1 + erf: cancels for x << 0)
    case Act::GELUTanh: {
      const float c = 0.7978845608028654f;
      return 0.5f * x * (1.f + tanhf(c * (x + 0.044715f * x * x * x)));
    }
  }
  return x;
}

__global__ void act_kernel(Act a, float* x, int64_t rows, int64_t n, int64_t ld) {
  const int64_t total = rows * n;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    float* p = x + (e / n) * ld + e % n;
    *p = act_dev(a, *p);
  }
}

__global__ void act_mul_kernel(Act a, float* g, int64_t ldg, const float* __restrict__ u, int64_t ldu, int64_t rows,
                               int64_t n) {
  const int64_t total = rows * n;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = e / n, c = e % n;
    float* p = g + r * ldg + c;
    *p = act_dev(a, *p) * u[r * ldu + c];
  }
}

__global__ void add_kernel(float* y, const float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] += x[i];
}

__global__ void softcap_kernel(float* x, float cap, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] = cap * tanhf(x[i] / cap);
}

__global__ void clamp_kernel(float* x, float lim, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] = fminf(fmaxf(x[i], -lim), lim);
}

__global__ void gather_rows_kernel(const float* __restrict__ src, int64_t ld, const int32_t* __restrict__ idx,
                                   int64_t n, int64_t cols, float* __restrict__ dst) {
  for (int64_t r = blockIdx.y; r < n; r += gridDim.y) {
    const float* s = src + (int64_t)idx[r] * ld;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x)
      dst[r * cols + c] = s[c];
  }
}

__global__ void scatter_add_rows_kernel(float* __restrict__ dst, int64_t ld, const int32_t* __restrict__ idx,
                                        const float* __restrict__ w, const float* __restrict__ src, int64_t n,
                                        int64_t cols) {
  for (int64_t r = blockIdx.y; r < n; r += gridDim.y) {
    float* d = dst + (int64_t)idx[r] * ld;
    const float a = w[r];
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x)
      d[c] += a * src[r * cols + c];
  }
}

__global__ void scale_rows_kernel(float* __restrict__ x, int64_t ld, const float* __restrict__ f, int64_t rows,
                                  int64_t cols) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x)
      x[r * ld + c] *= f[r];
}

// one block per output (o, t)
__global__ void linear_f32_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ b, int64_t K, int64_t n, float* __restrict__ y) {
  __shared__ float sh[32];
  const int64_t o = blockIdx.x, t = blockIdx.y;
  float dot = 0.f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) dot += x[t * K + k] * w[o * K + k];
  dot = block_sum(dot, sh);
  if (threadIdx.x == 0) y[t * n + o] = dot + (b ? b[o] : 0.f);
}

// one block per row: the gate's dot product, then the row
__global__ void sigmoid_gate_add_kernel(float* __restrict__ dst, const float* __restrict__ y,
                                        const float* __restrict__ x, const float* __restrict__ v, int64_t cols) {
  __shared__ float sh[32];
  const int64_t r = blockIdx.x;
  float dot = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dot += x[r * cols + c] * v[c];
  dot = block_sum(dot, sh);
  const float g = 1.f / (1.f + expf(-dot));
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[r * cols + c] += g * y[r * cols + c];
}

__global__ void scale_kernel(float* x, float a, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) x[i] *= a;
}

// ---- upload conversions ------------------------------------------------------------------------------------------
__global__ void f32_to_f16_kernel(const float* __restrict__ src, int64_t lds, int64_t rows, int64_t cols, __half* dst,
                                  int64_t ldd) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x)
      dst[r * ldd + c] = __float2half_rn(src[r * lds + c]);
}

// One thread per block of 32: q8_0 (34 bytes: f16 d, 32 int8) or q4_0 (18 bytes: f16 d, 16 bytes of nibbles).
__global__ void split_blocks_kernel(const uint8_t* __restrict__ src, int64_t nblocks, int block_bytes, int quant_bytes,
                                    uint8_t* quants, uint16_t* scales) {
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nblocks; b += (int64_t)gridDim.x * blockDim.x) {
    const uint8_t* p = src + b * block_bytes;
    scales[b] = (uint16_t)(p[0] | (p[1] << 8));  // little-endian f16, as stored
    uint8_t* q = quants + b * quant_bytes;
    for (int i = 0; i < quant_bytes; i++) q[i] = p[2 + i];
  }
}

}  // namespace

void embedding(const DevMatrix& table, const int32_t* ids, int64_t T, float* out, int64_t ldo, bool accumulate,
               cudaStream_t s) {
  if (T <= 0) return;
  EF_CHECK(T <= 0x7fffffff, "CUDA embedding: too many rows");
#define EF_LAUNCH(DT)                                                                             \
  embedding_kernel<DT><<<(unsigned)T, 256, 0, s>>>(table, ids, out, ldo, accumulate); \
  EF_CUDA_LAUNCHED(embedding_kernel)
  EF_CUDA_DISPATCH_WEIGHT(table.dtype, EF_LAUNCH);
#undef EF_LAUNCH
}

void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t rows, int64_t n, cudaStream_t s) {
  rmsnorm_heads(x, w, eps, y, rows, n, 1, n, s);
}

void rmsnorm_heads(const float* x, const float* w, float eps, float* y, int64_t rows, int64_t n, int64_t heads,
                   int64_t ld, cudaStream_t s) {
  if (rows <= 0) return;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vec = n % 4 == 0 && ld % 4 == 0 && aligned(x) && aligned(y) && (!w || aligned(w));
  rmsnorm_kernel<<<(unsigned)rows, n <= 128 ? 32 : 256, 0, s>>>(x, w, eps, y, n, heads, ld, vec);
  EF_CUDA_LAUNCHED(rmsnorm_kernel);
}

void norm_heads(bool ln, const float* x, const float* w, int64_t w_head, float eps, float* y, int64_t rows, int64_t n,
                int64_t heads, int64_t ld, cudaStream_t s) {
  if (rows <= 0) return;
  norm_heads_kernel<<<(unsigned)rows, n <= 128 ? 32 : 256, 0, s>>>(ln, x, w, w_head, eps, y, n, heads, ld);
  EF_CUDA_LAUNCHED(norm_heads_kernel);
}

void layernorm(const float* x, const float* w, const float* b, float eps, float* y, int64_t rows, int64_t n,
               cudaStream_t s) {
  if (rows <= 0) return;
  layernorm_kernel<<<(unsigned)rows, 256, 0, s>>>(x, w, b, eps, y, n);
  EF_CUDA_LAUNCHED(layernorm_kernel);
}

void softmax_rows(float* x, int64_t rows, int64_t n, cudaStream_t s) {
  if (rows <= 0 || n <= 0) return;
  softmax_kernel<<<(unsigned)rows, 256, 0, s>>>(x, n);
  EF_CUDA_LAUNCHED(softmax_kernel);
}

void act(Act a, float* x, int64_t rows, int64_t n, int64_t ld, cudaStream_t s) {
  if (rows <= 0 || n <= 0 || a == Act::None) return;
  act_kernel<<<grid_for(rows * n, 256), 256, 0, s>>>(a, x, rows, n, ld);
  EF_CUDA_LAUNCHED(act_kernel);
}

void act_mul(Act a, float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int64_t n, cudaStream_t s) {
  if (rows <= 0 || n <= 0) return;
  act_mul_kernel<<<grid_for(rows * n, 256), 256, 0, s>>>(a, g, ldg, u, ldu, rows, n);
  EF_CUDA_LAUNCHED(act_mul_kernel);
}

void add(float* y, const float* x, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  add_kernel<<<grid_for(n, 256), 256, 0, s>>>(y, x, n);
  EF_CUDA_LAUNCHED(add_kernel);
}

void softcap(float* x, float cap, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  const unsigned blocks = (unsigned)std::min<int64_t>((n + 255) / 256, 4096);
  softcap_kernel<<<blocks, 256, 0, s>>>(x, cap, n);
  EF_CUDA_LAUNCHED(softcap_kernel);
}

void scale(float* x, float a, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  scale_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, a, n);
  EF_CUDA_LAUNCHED(scale_kernel);
}

void clamp(float* x, float lim, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  clamp_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, lim, n);
  EF_CUDA_LAUNCHED(clamp_kernel);
}

void scale_rows(float* x, int64_t ld, const float* f, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  scale_rows_kernel<<<rows_grid(rows, cols), 256, 0, s>>>(x, ld, f, rows, cols);
  EF_CUDA_LAUNCHED(scale_rows_kernel);
}

void linear_f32(const float* x, const float* w, const float* b, int64_t T, int64_t K, int64_t n, float* y,
                cudaStream_t s) {
  if (T <= 0 || n <= 0) return;
  linear_f32_kernel<<<dim3((unsigned)n, (unsigned)T), 128, 0, s>>>(x, w, b, K, n, y);
  EF_CUDA_LAUNCHED(linear_f32_kernel);
}

void gather_rows(const float* src, int64_t ld, const int32_t* idx, int64_t n, int64_t cols, float* dst, cudaStream_t s) {
  if (n <= 0 || cols <= 0) return;
  gather_rows_kernel<<<rows_grid(n, cols), 256, 0, s>>>(src, ld, idx, n, cols, dst);
  EF_CUDA_LAUNCHED(gather_rows_kernel);
}

void scatter_add_rows(float* dst, int64_t ld, const int32_t* idx, const float* w, const float* src, int64_t n,
                      int64_t cols, cudaStream_t s) {
  if (n <= 0 || cols <= 0) return;
  scatter_add_rows_kernel<<<rows_grid(n, cols), 256, 0, s>>>(dst, ld, idx, w, src, n, cols);
  EF_CUDA_LAUNCHED(scatter_add_rows_kernel);
}

void sigmoid_gate_add(float* dst, const float* y, const float* x, const float* v, int64_t rows, int64_t cols,
                      cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  sigmoid_gate_add_kernel<<<(unsigned)rows, 256, 0, s>>>(dst, y, x, v, cols);
  EF_CUDA_LAUNCHED(sigmoid_gate_add_kernel);
}

void f32_to_f16_rows(const float* src, int64_t lds, int64_t rows, int64_t cols, uint16_t* dst, int64_t ldd,
                     cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  f32_to_f16_kernel<<<rows_grid(rows, cols), 256, 0, s>>>(src, lds, rows, cols, reinterpret_cast<__half*>(dst), ldd);
  EF_CUDA_LAUNCHED(f32_to_f16_kernel);
}

void split_blocks(DType t, const uint8_t* src, int64_t nblocks, uint8_t* quants, uint16_t* scales, cudaStream_t s) {
  EF_CHECK(t == DType::Q8_0 || t == DType::Q4_0, "CUDA split_blocks: q8_0 or q4_0 only");
  if (nblocks <= 0) return;
  const int quant_bytes = t == DType::Q8_0 ? 32 : 16;
  split_blocks_kernel<<<grid_for(nblocks, 256), 256, 0, s>>>(src, nblocks, quant_bytes + 2, quant_bytes, quants, scales);
  EF_CUDA_LAUNCHED(split_blocks_kernel);
}

}  // namespace cuda
}  // namespace ef
