// Sampling on the device: one block reads the logits a few times (penalty, max, top-k select, masses, top-p
// select, min-p, draw); only the token id goes back to the host. Probability masses are 2^36-scaled integers, so
// every sum is exact and the token depends on nothing but the logits and u.
#include <climits>

#include "device.cuh"

namespace ef {
namespace cuda {

namespace {

using u64 = unsigned long long;
constexpr int kSThreads = 1024;
constexpr double kMassScale = 68719476736.0;  // 2^36: a vocabulary of up to 2^27 tokens cannot overflow the sum

// float -> uint32 with the same order (negative values below positive ones)
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ u64 block_sum_u64(u64 v, u64* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : 0ull;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ u64 block_max_u64(u64 v, u64* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(kFullMask, v, o));
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : 0ull;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Inclusive prefix sum over the block in thread order.
__device__ __forceinline__ u64 block_scan_u64(u64 v, u64* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const u64 t = __shfl_up_sync(kFullMask, v, o);
    if (lane >= o) v += t;
  }
  __syncthreads();
  if (lane == 31) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    u64 t = lane < nw ? sh[lane] : 0ull;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const u64 u = __shfl_up_sync(kFullMask, t, o);
      if (lane >= o) t += u;
    }
    if (lane < nw) sh[lane] = t;
  }
  __syncthreads();
  return warp > 0 ? v + sh[warp - 1] : v;
}

struct SelectState {
  uint32_t prefix;
  u64 below;
};

// Radix select, 8 bits at a time: the smallest key v whose cumulative weight from below (keys <= v) exceeds thr,
// that is the largest v with weight(keys < v) <= thr; keys >= v are kept. When the total weight is <= thr, the
// largest key of positive weight. kw(i, key, weight) describes element i; weight 0 elements do not count.
template <class KW>
__device__ uint32_t select_key(int32_t n, KW kw, u64 thr, u64* hist, SelectState* st) {
  const int lane = threadIdx.x & 31;
  uint32_t prefix = 0;
  u64 below = 0;
  for (int level = 0; level < 4; level++) {
    const int shift = 24 - 8 * level;
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
      uint32_t key;
      u64 w;
      kw(i, key, w);
      if (w == 0) continue;
      if (level > 0 && (key >> (shift + 8)) != (prefix >> (shift + 8))) continue;
      atomicAdd(&hist[(key >> shift) & 255], w);
    }
    __syncthreads();
    if (threadIdx.x < 32) {  // one warp scans the 256 buckets, 8 per lane
      u64 loc[8], tot = 0;
#pragma unroll
      for (int i = 0; i < 8; i++) tot += loc[i] = hist[lane * 8 + i];
      u64 inc = tot;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const u64 t = __shfl_up_sync(kFullMask, inc, o);
        if (lane >= o) inc += t;
      }
      const u64 excl = inc - tot;
      int found = -1, last = -1;
      u64 found_before = 0, last_before = 0, c = excl;
#pragma unroll
      for (int i = 0; i < 8; i++) {
        if (loc[i]) {
          if (found < 0 && below + c + loc[i] > thr) found = lane * 8 + i, found_before = c;
          last = lane * 8 + i, last_before = c;
        }
        c += loc[i];
      }
      int sel = 0;
      u64 sel_before = 0;
      const unsigned fm = __ballot_sync(kFullMask, found >= 0);
      if (fm) {  // the lowest crossing bucket
        const int src = __ffs(fm) - 1;
        sel = __shfl_sync(kFullMask, found, src);
        sel_before = __shfl_sync(kFullMask, found_before, src);
      } else {  // no crossing: the highest non-empty bucket (ends at the largest key)
        const unsigned lm = __ballot_sync(kFullMask, last >= 0);
        if (lm) {
          const int src = 31 - __clz(lm);
          sel = __shfl_sync(kFullMask, last, src);
          sel_before = __shfl_sync(kFullMask, last_before, src);
        }
      }
      if (lane == 0) {
        st->prefix = prefix | ((uint32_t)sel << shift);
        st->below = below + sel_before;
      }
    }
    __syncthreads();
    prefix = st->prefix;
    below = st->below;
  }
  return prefix;
}

