// CPU feature detection. x86: CPUID for what the CPU has, XGETBV for what the OS saves on a context switch
// (AVX needs XCR0 bits 1-2, AVX-512 bits 5-7, AMX bits 17-18). aarch64: hwcaps from the kernel.
#include <algorithm>
#include <cstring>
#include <thread>

#include "edgeformer/cpu.h"
#include "edgeformer/threadpool.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define EF_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif
#if EF_X86 && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace ef {

namespace {

#if EF_X86
void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
#if defined(_MSC_VER)
  int regs[4];
  __cpuidex(regs, (int)leaf, (int)sub);
  for (int i = 0; i < 4; i++) r[i] = (uint32_t)regs[i];
#else
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#endif
}
uint64_t xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((uint64_t)edx << 32) | eax;
#endif
}

// Linux hands out the AMX tile data state only on request (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA):
// a tile instruction without it raises SIGILL. Granted for the whole process.
bool request_amx() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr int kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
#endif

bool isa_in(const std::vector<Isa>& v, Isa i) { return std::find(v.begin(), v.end(), i) != v.end(); }

CpuInfo detect() {
  CpuInfo c;
  c.logical_cores = (int)std::max(1u, std::thread::hardware_concurrency());
  c.physical_cores = physical_cores();
#if EF_X86
  c.arch = "x86_64";
  uint32_t r[4];
  cpuid(0, 0, r);
  uint32_t max_leaf = r[0];
  char vendor[13] = {0};
  std::memcpy(vendor, &r[1], 4);
  std::memcpy(vendor + 4, &r[3], 4);
  std::memcpy(vendor + 8, &r[2], 4);
  c.vendor = vendor;
  cpuid(0x80000000u, 0, r);
  if (r[0] >= 0x80000004u) {
    char brand[49] = {0};
    for (uint32_t i = 0; i < 3; i++) {
      cpuid(0x80000002u + i, 0, r);
      std::memcpy(brand + 16 * i, r, 16);
    }
    c.brand = brand;
    while (!c.brand.empty() && c.brand.back() == ' ') c.brand.pop_back();
  }
  cpuid(1, 0, r);
  bool osxsave = r[2] & (1u << 27);
  c.sse42 = r[2] & (1u << 20);
  bool cpu_avx = r[2] & (1u << 28), cpu_fma = r[2] & (1u << 12), cpu_f16c = r[2] & (1u << 29);
  uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  bool os_avx = (xcr0 & 0x6) == 0x6;
  bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  bool os_amx = (xcr0 & 0x60000) == 0x60000;
  c.avx = cpu_avx && os_avx;
  c.fma = c.avx && cpu_fma;
  c.f16c = c.avx && cpu_f16c;
  if (max_leaf >= 7) {
    cpuid(7, 0, r);
    c.avx2 = c.avx && (r[1] & (1u << 5));
    c.avx512f = os_avx512 && (r[1] & (1u << 16));
    c.avx512dq = c.avx512f && (r[1] & (1u << 17));
    c.avx512bw = c.avx512f && (r[1] & (1u << 30));
    c.avx512vl = c.avx512f && (r[1] & (1u << 31));
    c.avx512_vnni = c.avx512f && (r[2] & (1u << 11));
    c.avx512_vbmi = c.avx512f && (r[2] & (1u << 1));
    c.amx_bf16 = os_amx && (r[3] & (1u << 22));
    c.amx_tile = os_amx && (r[3] & (1u << 24));
    c.amx_int8 = os_amx && (r[3] & (1u << 25));
    c.amx_permitted = c.amx_tile && request_amx();
    uint32_t sub_max = r[0];
    if (sub_max >= 1) {
      cpuid(7, 1, r);
      c.avx512_bf16 = c.avx512f && (r[0] & (1u << 5));
    }
  }
#elif defined(__aarch64__)
  c.arch = "aarch64";
  c.neon = true;
#if defined(__linux__)
  unsigned long hw = getauxval(AT_HWCAP);
#ifdef HWCAP_ASIMDDP
  c.dotprod = hw & HWCAP_ASIMDDP;
#endif
#ifdef HWCAP_SVE
  c.sve = hw & HWCAP_SVE;
#endif
#ifdef HWCAP2_I8MM
  c.i8mm = getauxval(AT_HWCAP2) & HWCAP2_I8MM;
#endif
#elif defined(__APPLE__)
  c.dotprod = true;
#endif
#else
  c.arch = "unknown";
#endif
  c.supported.push_back(Isa::Generic);
#if defined(EF_HAVE_AVX2)
  if (c.avx2 && c.fma && c.f16c) c.supported.push_back(Isa::AVX2);
#endif
#if defined(EF_HAVE_AVX512)
  if (c.avx512f && c.avx512bw && c.avx512vl && c.avx512dq && c.fma && c.f16c)
    c.supported.push_back(Isa::AVX512);
#endif
#if defined(EF_HAVE_AVX512VNNI)
  if (isa_in(c.supported, Isa::AVX512) && c.avx512_vnni) c.supported.push_back(Isa::AVX512VNNI);
#endif
#if defined(EF_HAVE_AVX512BF16)
  // with VBMI too (byte lookups in registers: simd.h); of the CPUs with BF16 only Cooper Lake lacks it
  if (isa_in(c.supported, Isa::AVX512VNNI) && c.avx512_bf16 && c.avx512_vbmi) c.supported.push_back(Isa::AVX512BF16);
#endif
#if defined(EF_HAVE_AMX)
  if (isa_in(c.supported, Isa::AVX512BF16) && c.amx_tile && c.amx_bf16 && c.amx_int8 && c.amx_permitted)
    c.supported.push_back(Isa::AMX);
#endif
#if defined(EF_HAVE_NEON)
  if (c.neon) c.supported.push_back(Isa::NEON);
#endif
#if defined(EF_HAVE_NEONDOT)
  if (c.neon && c.dotprod) c.supported.push_back(Isa::NEONDOT);
#endif
  return c;
}

}  // namespace

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

bool isa_supported(Isa isa) {
  auto& s = cpu_info().supported;
  return std::find(s.begin(), s.end(), isa) != s.end();
}

}  // namespace ef
