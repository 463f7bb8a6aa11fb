// y = x W^T (+ bias) (+ y): GEMV for decode (T <= 8); for prompts, cuBLAS where it is loaded (64 tokens or more,
// blas.cc) and our tensor-core tiles otherwise; for every weight layout of the CUDA path (kernels.h DevMatrix).
#include <mma.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "device.cuh"

namespace ef {
namespace cuda {

namespace {

// ---- GEMV, f16 / bf16 weights --------------------------------------------------------------------------------
// One warp per output row; a lane reads 8 weights (16 bytes) at a time, 256 per warp step, and multiplies
// them with every token's x (T <= MAXT accumulators), four 16-byte loads in flight per lane. Rows are padded
// to 8 elements and 16-byte aligned (upload), so the vector loop covers K rounded down to 8; the scalar tail
// does the rest.
constexpr int kGemvWarps = 8;

// Two f16 / bf16 values packed in a 32-bit word, as floats.
template <typename WT>
__device__ __forceinline__ float2 pair_to_f32(uint32_t u) {
  if constexpr (std::is_same<WT, __half>::value) return __half22float2(*reinterpret_cast<const __half2*>(&u));
  else return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
}

template <typename WT>
__device__ __forceinline__ void unpack8(const uint4 raw, float* f) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 v = pair_to_f32<WT>(w[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

template <typename WT>
__device__ __forceinline__ float to_f32(WT v) {
  if constexpr (std::is_same<WT, __half>::value) return __half2float(v);
  else return __bfloat162float(v);
}

template <typename WT, int MAXT, bool XVEC>
__global__ void __launch_bounds__(kGemvWarps * 32)
gemv_float_kernel(const WT* __restrict__ W, int64_t ldw, int64_t O, int64_t K, const float* __restrict__ x,
                  int64_t ldx, int T, const float* __restrict__ bias, float* __restrict__ y, int64_t ldy,
                  bool accumulate) {
  const int lane = threadIdx.x & 31;
  const int64_t o = (int64_t)blockIdx.x * kGemvWarps + (threadIdx.x >> 5);
  if (o >= O) return;  // the whole warp: no block-wide barrier below
  const WT* w = W + o * ldw;
  float acc[MAXT];
#pragma unroll
  for (int t = 0; t < MAXT; t++) acc[t] = 0.f;
  const int64_t K8 = K & ~(int64_t)7;
  auto step = [&](const uint4 raw, int64_t k) {  // this lane's 8 weights at k times every token's x
    float wf[8];
    unpack8<WT>(raw, wf);
#pragma unroll
    for (int t = 0; t < MAXT; t++) {
      if (t < T) {
        const float* xp = x + t * ldx + k;
        float xv[8];
        if constexpr (XVEC) {
          const float4 a = *reinterpret_cast<const float4*>(xp), b = *reinterpret_cast<const float4*>(xp + 4);
          xv[0] = a.x, xv[1] = a.y, xv[2] = a.z, xv[3] = a.w, xv[4] = b.x, xv[5] = b.y, xv[6] = b.z, xv[7] = b.w;
        } else {
#pragma unroll
          for (int i = 0; i < 8; i++) xv[i] = xp[i];
        }
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) s += wf[i] * xv[i];
        acc[t] += s;
      }
    }
  };
  // four 16-byte weight loads issued before any is used (__ldg: one vector load each), then the rest one by one
  int64_t k = (int64_t)lane * 8;
  for (; k + 3 * 256 < K8; k += 4 * 256) {
    uint4 raw[4];
#pragma unroll
    for (int u = 0; u < 4; u++) raw[u] = __ldg(reinterpret_cast<const uint4*>(w + k + u * 256));
#pragma unroll
    for (int u = 0; u < 4; u++) step(raw[u], k + u * 256);
  }
  for (; k < K8; k += 256) step(__ldg(reinterpret_cast<const uint4*>(w + k)), k);
  for (int64_t k = K8 + lane; k < K; k += 32) {
    const float wv = to_f32<WT>(w[k]);
#pragma unroll
    for (int t = 0; t < MAXT; t++)
      if (t < T) acc[t] += wv * x[t * ldx + k];
  }
#pragma unroll
  for (int t = 0; t < MAXT; t++) acc[t] = warp_sum(acc[t]);
  if (lane == 0) {
    const float b = bias ? bias[o] : 0.f;
#pragma unroll
    for (int t = 0; t < MAXT; t++) {
      if (t < T) {
        float* yp = y + t * ldy + o;
        const float v = acc[t] + b;
        *yp = accumulate ? *yp + v : v;
      }
    }
  }
}

// ---- activations quantized to 8 bits (the CPU's quantize_row_q8) ------------------------------------------------
// Block b of token t: q[32] = round(x / d), d = max|x| / 127; r[32] the rounding residual quantized the same
// way with d2 (8-bit weights multiply both, as on the CPU); s = sum of q (q4_0's offset, q4_k's minimums).
struct XQ {
  int8_t* q;
  int8_t* r;
  float* d;
  float* d2;
  int32_t* s;
};

__global__ void quantize_x_kernel(const float* __restrict__ x, int64_t ldx, int64_t nb, int64_t total_blocks, XQ xq) {
  const int lane = threadIdx.x & 31;
  const int64_t blk = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (blk >= total_blocks) return;
  const int64_t t = blk / nb, b = blk % nb;
  const float v = x[t * ldx + b * 32 + lane];
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
  const float qf = roundf(v * id);  // half away from zero, as gguf-py's np_roundf
  const int q = (int)qf;
  const float res = v - qf * d;
  const float rmax = warp_max(fabsf(res));
  const float d2 = rmax / 127.f, id2 = d2 != 0.f ? 1.f / d2 : 0.f;
  int qs = q;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) qs += __shfl_xor_sync(kFullMask, qs, o);
  xq.q[blk * 32 + lane] = (int8_t)q;
  xq.r[blk * 32 + lane] = (int8_t)(int)roundf(res * id2);
  if (lane == 0) {
    xq.d[blk] = d;
    xq.d2[blk] = d2;
    xq.s[blk] = qs;
  }
}

// ---- GEMV, quantized weights ------------------------------------------------------------------------------------
// One warp per output row; lane i takes the weight blocks of 32 i, i + 32, ... and each token's matching
// activation block. q8_0 / q4_0 quants are 16-byte aligned (split at upload); q4_k quants too (144-byte
// super-blocks); q6_k's 210-byte super-blocks are read byte by byte.
__device__ __forceinline__ int dp4a(int a, int b, int c) { return __dp4a(a, b, c); }

template <int DT, int MAXT>
__global__ void __launch_bounds__(kGemvWarps * 32)
gemv_quant_kernel(DevMatrix W, XQ xq, int64_t nb, int T, const float* __restrict__ bias, float* __restrict__ y,
                  int64_t ldy, bool accumulate) {
  const int lane = threadIdx.x & 31;
  const int64_t o = (int64_t)blockIdx.x * kGemvWarps + (threadIdx.x >> 5);
  if (o >= W.rows) return;
  float acc[MAXT];
#pragma unroll
  for (int t = 0; t < MAXT; t++) acc[t] = 0.f;
  if constexpr (DT == (int)DType::Q4_0 || DT == (int)DType::Q8_0) {
    // 16 (q4_0) or 32 (q8_0) bytes of quants per block, 16-byte aligned (split at upload), and an f16 scale
    constexpr int QB = DT == (int)DType::Q4_0 ? 16 : 32;
    const uint8_t* wrow = static_cast<const uint8_t*>(W.data) + o * nb * QB;
    const uint16_t* srow = W.scales + o * nb;
    auto block = [&](const uint4 w0, const uint4 w1, const uint16_t sbits, int64_t b) {
      const float dw = f16_bits_to_f32(sbits);
      if constexpr (DT == (int)DType::Q4_0) {
        const int lo[4] = {(int)(w0.x & 0x0F0F0F0Fu), (int)(w0.y & 0x0F0F0F0Fu), (int)(w0.z & 0x0F0F0F0Fu),
                           (int)(w0.w & 0x0F0F0F0Fu)};
        const int hi[4] = {(int)((w0.x >> 4) & 0x0F0F0F0Fu), (int)((w0.y >> 4) & 0x0F0F0F0Fu),
                           (int)((w0.z >> 4) & 0x0F0F0F0Fu), (int)((w0.w >> 4) & 0x0F0F0F0Fu)};
#pragma unroll
        for (int t = 0; t < MAXT; t++) {
          if (t == 0 || t < T) {  // T >= 1: token 0 unconditional, so loads stay hoisted
            const int64_t xb = t * nb + b;
            const int4* xp = reinterpret_cast<const int4*>(xq.q + xb * 32);
            const int4 a = xp[0], c = xp[1];
            int s = dp4a(lo[0], a.x, 0);
            s = dp4a(lo[1], a.y, s);
            s = dp4a(lo[2], a.z, s);
            s = dp4a(lo[3], a.w, s);
            s = dp4a(hi[0], c.x, s);
            s = dp4a(hi[1], c.y, s);
            s = dp4a(hi[2], c.z, s);
            s = dp4a(hi[3], c.w, s);
            acc[t] += dw * xq.d[xb] * (float)(s - 8 * xq.s[xb]);
          }
        }
      } else {
        const int wv[8] = {(int)w0.x, (int)w0.y, (int)w0.z, (int)w0.w, (int)w1.x, (int)w1.y, (int)w1.z, (int)w1.w};
#pragma unroll
        for (int t = 0; t < MAXT; t++) {
          if (t == 0 || t < T) {  // T >= 1: token 0 unconditional, so loads stay hoisted
            const int64_t xb = t * nb + b;
            const int4* qp = reinterpret_cast<const int4*>(xq.q + xb * 32);
            const int4* rp = reinterpret_cast<const int4*>(xq.r + xb * 32);
            const int4 q0 = qp[0], q1 = qp[1], r0 = rp[0], r1 = rp[1];
            const int qv[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
            const int rv[8] = {r0.x, r0.y, r0.z, r0.w, r1.x, r1.y, r1.z, r1.w};
            int sq = 0, sr = 0;
#pragma unroll
            for (int i = 0; i < 8; i++) sq = dp4a(wv[i], qv[i], sq), sr = dp4a(wv[i], rv[i], sr);
            acc[t] += dw * (xq.d[xb] * (float)sq + xq.d2[xb] * (float)sr);
          }
        }
      }
    };
    auto load = [&](int64_t b, uint4& w0, uint4& w1, uint16_t& sbits) {  // __ldg: one 16-byte load each
      w0 = __ldg(reinterpret_cast<const uint4*>(wrow + b * QB));
      if constexpr (QB == 32) w1 = __ldg(reinterpret_cast<const uint4*>(wrow + b * QB + 16));
      else w1 = make_uint4(0, 0, 0, 0);
      sbits = __ldg(srow + b);
    };
    // four blocks' weights in flight before any is used, then the rest one by one
    int64_t b = lane;
    for (; b + 96 < nb; b += 128) {
      uint4 w0[4], w1[4];
      uint16_t sb[4];
#pragma unroll
      for (int u = 0; u < 4; u++) load(b + 32 * u, w0[u], w1[u], sb[u]);
#pragma unroll
      for (int u = 0; u < 4; u++) block(w0[u], w1[u], sb[u], b + 32 * u);
    }
    for (; b < nb; b += 32) {
      uint4 w0, w1;
      uint16_t sb;
      load(b, w0, w1, sb);
      block(w0, w1, sb, b);
    }
  } else {  // q4_k, q6_k
    for (int64_t b = lane; b < nb; b += 32) {
      if constexpr (DT == (int)DType::Q4_K) {
        // activation block b = sub-block j of super-block b / 8: value = d * sc_j * nibble - dmin * m_j
        const int j = (int)(b & 7);
        const uint8_t* p = static_cast<const uint8_t*>(W.data) + o * W.ld + (b >> 3) * 144;
        int sc, m;
        q4k_scale_min(j, p + 4, sc, m);
        const float ds = f16_at(p) * (float)sc, dm = f16_at(p + 2) * (float)m;
        const int4* qp = reinterpret_cast<const int4*>(p + 16 + 32 * (j >> 1));
        const int4 v0 = __ldg(qp), v1 = __ldg(qp + 1);
        const int sh = 4 * (j & 1);
        const int nib[8] = {(v0.x >> sh) & 0x0F0F0F0F, (v0.y >> sh) & 0x0F0F0F0F, (v0.z >> sh) & 0x0F0F0F0F,
                            (v0.w >> sh) & 0x0F0F0F0F, (v1.x >> sh) & 0x0F0F0F0F, (v1.y >> sh) & 0x0F0F0F0F,
                            (v1.z >> sh) & 0x0F0F0F0F, (v1.w >> sh) & 0x0F0F0F0F};
#pragma unroll
        for (int t = 0; t < MAXT; t++) {
          if (t == 0 || t < T) {  // T >= 1: token 0 unconditional, so loads stay hoisted
            const int64_t xb = t * nb + b;
            const int* xi = reinterpret_cast<const int*>(xq.q + xb * 32);
            int s = 0;
#pragma unroll
            for (int i = 0; i < 8; i++) s = dp4a(nib[i], xi[i], s);
            acc[t] += xq.d[xb] * (ds * (float)s - dm * (float)xq.s[xb]);
          }
        }
      } else {  // Q6_K: activation block b = elements 32 g .. 32 g + 31 of super-block b / 8, two 16-element scales
        const int g = (int)(b & 7);
        const uint8_t* p = static_cast<const uint8_t*>(W.data) + o * W.ld + (b >> 3) * 210;
        const uint8_t* lo = p + (g >> 2) * 64 + 32 * (g & 1);
        const uint8_t* hi = p + 128 + (g >> 2) * 32;
        const int lsh = 4 * ((g >> 1) & 1), hsh = 2 * (g & 3);
        const float d = f16_at(p + 208);
        const float sc0 = (float)(int8_t)p[192 + 2 * g], sc1 = (float)(int8_t)p[192 + 2 * g + 1];
        int vals[8];
#pragma unroll
        for (int i4 = 0; i4 < 8; i4++) {
          uint32_t packed = 0;
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int i = 4 * i4 + e;
            const int q = (((lo[i] >> lsh) & 15) | (((hi[i] >> hsh) & 3) << 4)) - 32;
            packed |= (uint32_t)(uint8_t)(int8_t)q << (8 * e);
          }
          vals[i4] = (int)packed;
        }
#pragma unroll
        for (int t = 0; t < MAXT; t++) {
          if (t == 0 || t < T) {  // T >= 1: token 0 unconditional, so loads stay hoisted
            const int64_t xb = t * nb + b;
            const int* xi = reinterpret_cast<const int*>(xq.q + xb * 32);
            int s0 = 0, s1 = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) s0 = dp4a(vals[i], xi[i], s0);
#pragma unroll
            for (int i = 4; i < 8; i++) s1 = dp4a(vals[i], xi[i], s1);
            acc[t] += d * xq.d[xb] * (sc0 * (float)s0 + sc1 * (float)s1);
          }
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < MAXT; t++) acc[t] = warp_sum(acc[t]);
  if (lane == 0) {
    const float bv = bias ? bias[o] : 0.f;
#pragma unroll
    for (int t = 0; t < MAXT; t++) {
      if (t == 0 || t < T) {  // T >= 1: token 0 unconditional, so loads stay hoisted
        float* yp = y + t * ldy + o;
        const float v = acc[t] + bv;
        *yp = accumulate ? *yp + v : v;
      }
    }
  }
}

// ---- tensor-core tiles (T > 8) ------------------------------------------------------------------------------------
// A 64 x 64 tile of y per block of 4 warps (2 x 2, each 32 x 32 = 2 x 2 WMMA fragments), K in steps of 32:
// x rows converted to f16 (bf16 for bf16 weights) and W rows dequantized into shared memory, then 16x16x16
// products accumulated in f32. Every load is bounds-checked (zero outside), so any T, O, K work.
constexpr int kTM = 64, kTN = 64, kTK = 32, kTPad = 8, kTThreads = 128;

template <typename AT>
__device__ __forceinline__ AT from_f32(float v) {
  if constexpr (std::is_same<AT, __half>::value) return __float2half_rn(v);
  else return __float2bfloat16_rn(v);
}

template <int DT>
__global__ void __launch_bounds__(kTThreads)
gemm_kernel(const float* __restrict__ x, int64_t ldx, DevMatrix W, int64_t T, const float* __restrict__ bias,
            float* __restrict__ y, int64_t ldy, bool accumulate) {
  using namespace nvcuda;
  using AT = __half;  // bf16 weights too: their values are exact in f16 (but for the tiniest), x keeps 11 bits
  __shared__ __align__(32) AT As[kTM][kTK + kTPad];
  __shared__ __align__(32) AT Bs[kTN][kTK + kTPad];
  __shared__ __align__(32) float Cs[kTM][kTN + 4];
  const int64_t O = W.rows, K = W.cols;
  const int tid = threadIdx.x, warp = tid >> 5, wm = warp >> 1, wn = warp & 1;
  const int64_t m0 = (int64_t)blockIdx.y * kTM, n0 = (int64_t)blockIdx.x * kTN;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[2][2];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) wmma::fill_fragment(c[i][j], 0.f);
  for (int64_t k0 = 0; k0 < K; k0 += kTK) {
    for (int e = tid; e < kTM * kTK; e += kTThreads) {
      const int r = e / kTK, cc = e % kTK;
      const int64_t gr = m0 + r, gk = k0 + cc;
      As[r][cc] = from_f32<AT>(gr < T && gk < K ? x[gr * ldx + gk] : 0.f);
    }
    for (int e = tid; e < kTN * kTK; e += kTThreads) {
      const int r = e / kTK, cc = e % kTK;
      const int64_t go = n0 + r, gk = k0 + cc;
      Bs[r][cc] = from_f32<AT>(go < O && gk < K ? weight_at<DT>(W, go, gk) : 0.f);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, AT, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, AT, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; i++) wmma::load_matrix_sync(a[i], &As[wm * 32 + i * 16][kk], kTK + kTPad);
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], &Bs[wn * 32 + j * 16][kk], kTK + kTPad);
#pragma unroll
      for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::mma_sync(c[i][j], a[i], b[j], c[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++)
      wmma::store_matrix_sync(&Cs[wm * 32 + i * 16][wn * 32 + j * 16], c[i][j], kTN + 4, wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kTM * kTN; e += kTThreads) {
    const int r = e / kTN, cc = e % kTN;
    const int64_t gr = m0 + r, go = n0 + cc;
    if (gr < T && go < O) {
      const float v = Cs[r][cc] + (bias ? bias[go] : 0.f);
      float* yp = y + gr * ldy + go;
      *yp = accumulate ? *yp + v : v;
    }
  }
}

// Prompts of 64 tokens or more: a 128 x 128 tile per block of 8 warps (2 x 4, each 64 x 32 = 4 x 2 fragments).
// Each thread moves 4 groups of 4 consecutive k of x and of W per K step (16-byte / 8-byte loads where aligned),
// and loads the next step's groups into registers while the tensor cores work on the current one. The epilogue
// goes through a 16 x 16 staging tile per warp (bias, accumulate, bounds).
constexpr int kBM = 128, kBN = 128, kBK = 32, kBPad = 8, kBThreads = 256;

template <typename AT>
__device__ __forceinline__ uint2 pack4(float a, float b, float c, float d) {
  uint2 r;
  if constexpr (std::is_same<AT, __half>::value) {
    const __half2 lo = __floats2half2_rn(a, b), hi = __floats2half2_rn(c, d);
    r.x = *reinterpret_cast<const uint32_t*>(&lo);
    r.y = *reinterpret_cast<const uint32_t*>(&hi);
  } else {
    const __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    r.x = *reinterpret_cast<const uint32_t*>(&lo);
    r.y = *reinterpret_cast<const uint32_t*>(&hi);
  }
  return r;
}

template <int DT>
__global__ void __launch_bounds__(kBThreads)
gemm_big_kernel(const float* __restrict__ x, int64_t ldx, DevMatrix W, int64_t T, const float* __restrict__ bias,
                float* __restrict__ y, int64_t ldy, bool accumulate, bool xvec) {
  using namespace nvcuda;
  using AT = __half;  // as gemm_kernel
  constexpr bool kPlain = DT == (int)DType::F16;
  __shared__ __align__(32) AT As[kBM][kBK + kBPad];
  __shared__ __align__(32) AT Bs[kBN][kBK + kBPad];
  __shared__ __align__(32) float Cs[kBThreads / 32][16][16 + 4];
  const int64_t O = W.rows, K = W.cols;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wm = warp >> 2, wn = warp & 3;
  const int64_t m0 = (int64_t)blockIdx.y * kBM, n0 = (int64_t)blockIdx.x * kBN;
  uint2 ra[4], rb[4];  // this thread's 4 groups of 4 (as AT) of x and of W for one K step
  auto load = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int g = tid + kBThreads * i, r = g >> 3, kq = (g & 7) * 4;
      const int64_t gr = m0 + r, go = n0 + r, gk = k0 + kq;
      if (gr < T && gk + 3 < K && xvec) {
        const float4 v = *reinterpret_cast<const float4*>(x + gr * ldx + gk);
        ra[i] = pack4<AT>(v.x, v.y, v.z, v.w);
      } else {
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = gr < T && gk + e < K ? x[gr * ldx + gk + e] : 0.f;
        ra[i] = pack4<AT>(v[0], v[1], v[2], v[3]);
      }
      if constexpr (kPlain || DT == (int)DType::BF16) {
        uint16_t h[4];
        if (go < O && gk + 3 < K) {  // rows are 16-byte aligned and gk a multiple of 4: an 8-byte load
          const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(W.data) + go * W.ld + gk);
          h[0] = raw.x & 0xffff, h[1] = raw.x >> 16, h[2] = raw.y & 0xffff, h[3] = raw.y >> 16;
        } else {
#pragma unroll
          for (int e = 0; e < 4; e++)
            h[e] = go < O && gk + e < K ? static_cast<const uint16_t*>(W.data)[go * W.ld + gk + e] : (uint16_t)0;
        }
        if constexpr (kPlain) {
          rb[i].x = h[0] | ((uint32_t)h[1] << 16);
          rb[i].y = h[2] | ((uint32_t)h[3] << 16);
        } else {
          rb[i] = pack4<AT>(bf16_bits_to_f32(h[0]), bf16_bits_to_f32(h[1]), bf16_bits_to_f32(h[2]),
                            bf16_bits_to_f32(h[3]));
        }
      } else {
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = go < O && gk + e < K ? weight_at<DT>(W, go, gk + e) : 0.f;
        rb[i] = pack4<AT>(v[0], v[1], v[2], v[3]);
      }
    }
  };
  auto store = [&]() {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int g = tid + kBThreads * i, r = g >> 3, kq = (g & 7) * 4;
      *reinterpret_cast<uint2*>(&As[r][kq]) = ra[i];
      *reinterpret_cast<uint2*>(&Bs[r][kq]) = rb[i];
    }
  };
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[4][2];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) wmma::fill_fragment(c[i][j], 0.f);
  load(0);
  store();
  __syncthreads();
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
    const bool more = k0 + kBK < K;
    if (more) load(k0 + kBK);  // in flight while the tensor cores work
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, AT, wmma::col_major> b[2];
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], &Bs[wn * 32 + j * 16][kk], kBK + kBPad);
#pragma unroll
      for (int i = 0; i < 4; i++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, AT, wmma::row_major> a;
        wmma::load_matrix_sync(a, &As[wm * 64 + i * 16][kk], kBK + kBPad);
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::mma_sync(c[i][j], a, b[j], c[i][j]);
      }
    }
    __syncthreads();  // every warp is done with this tile
    if (more) {
      store();
      __syncthreads();
    }
  }
  float* cs = &Cs[warp][0][0];
