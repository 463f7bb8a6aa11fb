// Internal: each kernel copy exposes its table through one of these.
#pragma once
#include "edgeformer/cpu.h"

namespace ef {
namespace cpu {
const KernelTable* kernels_generic();
#if defined(EF_HAVE_AVX2)
const KernelTable* kernels_avx2();
#endif
#if defined(EF_HAVE_AVX512)
const KernelTable* kernels_avx512();
#endif
#if defined(EF_HAVE_NEON)
const KernelTable* kernels_neon();
#endif
}  // namespace cpu
}  // namespace ef
