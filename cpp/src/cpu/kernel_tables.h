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
#if defined(EF_HAVE_AVX512VNNI)
const KernelTable* kernels_avx512vnni();
#endif
#if defined(EF_HAVE_AVX512BF16)
const KernelTable* kernels_avx512bf16();
#endif
#if defined(EF_HAVE_AMX)
const KernelTable* kernels_amx();
#endif
#if defined(EF_HAVE_NEONDOT)
const KernelTable* kernels_neondot();
#endif
}  // namespace cpu
}  // namespace ef