#pragma unroll
  for (int i = 0; i < 4; i++) {
#pragma unroll
    for (int j = 0; j < 2; j++) {
      wmma::store_matrix_sync(cs, c[i][j], 16 + 4, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int rr = e >> 4, cc = e & 15;
        const int64_t gr = m0 + wm * 64 + i * 16 + rr, go = n0 + wn * 32 + j * 16 + cc;
        if (gr < T && go < O) {
          const float v = cs[rr * (16 + 4) + cc] + (bias ? bias[go] : 0.f);
          float* yp = y + gr * ldy + go;
          *yp = accumulate ? *yp + v : v;
        }
      }
      __syncwarp();
    }
  }
}

template <typename WT, int MAXT>
void launch_gemv_float(const DevMatrix& W, const float* x, int64_t ldx, int T, const float* bias, float* y, int64_t ldy,
                       bool accumulate, cudaStream_t s) {
  const unsigned grid = (unsigned)((W.rows + kGemvWarps - 1) / kGemvWarps);
  const bool xvec = ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const WT* w = static_cast<const WT*>(W.data);
  if (xvec)
    gemv_float_kernel<WT, MAXT, true><<<grid, kGemvWarps * 32, 0, s>>>(w, W.ld, W.rows, W.cols, x, ldx, T, bias, y, ldy,
                                                                      accumulate);
  else
    gemv_float_kernel<WT, MAXT, false><<<grid, kGemvWarps * 32, 0, s>>>(w, W.ld, W.rows, W.cols, x, ldx, T, bias, y,
                                                                       ldy, accumulate);
  EF_CUDA_LAUNCHED(gemv_float_kernel);
}

