// Rotary embedding + KV-cache append, and attention: prompts by query tiles against key tiles in shared memory
// with an online softmax (flash-style), one token (decode) by split-K over the cache and a combine step.
#include <algorithm>
#include <string>

#include "device.cuh"

namespace ef {
namespace cuda {

namespace {

// Gemma 2's soft-capping of the scaled scores (before any bias or mask)
__device__ __forceinline__ float capped(const AttnArgs& a, float s) {
  return a.softcap > 0.f ? a.softcap * tanhf(s / a.softcap) : s;
}

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

// Grid (token, element block): thread e rotates q's pair e in place (e < n_heads * half) and puts element e of
// the token's k (rotated) and v in the cache (e < n_kv * head_dim); one element each, every load in flight.
template <bool F16>
__global__ void rope_store_kernel(RopeStoreArgs a) {
  const int t = blockIdx.x, hd = a.head_dim, half = a.half;
  const int e = blockIdx.y * blockDim.x + threadIdx.x;
  const int32_t p0 = a.dyn_pos ? *a.dyn_pos : a.pos0, row0 = a.dyn_pos ? p0 : a.tab_row0;
  const int32_t pos = p0 + t;
  const float* c = a.cos ? a.cos + (int64_t)(row0 + t) * half : nullptr;
  const float* s = a.sin ? a.sin + (int64_t)(row0 + t) * half : nullptr;
  if (c && e < a.n_heads * half) {
    const int h = e / half, i = e % half;
    float* p = a.q + (int64_t)t * a.ldq + (int64_t)h * hd;
    const int i0 = a.interleaved ? 2 * i : i, i1 = a.interleaved ? 2 * i + 1 : i + half;
    const float x0 = p[i0], x1 = p[i1];
    p[i0] = x0 * c[i] - x1 * s[i];
    p[i1] = x1 * c[i] + x0 * s[i];
  }
  if (e < a.n_kv * hd) {
    const int g = e / hd, d = e % hd;
    const float* k = a.k + (int64_t)t * a.ldk;
    const float* v = a.v + (int64_t)t * a.ldv;
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
          sc = capped(a, dot * a.scale) + score_bias(a, h, key, pos, slope);
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
// Block (head, split) takes keys lo + split * kDChunk .. + kDChunk - 1. The chunk is fixed, so a step replayed as a
// CUDA graph (grid sized for the longest range, splits past the position find no keys) and a plain step split the
// same keys the same way, and give the same bits. Each block writes its partial output with its max and sum; the
// combine kernel merges the splits in split order, skipping empty ones. (The grid does not follow the number
// of multiprocessors: n_heads * ceil(keys / 128) blocks, at most 65535 splits of a head.)
constexpr int kDThreads = 128, kDChunk = 128;

// Elements i .. i + N - 1 of a cache (N = 8 f16 or 4 f32): one 16-byte load (i a multiple of N, base 16-byte
// aligned; __ldg keeps it one vector load), then as floats.
template <bool F16>
__device__ __forceinline__ uint4 kv_raw(const void* base, int64_t i) {
  return __ldg(reinterpret_cast<const uint4*>(static_cast<const char*>(base) + i * (F16 ? 2 : 4)));
}

template <bool F16>
__device__ __forceinline__ void kv_floats(const uint4 raw, float* f) {
  if constexpr (F16) {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const float2 v = __half22float2(*reinterpret_cast<const __half2*>(&w[e]));
      f[2 * e] = v.x;
      f[2 * e + 1] = v.y;
    }
  } else {
    f[0] = __uint_as_float(raw.x), f[1] = __uint_as_float(raw.y), f[2] = __uint_as_float(raw.z);
    f[3] = __uint_as_float(raw.w);
  }
}

// The range of keys this step's query sees (dyn_pos: read on the device; lo and hi from the host otherwise).
__device__ __forceinline__ void decode_range(const AttnArgs& a, int32_t& pos, int32_t& lo, int32_t& hi) {
  pos = a.pos0;
  if (a.dyn_pos) {
    pos = *a.dyn_pos;
    lo = a.window > 0 ? max(0, pos - a.window + 1) : 0;
    hi = pos;
  }
}

// Rows of 16-byte vectors (head_dim a multiple of N, strides too, caches aligned): a thread per key scores it
// from its row (every load of the row in flight at once); values by threads over (16-byte column, key group),
// the groups summed through shared memory.
template <bool F16>
__global__ void __launch_bounds__(kDThreads)
attn_decode_vec_kernel(AttnArgs a, int32_t lo, int32_t hi, int nsplit, float* part, float2* ml) {
  constexpr int N = F16 ? 8 : 4;
  static_assert(kDThreads == kDChunk, "a thread per key of the chunk");
  __shared__ __align__(16) float qs[256];
  __shared__ float sc[kDChunk];
  __shared__ float pv[kDThreads * N];  // [group][head_dim]
  __shared__ float red[32];
  const int hd = a.head_dim, h = blockIdx.x, split = blockIdx.y, g = h / a.group;
  int32_t pos;
  decode_range(a, pos, lo, hi);
  const int32_t start = lo + split * kDChunk;
  const int32_t n = max(0, min(hi + 1, start + kDChunk) - start);
  if (n == 0) {  // past this step's keys: nothing to merge (uniform over the block, before any barrier)
    if (threadIdx.x == 0) ml[(int64_t)h * nsplit + split] = make_float2(-INFINITY, 0.f);
    return;
  }
  for (int d = threadIdx.x; d < hd; d += kDThreads) qs[d] = a.q[(int64_t)h * hd + d];
  __syncthreads();
  const int64_t kv0 = (int64_t)g * a.head_stride;
  const int j = threadIdx.x;
  float s = -INFINITY;
  if (j < n) {
    const int32_t key = start + j;
    const int64_t off = kv0 + (int64_t)key * a.pos_stride;
    float dot = 0.f;
    auto part_dot = [&](const uint4 raw, int d) {
      float kf[N];
      kv_floats<F16>(raw, kf);
#pragma unroll
      for (int e = 0; e < N; e++) dot += qs[d + e] * kf[e];
    };
    int d = 0;
    for (; d + 4 * N <= hd; d += 4 * N) {  // four loads in flight, then their products
      uint4 raw[4];
#pragma unroll
      for (int u = 0; u < 4; u++) raw[u] = kv_raw<F16>(a.k, off + d + u * N);
#pragma unroll
      for (int u = 0; u < 4; u++) part_dot(raw[u], d + u * N);
    }
    for (; d < hd; d += N) part_dot(kv_raw<F16>(a.k, off + d), d);
    if (!a.key_mask || a.key_mask[key])
      s = capped(a, dot * a.scale) + score_bias(a, h, key, pos, a.alibi ? a.alibi[h] : 0.f);
  }
  const float mx = block_max(s, red);
  const float p = mx == -INFINITY || s == -INFINITY ? 0.f : expf(s - mx);
  sc[j] = p;
  const float sum = block_sum(p, red);  // its barriers publish sc
  const int nvec = hd / N, groups = kDThreads / nvec;
  const int col = threadIdx.x % nvec, grp = threadIdx.x / nvec;
  if (grp < groups) {
    float acc[N];
#pragma unroll
    for (int e = 0; e < N; e++) acc[e] = 0.f;
    auto add = [&](const uint4 raw, int jj) {
      const float pj = sc[jj];
      if (pj != 0.f) {
        float vf[N];
        kv_floats<F16>(raw, vf);
#pragma unroll
        for (int e = 0; e < N; e++) acc[e] += pj * vf[e];
      }
    };
    const int64_t vcol = kv0 + (int64_t)start * a.pos_stride + col * N;
    int jj = grp;
    for (; jj + 3 * groups < n; jj += 4 * groups) {  // four loads in flight, then their sums
      uint4 raw[4];
#pragma unroll
      for (int u = 0; u < 4; u++) raw[u] = kv_raw<F16>(a.v, vcol + (int64_t)(jj + u * groups) * a.pos_stride);
#pragma unroll
      for (int u = 0; u < 4; u++) add(raw[u], jj + u * groups);
    }
    for (; jj < n; jj += groups) add(kv_raw<F16>(a.v, vcol + (int64_t)jj * a.pos_stride), jj);
#pragma unroll
    for (int e = 0; e < N; e++) pv[grp * hd + col * N + e] = acc[e];
  }
  __syncthreads();
  float* po = part + ((int64_t)h * nsplit + split) * hd;
  for (int d = threadIdx.x; d < hd; d += kDThreads) {
    float o = 0.f;
    for (int gg = 0; gg < groups; gg++) o += pv[gg * hd + d];
    po[d] = o;
  }
  if (threadIdx.x == 0) ml[(int64_t)h * nsplit + split] = make_float2(mx, sum);
}

// Any layout (odd head_dim or strides): a warp per key, lanes over the head dims; a thread per dim for the values.
template <bool F16>
__global__ void __launch_bounds__(kDThreads)
attn_decode_kernel(AttnArgs a, int32_t lo, int32_t hi, int nsplit, float* part, float2* ml) {
  extern __shared__ float sm[];
  __shared__ float red[32];
  const int hd = a.head_dim, h = blockIdx.x, split = blockIdx.y, g = h / a.group;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* qs = sm;       // [hd]
  float* sc = sm + hd;  // [kDChunk]
  int32_t pos;
  decode_range(a, pos, lo, hi);
  const int32_t start = lo + split * kDChunk, end = min(hi + 1, start + kDChunk);
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
    if (lane == 0)
      sc[jj] = !a.key_mask || a.key_mask[j] ? capped(a, dot * a.scale) + score_bias(a, h, j, pos, slope) : -INFINITY;
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
  int32_t n = std::max(0, hi - lo + 1);
  if (a.dyn_pos) n = a.window > 0 ? std::min(a.n_keys, a.window) : a.n_keys;  // the most keys the position can see
  const int64_t nsplit = std::max<int64_t>(1, (n + kDChunk - 1) / kDChunk);
  EF_CHECK(nsplit <= 65535, "CUDA attention: more than 65535 * 128 keys (8,388,480) in one decode step");
  const size_t part_floats = (size_t)a.n_heads * nsplit * a.head_dim;
  float* part = ws.ensure_as<float>(part_floats + 2 * (size_t)a.n_heads * nsplit + 4);
  float2* ml = reinterpret_cast<float2*>(part + ((part_floats + 1) & ~(size_t)1));  // 8-byte aligned
  const dim3 grid((unsigned)a.n_heads, (unsigned)nsplit);
  constexpr int N = F16 ? 8 : 4;
  const bool vec = a.head_dim % N == 0 && a.pos_stride % N == 0 && a.head_stride % N == 0 &&
                   reinterpret_cast<uintptr_t>(a.k) % 16 == 0 && reinterpret_cast<uintptr_t>(a.v) % 16 == 0;
  if (vec) {
    attn_decode_vec_kernel<F16><<<grid, kDThreads, 0, s>>>(a, lo, hi, (int)nsplit, part, ml);
    EF_CUDA_LAUNCHED(attn_decode_vec_kernel);
  } else {
    const size_t smem = (size_t)(a.head_dim + kDChunk) * sizeof(float);
    attn_decode_kernel<F16><<<grid, kDThreads, smem, s>>>(a, lo, hi, (int)nsplit, part, ml);
    EF_CUDA_LAUNCHED(attn_decode_kernel);
  }
  attn_combine_kernel<<<(unsigned)a.n_heads, 128, 0, s>>>(part, ml, (int)nsplit, a.head_dim, a.out);
  EF_CUDA_LAUNCHED(attn_combine_kernel);
}

}  // namespace

void rope_store(const RopeStoreArgs& a, cudaStream_t s) {
  if (a.T <= 0) return;
  EF_CHECK(!a.cos || 2 * a.half <= a.head_dim, "CUDA rope: rotary dims exceed head_dim");
  const int64_t n = std::max<int64_t>(a.cos ? (int64_t)a.n_heads * a.half : 0, (int64_t)a.n_kv * a.head_dim);
  const dim3 grid((unsigned)a.T, (unsigned)std::max<int64_t>(1, (n + 127) / 128));
  if (a.kv_f16) rope_store_kernel<true><<<grid, 128, 0, s>>>(a);
  else rope_store_kernel<false><<<grid, 128, 0, s>>>(a);
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