__global__ void __launch_bounds__(kSThreads) sample_kernel(SampleArgs a, u64* w) {
  __shared__ u64 hist[256];
  __shared__ u64 red[32];
  __shared__ float best_v[32];
  __shared__ int32_t best_i[32];
  __shared__ SelectState st;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int32_t V = a.vocab;
  float* logits = a.logits;

  // repetition penalty (distinct ids)
  for (int32_t i = tid; i < a.n_penalized; i += kSThreads) {
    const int32_t t = a.penalized[i];
    if (t >= 0 && t < V) {
      const float l = logits[t];
      logits[t] = l > 0.f ? l / a.repetition_penalty : l * a.repetition_penalty;
    }
  }
  __syncthreads();
  // presence / frequency penalties (distinct ids; after the repetition penalty, as the CPU sampler)
  for (int32_t i = tid; i < a.n_counted; i += kSThreads) {
    const int32_t t = a.counted[i];
    if (t >= 0 && t < V) logits[t] -= a.count_penalty[i];
  }
  __syncthreads();

  // max and argmax, the lowest index among equal maxima
  float bv = -INFINITY;
  int32_t bi = INT_MAX;
  for (int32_t i = tid; i < V; i += kSThreads) {
    const float l = logits[i];
    if (bi == INT_MAX || l > bv) bv = l, bi = i;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFullMask, bv, o);
    const int32_t oi = __shfl_xor_sync(kFullMask, bi, o);
    if (oi != INT_MAX && (bi == INT_MAX || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi;
  }
  if (lane == 0) best_v[warp] = bv, best_i[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    bv = lane < kSThreads / 32 ? best_v[lane] : -INFINITY;
    bi = lane < kSThreads / 32 ? best_i[lane] : INT_MAX;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(kFullMask, bv, o);
      const int32_t oi = __shfl_xor_sync(kFullMask, bi, o);
      if (oi != INT_MAX && (bi == INT_MAX || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi;
    }
    if (lane == 0) best_v[0] = bv, best_i[0] = bi;
  }
  __syncthreads();
  const float zmax = best_v[0];
  const int32_t argmax = best_i[0];
  if (a.greedy) {
    if (tid == 0) *a.out = argmax;
    return;
  }

  // top-k: keep the logits >= the k-th largest (ties with it too)
  const bool use_k = a.top_k > 0 && a.top_k < V;
  uint32_t kkey = 0;
  if (use_k)
    kkey = select_key(
        V, [&](int32_t i, uint32_t& key, u64& wt) { key = order_key(logits[i]), wt = 1; }, (u64)(V - a.top_k), hist, &st);

  // masses exp(l / T - max / T), as the CPU sampler's softmax
  const float inv_t = a.inv_temperature, mx = zmax * inv_t;
  u64 total = 0;
  for (int32_t i = tid; i < V; i += kSThreads) {
    const float l = logits[i];
    u64 m = 0;
    if (!use_k || order_key(l) >= kkey) m = (u64)((double)expf(l * inv_t - mx) * kMassScale);
    w[i] = m;
    total += m;
  }
  total = block_sum_u64(total, red);

  // top-p: drop the least likely tokens whose mass together stays <= (1 - top_p); the most likely stays
  if (a.top_p < 1.f) {
    const u64 thr = (u64)((1.0 - (double)a.top_p) * (double)total);
    const uint32_t pkey = select_key(
        V, [&](int32_t i, uint32_t& key, u64& wt) { wt = w[i], key = __float_as_uint((float)wt); }, thr, hist, &st);
    total = 0;
    for (int32_t i = tid; i < V; i += kSThreads) {
      u64 m = w[i];
      if (m && __float_as_uint((float)m) < pkey) w[i] = m = 0;
      total += m;
    }
    total = block_sum_u64(total, red);
  }

  // min-p: keep masses >= min_p * the largest
  if (a.min_p > 0.f) {
    u64 mmax = 0;
    for (int32_t i = tid; i < V; i += kSThreads) mmax = max(mmax, w[i]);
    mmax = block_max_u64(mmax, red);
    const double thr = (double)a.min_p * (double)mmax;
    total = 0;
    for (int32_t i = tid; i < V; i += kSThreads) {
      u64 m = w[i];
      if (m && (double)m < thr) w[i] = m = 0;
      total += m;
    }
    total = block_sum_u64(total, red);
  }

  if (total == 0) {  // every mass rounded to zero (cannot happen for finite logits: the maximum has 2^36)
    if (tid == 0) *a.out = argmax;
    return;
  }
  u64 target = (u64)(a.u * (double)total);
  if (target >= total) target = total - 1;
  // each thread owns a contiguous range; the one whose prefix range holds target walks it
  const int32_t per = (V + kSThreads - 1) / kSThreads;
  const int32_t i0 = min(V, tid * per), i1 = min(V, i0 + per);
  u64 local = 0;
  for (int32_t i = i0; i < i1; i++) local += w[i];
  const u64 incl = block_scan_u64(local, red), excl = incl - local;
  if (local > 0 && target >= excl && target < incl) {
    u64 c = excl;
    for (int32_t i = i0; i < i1; i++) {
      c += w[i];
      if (c > target) {
        *a.out = i;
        break;
      }
    }
  }
}

}  // namespace

void sample(const SampleArgs& a, Scratch& ws, cudaStream_t s) {
  EF_CHECK(a.vocab > 0, "CUDA sample: empty logits");
  EF_CHECK(a.greedy || (a.inv_temperature > 0 && a.top_p > 0 && a.top_p <= 1 && a.min_p >= 0 && a.min_p <= 1),
           "CUDA sample: bad options");
  u64* w = ws.ensure_as<u64>((size_t)a.vocab);
  sample_kernel<<<1, kSThreads, 0, s>>>(a, w);
  EF_CUDA_LAUNCHED(sample_kernel);
}

}  // namespace cuda
}  // namespace ef