template <int DT, int MAXT>
void launch_gemv_quant(const DevMatrix& W, const XQ& xq, int64_t nb, int T, const float* bias, float* y, int64_t ldy,
                       bool accumulate, cudaStream_t s) {
  const unsigned grid = (unsigned)((W.rows + kGemvWarps - 1) / kGemvWarps);
  gemv_quant_kernel<DT, MAXT><<<grid, kGemvWarps * 32, 0, s>>>(W, xq, nb, T, bias, y, ldy, accumulate);
  EF_CUDA_LAUNCHED(gemv_quant_kernel);
}

template <int DT>
void gemv_quant(const DevMatrix& W, const XQ& xq, int64_t nb, int T, const float* bias, float* y, int64_t ldy,
                bool accumulate, cudaStream_t s) {
  if (T <= 1) launch_gemv_quant<DT, 1>(W, xq, nb, T, bias, y, ldy, accumulate, s);
  else if (T <= 2) launch_gemv_quant<DT, 2>(W, xq, nb, T, bias, y, ldy, accumulate, s);
  else if (T <= 4) launch_gemv_quant<DT, 4>(W, xq, nb, T, bias, y, ldy, accumulate, s);
  else launch_gemv_quant<DT, 8>(W, xq, nb, T, bias, y, ldy, accumulate, s);
}

