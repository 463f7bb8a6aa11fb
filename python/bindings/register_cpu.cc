#include "bindings.h"
#include <chrono>
#include <memory>

#include "edgeformer/cpu.h"
#include "edgeformer/errors.h"
#include "edgeformer/tensor.h"
#include "edgeformer/threadpool.h"

namespace ef_py {

void register_cpu(py::module_& m) {
  py::enum_<ef::Isa>(m, "Isa")
      .value("generic", ef::Isa::Generic)
      .value("avx2", ef::Isa::AVX2)
      .value("avx512", ef::Isa::AVX512)
      .value("neon", ef::Isa::NEON)
      .value("avx512vnni", ef::Isa::AVX512VNNI)
      .value("avx512bf16", ef::Isa::AVX512BF16)
      .value("amx", ef::Isa::AMX)
      .value("neondot", ef::Isa::NEONDOT);
  m.def("cpu_info", [] {
    const ef::CpuInfo& c = ef::cpu_info();
    py::dict d;
    d["arch"] = c.arch;
    d["vendor"] = c.vendor;
    d["brand"] = c.brand;
    py::dict f;
    f["sse4_2"] = c.sse42; f["avx"] = c.avx; f["avx2"] = c.avx2; f["fma"] = c.fma; f["f16c"] = c.f16c;
    f["avx512f"] = c.avx512f; f["avx512bw"] = c.avx512bw; f["avx512vl"] = c.avx512vl; f["avx512dq"] = c.avx512dq;
    f["avx512_vnni"] = c.avx512_vnni; f["avx512_vbmi"] = c.avx512_vbmi; f["avx512_bf16"] = c.avx512_bf16;
    f["amx_tile"] = c.amx_tile; f["amx_int8"] = c.amx_int8; f["amx_bf16"] = c.amx_bf16;
    f["amx_permitted"] = c.amx_permitted;
    f["neon"] = c.neon; f["dotprod"] = c.dotprod; f["i8mm"] = c.i8mm; f["sve"] = c.sve;
    d["features"] = f;
    d["physical_cores"] = c.physical_cores;
    d["logical_cores"] = c.logical_cores;
    py::list s;
    for (ef::Isa i : c.supported) s.append(ef::isa_name(i));
    d["supported_isas"] = s;
    return d;
  }, "What the CPU and OS support (features already checked against the OS's saved state).");
  m.def("active_isa", [] { return std::string(ef::isa_name(ef::active_isa())); },
        "The ISA whose kernels run: the best supported, or EDGEFORMER_ISA.");
  m.def("set_isa", [](const std::string& name) { ef::set_isa(ef::parse_isa(name)); }, py::arg("isa"),
        "Switch every model in this process to another ISA's kernels (tests; raises ValueError if unsupported).");
  m.def("read_bandwidth", [](int64_t mbytes, int threads, int repeats) {
    if (mbytes < 1 || mbytes > (1 << 16)) throw ef::ValueError("argument 'mbytes' must be in [1, 65536]");
    if (threads < 1 || threads > 1024) throw ef::ValueError("argument 'threads' must be in [1, 1024]");
    if (repeats < 1) throw ef::ValueError("argument 'repeats' must be at least 1");
    py::gil_scoped_release nogil;
    const int64_t n = mbytes * (1 << 20) / 4;
    ef::Buffer mem((size_t)n * 4);  // huge pages where the kernel allows, as the weights have
    float* buf = (float*)mem.data;
    ef::ThreadPool pool(threads);
    const ef::KernelTable& k = ef::kernels();
    pool.parallel_for(n, 1024, [&](int, int64_t a, int64_t b) {  // first touch by the thread that reads it
      for (int64_t i = a; i < b; i++) buf[i] = 1e-3f;
    });
    double best = 0;
    volatile float sink = 0;
    for (int r = 0; r < repeats; r++) {
      auto t0 = std::chrono::steady_clock::now();
      pool.parallel_for(n, 1024, [&](int, int64_t a, int64_t b) { sink = sink + k.dot(&buf[a], &buf[a], b - a); });
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, (double)n * 4 / s / 1e9);
    }
    return best;
  }, py::arg("mbytes") = 1024, py::arg("threads") = 1, py::arg("repeats") = 5,
     "Best read bandwidth in GB/s over `repeats` passes of a buffer of `mbytes` MiB with `threads` threads "
     "(the decode roofline of the benchmarks).");
}

}  // namespace ef_py
