// Picks the kernel table once: the best ISA this build and this CPU + OS support, unless EDGEFORMER_ISA
// names one (then it must be supported, or loading fails with a clear error instead of SIGILL).
#include <atomic>
#include <cstdlib>
#include <mutex>

#include "cpu/kernel_tables.h"
#include "edgeformer/cpu.h"
#include "edgeformer/errors.h"

namespace ef {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Generic: return "generic";
    case Isa::AVX2: return "avx2";
    case Isa::AVX512: return "avx512";
    case Isa::NEON: return "neon";
    case Isa::AVX512VNNI: return "avx512vnni";
    case Isa::NEONDOT: return "neondot";
    case Isa::AVX512BF16: return "avx512bf16";
    case Isa::AMX: return "amx";
  }
  return "?";
}

Isa parse_isa(const std::string& name) {
  for (Isa i : {Isa::Generic, Isa::AVX2, Isa::AVX512, Isa::NEON, Isa::AVX512VNNI, Isa::AVX512BF16, Isa::AMX, Isa::NEONDOT})
    if (name == isa_name(i)) return i;
  throw ValueError("unknown ISA '" + name + "' (expected generic, avx2, avx512, avx512vnni, avx512bf16, amx, neon or neondot)");
}

static std::string supported_list() {
  std::string s;
  for (Isa i : cpu_info().supported) s += std::string(s.empty() ? "" : ", ") + isa_name(i);
  return s;
}

const KernelTable& kernels_for(Isa isa) {
  if (!isa_supported(isa))
    throw ValueError(std::string("ISA '") + isa_name(isa) + "' is not available on this CPU or in this build (available: " +
                     supported_list() + ")");
  switch (isa) {
#if defined(EF_HAVE_AVX2)
    case Isa::AVX2: return *cpu::kernels_avx2();
#endif
#if defined(EF_HAVE_AVX512)
    case Isa::AVX512: return *cpu::kernels_avx512();
#endif
#if defined(EF_HAVE_NEON)
    case Isa::NEON: return *cpu::kernels_neon();
#endif
#if defined(EF_HAVE_AVX512VNNI)
    case Isa::AVX512VNNI: return *cpu::kernels_avx512vnni();
#endif
#if defined(EF_HAVE_AVX512BF16)
    case Isa::AVX512BF16: return *cpu::kernels_avx512bf16();
#endif
#if defined(EF_HAVE_AMX)
    case Isa::AMX: return *cpu::kernels_amx();
#endif
#if defined(EF_HAVE_NEONDOT)
    case Isa::NEONDOT: return *cpu::kernels_neondot();
#endif
    default: return *cpu::kernels_generic();
  }
}

namespace {
std::atomic<const KernelTable*> g_active{nullptr};
std::mutex g_mu;

const KernelTable* choose() {
  const char* env = std::getenv("EDGEFORMER_ISA");
  if (env && *env) {
    Isa want;
    try {
      want = parse_isa(env);
    } catch (const ValueError& e) {
      throw ValueError(std::string("EDGEFORMER_ISA: ") + e.what());
    }
    if (!isa_supported(want))
      throw ValueError(std::string("EDGEFORMER_ISA=") + env + ": this CPU or build cannot run it (available: " +
                       supported_list() + ")");
    return &kernels_for(want);
  }
  return &kernels_for(cpu_info().supported.back());
}
}  // namespace

const KernelTable& kernels() {
  const KernelTable* k = g_active.load(std::memory_order_acquire);
  if (k) return *k;
  std::lock_guard<std::mutex> lk(g_mu);
  k = g_active.load();
  if (!k) {
    k = choose();
    g_active.store(k, std::memory_order_release);
  }
  return *k;
}

Isa active_isa() { return kernels().isa; }

void set_isa(Isa isa) {
  const KernelTable* k = &kernels_for(isa);
  std::lock_guard<std::mutex> lk(g_mu);
  g_active.store(k, std::memory_order_release);
}

}  // namespace ef