template <typename WT>
void gemv_float(const DevMatrix& W, const float* x, int64_t ldx, int T, const float* bias, float* y, int64_t ldy,
                bool accumulate, cudaStream_t s) {
  if (T <= 1) launch_gemv_float<WT, 1>(W, x, ldx, T, bias, y, ldy, accumulate, s);
  else if (T <= 2) launch_gemv_float<WT, 2>(W, x, ldx, T, bias, y, ldy, accumulate, s);
  else if (T <= 4) launch_gemv_float<WT, 4>(W, x, ldx, T, bias, y, ldy, accumulate, s);
  else launch_gemv_float<WT, 8>(W, x, ldx, T, bias, y, ldy, accumulate, s);
}

// ---- prompts through cuBLAS (blas.cc) -------------------------------------------------------------------------
// The activations' rows and the matrix's rows in f16 (the values the tiles above multiply: x rounded to f16,
// weights as weight_at gives them, rounded to f16), then one cuBLAS GEMM with f32 accumulation per chunk of rows.
template <int DT>
__global__ void dequant_rows_f16_kernel(DevMatrix W, int64_t o0, int64_t rows, __half* out, int64_t ldo) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < W.cols; k += (int64_t)gridDim.x * blockDim.x)
      out[r * ldo + k] = __float2half_rn(weight_at<DT>(W, o0 + r, k));
}

