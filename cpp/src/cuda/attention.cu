// Rotary embedding + KV-cache append, and attention: prompts by query tiles against key tiles in shared memory
// with an online softmax (flash-style), one token (decode) by split-K over the cache and a combine step.
#include <algorithm>
#include <string>

#include "device.cuh"

namespace ef {
namespace cuda {

namespace {

template <bool F16>
__device__ __forceinline__ float kv_load(const void* base, int64_t i) {
  if constexpr (F16) return __half2float(static_cast<const __half*>(base)[i]);
  else return static_cast<const float*>(base)[i];
}

template <bool F16>
__device__ __forceinline__ void kv_store(void* base, int64_t i, float v) {
  if constexpr (F16) static_cast<__half*>(base)[i] = __float2half_rn(v);
  else static_cast<float*>(base)[i] = v;
}

// Element d of a head vector p after the rotation (ops::rope): Half pairs (i, i + half), Interleaved (2i, 2i + 1).
__device__ __forceinline__ float rotated(const float* p, int d, const float* c, const float* s, int half, bool interleaved) {
  if (d >= 2 * half) return p[d];
  if (interleaved) {
    const int i = d >> 1;
    const float a = p[2 * i], b = p[2 * i + 1];
    return (d & 1) ? b * c[i] + a * s[i] : a * c[i] - b * s[i];
  }
  const int i = d < half ? d : d - half;
  const float a = p[i], b = p[i + half];
  return d < half ? a * c[i] - b * s[i] : b * c[i] + a * s[i];
}

// One block per token: q rotated pair by pair in place; k rotated and v copied into the cache.
template <bool F16>
__global__ void rope_store_kernel(RopeStoreArgs a) {
  const int t = blockIdx.x, hd = a.head_dim, half = a.half;
  const int32_t p0 = a.dyn_pos ? *a.dyn_pos : a.pos0, row0 = a.dyn_pos ? p0 : a.tab_row0;
  const int32_t pos = p0 + t;
  const float* c = a.cos ? a.cos + (int64_t)(row0 + t) * half : nullptr;
  const float* s = a.sin ? a.sin + (int64_t)(row0 + t) * half : nullptr;
  if (c) {
    float* q = a.q + (int64_t)t * a.ldq;
    for (int e = threadIdx.x; e < a.n_heads * half; e += blockDim.x) {
      const int h = e / half, i = e % half;
      float* p = q + (int64_t)h * hd;
      const int i0 = a.interleaved ? 2 * i : i, i1 = a.interleaved ? 2 * i + 1 : i + half;
      const float x0 = p[i0], x1 = p[i1];
      p[i0] = x0 * c[i] - x1 * s[i];
      p[i1] = x1 * c[i] + x0 * s[i];
    }
  }
  const float* k = a.k + (int64_t)t * a.ldk;
  const float* v = a.v + (int64_t)t * a.ldv;
  for (int e = threadIdx.x; e < a.n_kv * hd; e += blockDim.x) {
    const int g = e / hd, d = e % hd;
    const int64_t off = (int64_t)g * a.head_stride + (int64_t)pos * a.pos_stride + d;
    const float kv = c ? rotated(k + (int64_t)g * hd, d, c, s, half, a.interleaved) : k[(int64_t)g * hd + d];
    kv_store<F16>(a.kc, off, kv);
    kv_store<F16>(a.vc, off, v[(int64_t)g * hd + d]);
  }
}

__global__ void rope_inplace_kernel(float* x, int64_t heads, int64_t hd, const float* cos, const float* sin, int64_t half,
                                    bool interleaved) {
  const int64_t t = blockIdx.x;
  const float* c = cos + t * half;
  const float* s = sin + t * half;
  for (int64_t e = threadIdx.x; e < heads * half; e += blockDim.x) {
    float* p = x + (t * heads + e / half) * hd;
    const int64_t i = e % half;
    const int64_t i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
    const float x0 = p[i0], x1 = p[i1];
    p[i0] = x0 * c[i] - x1 * s[i];
    p[i1] = x1 * c[i] + x0 * s[i];
  }
}

// The score's additive term for head h, key j, query position pos (the CPU's ALiBi / relative bias).
__device__ __forceinline__ float score_bias(const AttnArgs& a, int h, int32_t j, int32_t pos, float slope) {
  if (a.alibi) {
    float b = slope * (float)j;
    if (a.alibi_bf16) b = __bfloat162float(__float2bfloat16_rn(b));
    return a.alibi_scaled ? b * a.scale : b;
  }
  if (a.rel) return a.rel[(int64_t)h * a.rel_width + (j - pos - a.rel_lo)];
  return 0.f;
}

__device__ __forceinline__ int32_t first_key(const AttnArgs& a, int32_t pos) {
  return a.window > 0 ? max(0, pos - a.window + 1) : 0;
}
__device__ __forceinline__ int32_t last_key(const AttnArgs& a, int32_t pos) {
  return a.causal ? min(pos, a.n_keys - 1) : a.n_keys - 1;
}

// ---- prompts ------------------------------------------------------------------------------------------------
// Block = 16 queries of one head (4 per warp) x key tiles of 32: the tile's keys and values go to shared memory
// (keys padded by one float per row: lane j reads key j's row without bank conflicts); lane j scores key j
// against the warp's query, and the warp keeps the running max m, sum l and output o (DPL dims per lane).
constexpr int kAQ = 16, kAK = 32, kAThreads = 128, kAQPerWarp = kAQ / (kAThreads / 32);

template <bool F16, int DPL>
__global__ void __launch_bounds__(kAThreads) attn_prefill_kernel(AttnArgs a) {
  extern __shared__ float sm[];
  const int hd = a.head_dim, h = blockIdx.y, g = h / a.group;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* Qs = sm;                   // [kAQ][hd]
  float* Ks = Qs + kAQ * hd;        // [kAK][hd + 1]
  float* Vs = Ks + kAK * (hd + 1);  // [kAK][hd]
  const int t0 = blockIdx.x * kAQ;
  const int nq = min(kAQ, a.T - t0);
  for (int e = threadIdx.x; e < kAQ * hd; e += kAThreads) {
    const int qi = e / hd, d = e % hd;
    Qs[e] = qi < nq ? a.q[(int64_t)(t0 + qi) * a.ldq + (int64_t)h * hd + d] : 0.f;
  }
  const int32_t klo = first_key(a, a.pos0 + t0), khi = last_key(a, a.pos0 + t0 + nq - 1);
  const float slope = a.alibi ? a.alibi[h] : 0.f;
  float m[kAQPerWarp], l[kAQPerWarp], o[kAQPerWarp][DPL];
#pragma unroll
  for (int qq = 0; qq < kAQPerWarp; qq++) {
    m[qq] = -INFINITY;
    l[qq] = 0.f;
#pragma unroll
    for (int i = 0; i < DPL; i++) o[qq][i] = 0.f;
  }
  const int64_t kv0 = (int64_t)g * a.head_stride;
  for (int32_t kt = klo; kt <= khi; kt += kAK) {
    __syncthreads();  // the previous tile (and, the first time, Qs) is complete / consumed
    for (int e = threadIdx.x; e < kAK * hd; e += kAThreads) {
      const int j = e / hd, d = e % hd;
      const int32_t key = kt + j;
      float kv = 0.f, vv = 0.f;
      if (key <= khi) {
        const int64_t off = kv0 + (int64_t)key * a.pos_stride + d;
        kv = kv_load<F16>(a.k, off);
        vv = kv_load<F16>(a.v, off);
      }
      Ks[j * (hd + 1) + d] = kv;
      Vs[j * hd + d] = vv;
    }
    __syncthreads();
#pragma unroll
    for (int qq = 0; qq < kAQPerWarp; qq++) {
      const int qi = warp * kAQPerWarp + qq;
      if (qi < nq) {  // uniform across the warp
        const int32_t pos = a.pos0 + t0 + qi;
        const int32_t key = kt + lane;
        const bool vis = key >= first_key(a, pos) && key <= last_key(a, pos) && (!a.key_mask || a.key_mask[key]);
        float sc = -INFINITY;
        if (vis) {
          const float* qv = Qs + qi * hd;
          const float* kr = Ks + lane * (hd + 1);
          float dot = 0.f;
          for (int d = 0; d < hd; d++) dot += qv[d] * kr[d];
          sc = dot * a.scale + score_bias(a, h, key, pos, slope);
        }
        const float tmax = warp_max(sc);
        if (tmax != -INFINITY) {  // uniform: some key of this tile is visible to this query
          const float mn = fmaxf(m[qq], tmax);
          const float alpha = expf(m[qq] - mn);  // 0 while m is -inf
          const float p = vis ? expf(sc - mn) : 0.f;
          l[qq] = l[qq] * alpha + warp_sum(p);
#pragma unroll
          for (int i = 0; i < DPL; i++) o[qq][i] *= alpha;
          for (int j = 0; j < kAK; j++) {
            const float pj = __shfl_sync(kFullMask, p, j);
            if (pj != 0.f) {
#pragma unroll
              for (int i = 0; i < DPL; i++) {
                const int d = lane + 32 * i;
                if (d < hd) o[qq][i] += pj * Vs[j * hd + d];
              }
            }
          }
          m[qq] = mn;
        }
      }
    }
  }
#pragma unroll
  for (int qq = 0; qq < kAQPerWarp; qq++) {
    const int qi = warp * kAQPerWarp + qq;
    if (qi < nq) {
      const float inv = l[qq] > 0.f ? 1.f / l[qq] : 0.f;  // no visible key: zeros, as the CPU
      float* out = a.out + (int64_t)(t0 + qi) * a.ldo + (int64_t)h * hd;
#pragma unroll
      for (int i = 0; i < DPL; i++) {
        const int d = lane + 32 * i;
        if (d < hd) out[d] = o[qq][i] * inv;
      }
    }
  }
}

// ---- one query (decode): split-K ---------------------------------------------------------------------------------
// Block (head, split) scores its chunk of keys (a warp per key, lanes over the head dims), takes the chunk's
// softmax, multiplies the values (a thread per dim) and writes its partial output with its max and sum; the
// combine kernel merges the splits.
constexpr int kDThreads = 128;

template <bool F16>
__global__ void __launch_bounds__(kDThreads)
attn_decode_kernel(AttnArgs a, int32_t lo, int32_t hi, int32_t chunk, int nsplit, float* part, float2* ml) {
  extern __shared__ float sm[];
  __shared__ float red[32];
  const int hd = a.head_dim, h = blockIdx.x, split = blockIdx.y, g = h / a.group;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* qs = sm;       // [hd]
  float* sc = sm + hd;  // [chunk]
  int32_t pos = a.pos0;
  if (a.dyn_pos) {  // the host sized the split for the longest range; this step's range starts at lo as always
    pos = *a.dyn_pos;
    lo = a.window > 0 ? max(0, pos - a.window + 1) : 0;
    hi = pos;
  }
  const int32_t start = lo + split * chunk, end = min(hi + 1, start + chunk);
  const int32_t n = max(0, end - start);
  for (int d = threadIdx.x; d < hd; d += kDThreads) qs[d] = a.q[(int64_t)h * hd + d];
  __syncthreads();
  const float slope = a.alibi ? a.alibi[h] : 0.f;
  const int64_t kv0 = (int64_t)g * a.head_stride;
  for (int32_t jj = warp; jj < n; jj += kDThreads / 32) {
    const int32_t j = start + jj;
    const int64_t off = kv0 + (int64_t)j * a.pos_stride;
    float dot = 0.f;
    for (int d = lane; d < hd; d += 32) dot += qs[d] * kv_load<F16>(a.k, off + d);
    dot = warp_sum(dot);
    if (lane == 0) sc[jj] = !a.key_mask || a.key_mask[j] ? dot * a.scale + score_bias(a, h, j, pos, slope) : -INFINITY;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < n; i += kDThreads) mx = fmaxf(mx, sc[i]);
  mx = block_max(mx, red);
  float sum = 0.f;
  for (int i = threadIdx.x; i < n; i += kDThreads) {
    const float p = mx == -INFINITY ? 0.f : expf(sc[i] - mx);
    sc[i] = p;
    sum += p;
  }
  sum = block_sum(sum, red);  // its barrier also publishes sc
  float* po = part + ((int64_t)h * nsplit + split) * hd;
  for (int d = threadIdx.x; d < hd; d += kDThreads) {
    float acc = 0.f;
    for (int jj = 0; jj < n; jj++) {
      const float p = sc[jj];
      if (p != 0.f) acc += p * kv_load<F16>(a.v, kv0 + (int64_t)(start + jj) * a.pos_stride + d);
    }
    po[d] = acc;
  }
  if (threadIdx.x == 0) ml[(int64_t)h * nsplit + split] = make_float2(mx, sum);
}

__global__ void attn_combine_kernel(const float* __restrict__ part, const float2* __restrict__ ml, int nsplit, int hd,
                                    float* out) {
  const int h = blockIdx.x;
  const float2* hm = ml + (int64_t)h * nsplit;
  float M = -INFINITY;
  for (int s = 0; s < nsplit; s++) M = fmaxf(M, hm[s].x);
  float L = 0.f;
  for (int s = 0; s < nsplit; s++)
    if (hm[s].x != -INFINITY) L += hm[s].y * expf(hm[s].x - M);
  const float inv = L > 0.f ? 1.f / L : 0.f;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.f;
    for (int s = 0; s < nsplit; s++)
      if (hm[s].x != -INFINITY) acc += part[((int64_t)h * nsplit + s) * hd + d] * expf(hm[s].x - M);
    out[(int64_t)h * hd + d] = acc * inv;
  }
}

int sm_count_of_current_device() {
  int dev = 0, n = 0;
  EF_CUDA_CHECK(cudaGetDevice(&dev));
  EF_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n > 0 ? n : 1;
}

int max_shared_optin() {
  int dev = 0, n = 0;
  EF_CUDA_CHECK(cudaGetDevice(&dev));
  EF_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return n;
}

template <bool F16, int DPL>
void launch_prefill(const AttnArgs& a, cudaStream_t s) {
  const size_t smem = (size_t)(kAQ * a.head_dim + kAK * (a.head_dim + 1) + kAK * a.head_dim) * sizeof(float);
  if (smem > 48 * 1024) {
    EF_CHECK((int64_t)smem <= max_shared_optin(), "CUDA attention: head_dim " + std::to_string(a.head_dim) +
                                                      " needs more shared memory than this device has");
    EF_CUDA_CHECK(cudaFuncSetAttribute(attn_prefill_kernel<F16, DPL>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  }
  const dim3 grid((unsigned)((a.T + kAQ - 1) / kAQ), (unsigned)a.n_heads);
  attn_prefill_kernel<F16, DPL><<<grid, kAThreads, smem, s>>>(a);
  EF_CUDA_LAUNCHED(attn_prefill_kernel);
}

template <bool F16>
void prefill(const AttnArgs& a, cudaStream_t s) {
  if (a.head_dim <= 32) launch_prefill<F16, 1>(a, s);
  else if (a.head_dim <= 64) launch_prefill<F16, 2>(a, s);
  else if (a.head_dim <= 128) launch_prefill<F16, 4>(a, s);
  else launch_prefill<F16, 8>(a, s);
}

template <bool F16>
void decode(const AttnArgs& a, Scratch& ws, cudaStream_t s) {
  const int32_t pos = a.pos0;
  int32_t lo = a.window > 0 ? std::max(0, pos - a.window + 1) : 0;
  int32_t hi = a.causal ? std::min(pos, a.n_keys - 1) : a.n_keys - 1;
  if (a.dyn_pos) {  // the position is on the device: size the split for the most keys it can see
    lo = 0;
    hi = (a.window > 0 ? std::min(a.n_keys, a.window) : a.n_keys) - 1;
  }
  const int32_t n = std::max(0, hi - lo + 1);
  // enough splits to give every multiprocessor two blocks, chunks of 64 .. 1024 keys (multiples of 32)
  const int64_t target = 2 * (int64_t)(a.sm_count > 0 ? a.sm_count : sm_count_of_current_device());
  int64_t nsplit = std::max<int64_t>((n + 1023) / 1024, std::min<int64_t>((target + a.n_heads - 1) / a.n_heads, (n + 63) / 64));
  nsplit = std::max<int64_t>(nsplit, 1);
  int32_t chunk = (int32_t)((n + nsplit - 1) / nsplit);
  chunk = std::max<int32_t>(32, (chunk + 31) / 32 * 32);
  nsplit = std::max<int64_t>(1, (n + chunk - 1) / chunk);
  EF_CHECK(nsplit <= 65535, "CUDA attention: too many keys");
  const size_t part_floats = (size_t)a.n_heads * nsplit * a.head_dim;
  float* part = ws.ensure_as<float>(part_floats + 2 * (size_t)a.n_heads * nsplit + 4);
  float2* ml = reinterpret_cast<float2*>(part + ((part_floats + 1) & ~(size_t)1));  // 8-byte aligned
  const size_t smem = (size_t)(a.head_dim + chunk) * sizeof(float);
  attn_decode_kernel<F16><<<dim3((unsigned)a.n_heads, (unsigned)nsplit), kDThreads, smem, s>>>(a, lo, hi, chunk,
                                                                                             (int)nsplit, part, ml);
  EF_CUDA_LAUNCHED(attn_decode_kernel);
  attn_combine_kernel<<<(unsigned)a.n_heads, 128, 0, s>>>(part, ml, (int)nsplit, a.head_dim, a.out);
  EF_CUDA_LAUNCHED(attn_combine_kernel);
}

}  // namespace

void rope_store(const RopeStoreArgs& a, cudaStream_t s) {
  if (a.T <= 0) return;
  EF_CHECK(!a.cos || 2 * a.half <= a.head_dim, "CUDA rope: rotary dims exceed head_dim");
  if (a.kv_f16) rope_store_kernel<true><<<(unsigned)a.T, 128, 0, s>>>(a);
  else rope_store_kernel<false><<<(unsigned)a.T, 128, 0, s>>>(a);
  EF_CUDA_LAUNCHED(rope_store_kernel);
}

void rope_inplace(float* x, int64_t T, int64_t heads, int64_t head_dim, const float* cos, const float* sin, int64_t half,
                  bool interleaved, cudaStream_t s) {
  if (T <= 0 || half <= 0) return;
  EF_CHECK(2 * half <= head_dim, "CUDA rope: rotary dims exceed head_dim");
  rope_inplace_kernel<<<(unsigned)T, 128, 0, s>>>(x, heads, head_dim, cos, sin, half, interleaved);
  EF_CUDA_LAUNCHED(rope_inplace_kernel);
}

void attention(const AttnArgs& a, Scratch& ws, cudaStream_t s) {
  if (a.T <= 0) return;
  EF_CHECK(a.head_dim > 0 && a.head_dim <= 256, "CUDA attention: head_dim " + std::to_string(a.head_dim) +
                                                    " is outside 1 .. 256");
  EF_CHECK(a.n_heads > 0 && a.group > 0 && a.n_heads % a.group == 0, "CUDA attention: bad head grouping");
  EF_CHECK(a.n_keys > 0, "CUDA attention: no keys");
  EF_CHECK(a.n_heads <= 65535, "CUDA attention: too many heads");
  EF_CHECK(!a.dyn_pos || (a.T == 1 && a.causal), "CUDA attention: a device-side position needs one causal query");
  if (a.T == 1) {
    if (a.kv_f16) decode<true>(a, ws, s);
    else decode<false>(a, ws, s);
  } else {
    if (a.kv_f16) prefill<true>(a, s);
    else prefill<false>(a, s);
  }
}

}  // namespace cuda
}  // namespace ef
