// Ops: validate once, split over the thread pool, call the active kernel table.
#pragma once
#include <cmath>
#include <cstddef>

#include "edgeformer/arch.h"
#include "edgeformer/cpu.h"
#include "edgeformer/tensor.h"
#include "edgeformer/threadpool.h"

namespace ef {
namespace ops {

// A panel kernel of table `tab` for type t: this ISA's, else the generic one (a model packed at load, then
// set_isa() to an ISA without panels of that type, as bf16 panels after AVX-512 BF16).
template <class Fn, size_t N>
Fn panel_kernel(const KernelTable& k, Fn (KernelTable::*tab)[N], DType t) {
  const Fn f = (k.*tab)[(int)t];
  return f ? f : (kernels_for(Isa::Generic).*tab)[(int)t];
}

// f(t0, t1) over rows [0, T) of `width` floats each: split over the pool where the rows hold enough elements to
// pay for a parallel region (the elementwise passes between products: norms, residual adds, activations; run on
// one thread they left the others waiting, 6% of a bf16 encoder's time on two cores in GELU alone)
template <class F>
void each_rows(ThreadPool* pool, int64_t T, int64_t width, F&& f) {
  if (pool && pool->size() > 1 && T > 1 && T * width >= (1 << 14))
    pool->parallel_for(T, 1, [&](int, int64_t t0, int64_t t1) { f(t0, t1); });
  else
    f(int64_t{0}, T);
}

// y[T, O] = x[T, K] @ W[O, K]^T (+ b).  x, y: row-major f32 with row strides ldx, ldy.
// W: 2-D float tensor with contiguous rows (any row stride). bias: f32 [O] or null.
void linear(ThreadPool* pool, const KernelTable& k, const float* x, int64_t ldx, int64_t T, const Tensor& W,
            const float* bias, float* y, int64_t ldy);

// Several products of the same x (q, k, v; gate, up) in one parallel region, x quantized once. An output with an
// x of its own (same T and row stride) takes that one instead (the experts of one token: each its own input).
struct LinearOut {
  const Tensor* W;
  const float* bias;
  float* y;
  int64_t ldy;
  const float* x = nullptr;  // null: the group's x
};
void linear_group(ThreadPool* pool, const KernelTable& k, const float* x, int64_t ldx, int64_t T, const LinearOut* outs,
                  int n);

// y[T, H] = act(x Wgate + bg) * (x Wup + bu) Wdown + bd: a gated MLP of width F over T rows, or, where gate holds
// no data, the plain act(x Wup + bu) Wdown + bd (biases may be null); g, u: scratch of T * F floats each.
// gate_sigma (not NaN): each row of the gate's product cut at its mean + gate_sigma * its standard deviation and
// ReLU'd before the activation (Gemma 3n's activation sparsity). hidden_norm (not null): each row of act(g) * u
// RMS-normalized with these weights (epsilon eps) before down (BitNet's sub-norm).
void mlp(ThreadPool* pool, const KernelTable& k, Act act, const float* x, int64_t H, int64_t T, const Tensor& gate,
         const Tensor& up, const Tensor& down, const float* bg, const float* bu, const float* bd, int64_t F, float* g,
         float* u, float* y, float gate_sigma = NAN, const float* hidden_norm = nullptr, float eps = 0.f);

// out[t, :] = embedding row ids[t] converted to f32. Throws ValueError for an id outside [0, rows).
void embedding(const KernelTable& k, const Tensor& table, const int32_t* ids, int64_t T, float* out);

// Rotates the first 2*half dims of one head vector x by the angles whose cos/sin are given (half each):
// RopeStyle::Half pairs (i, i + half) as transformers' rotate_half; Interleaved pairs (2i, 2i + 1) as GPT-J.
void rope(float* x, const float* cos, const float* sin, size_t half, RopeStyle style);

}  // namespace ops
}  // namespace ef