__global__ void add_bias_kernel(float* y, int64_t ldy, int64_t T, int64_t O, const float* __restrict__ bias) {
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y)
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < O; o += (int64_t)gridDim.x * blockDim.x)
      y[t * ldy + o] += bias[o];
}

// False (nothing written) when no cuBLAS is usable, its scratch cannot be had, or its first call fails: the caller
// runs the tiles. The scratch (the caller's, one per model) holds cuBLAS's workspace, up to 64 MiB of the
// activations in f16 (a chunk of rows at a time) and, for any matrix but aligned f16, up to 64 MiB of its rows
// dequantized to f16. A bias is added after the product: y = (y + x W^T) + b where the tiles compute
// y + (x W^T + b), the same to rounding.
bool blas_linear(const DevMatrix& W, const float* x, int64_t ldx, int64_t T, const float* bias, float* y, int64_t ldy,
                 bool accumulate, Scratch& ws, cudaStream_t s) {
  if (!blas_usable()) return false;
  constexpr int64_t kChunkBytes = (int64_t)64 << 20;
  const int64_t O = W.rows, K = W.cols, ldk = (K + 7) & ~(int64_t)7;
  const bool plain = W.dtype == DType::F16 && W.ld % 8 == 0 && reinterpret_cast<uintptr_t>(W.data) % 16 == 0;
  const int64_t row_chunk = std::max<int64_t>(64, (kChunkBytes / (2 * ldk)) & ~(int64_t)7);
  const int64_t tchunk = std::min(T, row_chunk), ochunk = plain ? O : std::min(O, row_chunk);
  const auto round_up = [](size_t n) { return (n + 255) & ~(size_t)255; };
  const size_t xbytes = round_up((size_t)(tchunk * ldk * 2)), wbytes = plain ? 0 : round_up((size_t)(ochunk * ldk * 2));
  uint8_t* base = nullptr;
  try {
    base = ws.ensure_as<uint8_t>(kBlasWorkspace + xbytes + wbytes);
  } catch (const Error&) {  // out of device memory: the tiles need none
    return false;
  }
  void* work = base;
  __half* x16 = reinterpret_cast<__half*>(base + kBlasWorkspace);
  __half* w16 = reinterpret_cast<__half*>(base + kBlasWorkspace + xbytes);
  bool first = true;
  for (int64_t t0 = 0; t0 < T; t0 += tchunk) {
    const int64_t tn = std::min(tchunk, T - t0);
    f32_to_f16_rows(x + t0 * ldx, ldx, tn, K, reinterpret_cast<uint16_t*>(x16), ldk, s);
    for (int64_t o0 = 0; o0 < O; o0 += ochunk) {
      const int64_t rows = std::min(ochunk, O - o0);
      const void* A = w16;
      int64_t lda = ldk;
      if (plain) {
        A = static_cast<const uint16_t*>(W.data) + o0 * W.ld, lda = W.ld;
      } else {
#define EF_LAUNCH(DT)                                                                               \
  dequant_rows_f16_kernel<DT><<<rows_grid(rows, K), 256, 0, s>>>(W, o0, rows, w16, ldk); \
  EF_CUDA_LAUNCHED(dequant_rows_f16_kernel)
        EF_CUDA_DISPATCH_WEIGHT(W.dtype, EF_LAUNCH);
#undef EF_LAUNCH
      }
      if (!blas_gemm_f16(rows, tn, K, A, lda, x16, ldk, y + t0 * ldy + o0, ldy, accumulate, work, kBlasWorkspace, s)) {
        EF_CHECK(first, "CUDA linear: cuBLAS failed part way through a matrix");
        return false;
      }
      first = false;
    }
  }
  if (bias) {
    add_bias_kernel<<<rows_grid(T, O), 256, 0, s>>>(y, ldy, T, O, bias);
    EF_CUDA_LAUNCHED(add_bias_kernel);
  }
  return true;
}

}  // namespace

