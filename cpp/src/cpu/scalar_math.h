// Scalar math shared by the reference kernels and the SIMD tails. Internal linkage on purpose: each kernel
// copy is compiled with different -m flags, and a shared inline (COMDAT) function could otherwise be taken
// from the AVX-512 copy and run on a CPU without it.
#pragma once
#include <cmath>
#include <cstdint>
#include <utility>

#include "edgeformer/cpu.h"
#include "edgeformer/dtype.h"

namespace ef {
namespace {

inline float act_scalar(Act a, float x) {
  switch (a) {
    case Act::None: return x;
    case Act::ReLU: return x > 0.f ? x : 0.f;
    case Act::ReLU2: return x > 0.f ? x * x : 0.f;
    case Act::SiLU: return x / (1.f + std::exp(-x));
    case Act::GELU: return 0.5f * x * std::erfc(x * -0.70710678118654752f);  // (1 + erf: cancels for x << 0)
    case Act::GELUTanh: {
      const float c = 0.7978845608028654f;  // sqrt(2/pi)
      return x / (1.f + std::exp(-2.f * c * (x + 0.044715f * x * x * x)));  // = 0.5 x (1 + tanh(z)), stable
    }
  }
  return x;
}

template <typename W>
inline float w_to_f32(W v);
template <>
inline float w_to_f32<float>(float v) { return v; }

struct f16_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };
template <>
inline float w_to_f32<f16_t>(f16_t v) { return f16_to_f32(v.bits); }
template <>
inline float w_to_f32<bf16_t>(bf16_t v) { return bf16_to_f32(v.bits); }

// The activation as a product with weights of type W sees it. bf16 weights meet activations rounded to bf16
// (round to nearest even), as PyTorch and llama.cpp compute them: each product is then exact in float, and
// VDPBF16PS computes the same products. f32 and f16 weights meet the activations unrounded.
template <typename W>
inline float x_for(float x) { return x; }
template <>
inline float x_for<bf16_t>(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// f(std::integral_constant<int, 0>) ... f(<N - 1>): a loop whose index is a constant in the body (a template
// argument: shift counts, tile numbers)
template <class F, int... I>
inline void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
inline void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

}  // namespace
}  // namespace ef