void linear(const DevMatrix& W, const float* x, int64_t ldx, int64_t T, const float* bias, float* y, int64_t ldy,
            bool accumulate, Scratch& ws, cudaStream_t s) {
  if (T <= 0 || W.rows <= 0) return;
  const int64_t O = W.rows, K = W.cols;
  EF_CHECK(K > 0 && ldx >= K && ldy >= O, "CUDA linear: bad strides");
  EF_CHECK(W.data != nullptr, "CUDA linear: weights not on the device");
  if (T <= kGemvMaxT) {
    if (W.dtype == DType::F16 || W.dtype == DType::BF16) {
      EF_CHECK(W.ld % 8 == 0 && reinterpret_cast<uintptr_t>(W.data) % 16 == 0,
               "CUDA linear: f16/bf16 rows must be padded to 8 elements and 16-byte aligned");
      if (W.dtype == DType::F16) gemv_float<__half>(W, x, ldx, (int)T, bias, y, ldy, accumulate, s);
      else gemv_float<__nv_bfloat16>(W, x, ldx, (int)T, bias, y, ldy, accumulate, s);
      return;
    }
    EF_CHECK(is_quantized(W.dtype) && K % 32 == 0, "CUDA linear: quantized rows must be whole blocks of 32");
    EF_CHECK(W.dtype == DType::Q8_0 || W.dtype == DType::Q4_0 || K % 256 == 0,
             "CUDA linear: q4_k / q6_k rows must be whole super-blocks of 256");
    const int64_t nb = K / 32, blocks = T * nb;
    // scratch: q [blocks][32], r [blocks][32], d, d2 [blocks], s [blocks]
    uint8_t* base = ws.ensure_as<uint8_t>((size_t)blocks * (64 + 12) + 64);
    XQ xq;
    xq.q = reinterpret_cast<int8_t*>(base);
    xq.r = xq.q + blocks * 32;
    xq.d = reinterpret_cast<float*>(xq.r + blocks * 32);
    xq.d2 = xq.d + blocks;
    xq.s = reinterpret_cast<int32_t*>(xq.d2 + blocks);
    quantize_x_kernel<<<grid_for(blocks, 8, 1 << 30), 256, 0, s>>>(x, ldx, nb, blocks, xq);
    EF_CUDA_LAUNCHED(quantize_x_kernel);
    switch (W.dtype) {
      case DType::Q8_0: gemv_quant<(int)DType::Q8_0>(W, xq, nb, (int)T, bias, y, ldy, accumulate, s); break;
      case DType::Q4_0: gemv_quant<(int)DType::Q4_0>(W, xq, nb, (int)T, bias, y, ldy, accumulate, s); break;
      case DType::Q4_K: gemv_quant<(int)DType::Q4_K>(W, xq, nb, (int)T, bias, y, ldy, accumulate, s); break;
      case DType::Q6_K: gemv_quant<(int)DType::Q6_K>(W, xq, nb, (int)T, bias, y, ldy, accumulate, s); break;
      default: throw ValueError(std::string("CUDA linear: no kernel for weights of type ") + dtype_name(W.dtype));
    }
    return;
  }
  if (T >= kGemmBigMinT && blas_linear(W, x, ldx, T, bias, y, ldy, accumulate, ws, s)) return;
  EF_CHECK((T + kTM - 1) / kTM <= 65535, "CUDA linear: too many rows for one call");
  if (T >= kGemmBigMinT) {
    const dim3 grid((unsigned)((O + kBN - 1) / kBN), (unsigned)((T + kBM - 1) / kBM));
    const bool xvec = ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
#define EF_LAUNCH(DT)                                                                                  \
  gemm_big_kernel<DT><<<grid, kBThreads, 0, s>>>(x, ldx, W, T, bias, y, ldy, accumulate, xvec); \
  EF_CUDA_LAUNCHED(gemm_big_kernel)
    EF_CUDA_DISPATCH_WEIGHT(W.dtype, EF_LAUNCH);
#undef EF_LAUNCH
    return;
  }
  const dim3 grid((unsigned)((O + kTN - 1) / kTN), (unsigned)((T + kTM - 1) / kTM));
#define EF_LAUNCH(DT)                                                                        \
  gemm_kernel<DT><<<grid, kTThreads, 0, s>>>(x, ldx, W, T, bias, y, ldy, accumulate); \
  EF_CUDA_LAUNCHED(gemm_kernel)
  EF_CUDA_DISPATCH_WEIGHT(W.dtype, EF_LAUNCH);
#undef EF_LAUNCH
}

}  // namespace cuda
}  // namespace ef
