// cuBLAS for prompt GEMMs, loaded at run time: neither the build nor the wheel depends on it. The library is
// the one the process can find (Python hands over the nvidia-cublas wheel's path, which PyTorch installs too;
// else the sonames on the loader's path). A missing library, one the driver refuses, or a failed call leaves
// the prompt to our own tensor-core tiles (gemm.cu).
//
// The few entry points used are declared here from cublas_api.h (their C ABI has been stable since CUDA 11):
// enums are ints, handles are pointers.
#ifndef _WIN32
#include <dlfcn.h>
#endif

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common.h"
#include "edgeformer/cuda.h"
#include "kernels.h"

namespace ef {
namespace cuda {

namespace {

using BlasHandle = void*;
using CreateFn = int (*)(BlasHandle*);
using SetStreamFn = int (*)(BlasHandle, cudaStream_t);
using GetPropertyFn = int (*)(int, int*);
using SetWorkspaceFn = int (*)(BlasHandle, void*, size_t);
using GemmExFn = int (*)(BlasHandle, int, int, int, int, int, const void*, const void*, int, int, const void*, int,
                         int, const void*, void*, int, int, int, int);
constexpr int kOpN = 0, kOpT = 1;                  // cublasOperation_t
constexpr int kR16F = 2, kR32F = 0;                // cudaDataType
constexpr int kCompute32F = 68;                    // cublasComputeType_t CUBLAS_COMPUTE_32F
constexpr int kGemmDefault = -1;                   // cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT
constexpr int kMajor = 0, kMinor = 1, kPatch = 2;  // libraryPropertyType

struct Blas {
  std::mutex mu;
  std::string paths;  // candidates, ':'-separated (set_blas_path)
  bool tried = false;
  void* lib = nullptr;
  int version = 0;
  CreateFn create = nullptr;
  SetStreamFn set_stream = nullptr;
  SetWorkspaceFn set_workspace = nullptr;
  GemmExFn gemm = nullptr;
  std::map<int, BlasHandle> handles;  // per device
  std::map<int, bool> failed;         // devices where no handle could be created
  int64_t calls = 0;                  // GEMMs it ran
};

Blas& blas() {
  static Blas* b = new Blas;  // never destroyed: handles outlive static destruction order safely
  return *b;
}

#ifdef _WIN32
void* dlopen(const char*, int) { return nullptr; }
void* dlsym(void*, const char*) { return nullptr; }
int dlclose(void*) { return 0; }
constexpr int RTLD_NOW = 0, RTLD_LOCAL = 0;
#endif

template <typename F>
bool sym(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  return f != nullptr;
}

// Under b.mu. Tries each candidate once per process.
void load_locked(Blas& b) {
  if (b.tried) return;
  b.tried = true;
  std::vector<std::string> cands;
  size_t start = 0;
  while (start <= b.paths.size()) {
    const size_t end = b.paths.find(':', start);
    const std::string p = b.paths.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!p.empty()) cands.push_back(p);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  cands.push_back("libcublas.so.13");
  cands.push_back("libcublas.so.12");
#ifdef _WIN32
  cands.clear();  // (not looked for on Windows yet: prompts run on the tiles)
#endif
  int driver = 0;  // e.g. 12040: a cuBLAS of a newer major version cannot run on it
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  for (const std::string& c : cands) {
    void* lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) continue;
    GetPropertyFn prop = nullptr;
    if (!sym(lib, "cublasCreate_v2", b.create) || !sym(lib, "cublasSetStream_v2", b.set_stream) ||
        !sym(lib, "cublasSetWorkspace_v2", b.set_workspace) || !sym(lib, "cublasGemmEx", b.gemm) ||
        !sym(lib, "cublasGetProperty", prop)) {
      dlclose(lib);
      continue;
    }
    int major = 0, minor = 0, patch = 0;
    prop(kMajor, &major), prop(kMinor, &minor), prop(kPatch, &patch);
    if (major * 1000 > driver) {  // the next candidate (libcublas.so.12 on a CUDA 12 driver) may do
      dlclose(lib);
      continue;
    }
    b.lib = lib;
    b.version = major * 10000 + minor * 100 + patch;
    return;
  }
}

bool disabled() {
  const char* e = std::getenv("EDGEFORMER_CUBLAS");
  return e && std::strcmp(e, "0") == 0;
}

}  // namespace

void set_blas_path(const std::string& paths) {
  Blas& b = blas();
  std::lock_guard<std::mutex> lock(b.mu);
  if (!b.tried) b.paths = paths;
}

int blas_version() {
  if (disabled()) return 0;
  Blas& b = blas();
  std::lock_guard<std::mutex> lock(b.mu);
  load_locked(b);
  return b.version;
}

namespace {
// Under b.mu: the current device's handle, created at first use; null where there is none to be had.
BlasHandle handle_locked(Blas& b) {
  load_locked(b);
  int dev = 0;
  if (!b.lib || cudaGetDevice(&dev) != cudaSuccess || b.failed[dev]) return nullptr;
  BlasHandle& h = b.handles[dev];
  if (!h && b.create(&h) != 0) {  // e.g. a cuBLAS newer than the driver
    h = nullptr;
    b.failed[dev] = true;
  }
  return h;
}
}  // namespace

bool blas_usable() {
  if (disabled()) return false;
  Blas& b = blas();
  std::lock_guard<std::mutex> lock(b.mu);
  return handle_locked(b) != nullptr;
}

bool blas_gemm_f16(int64_t m, int64_t n, int64_t k, const void* A, int64_t lda, const void* B, int64_t ldb, float* C,
                   int64_t ldc, bool accumulate, void* workspace, size_t workspace_bytes, cudaStream_t s) {
  if (disabled()) return false;
  constexpr int64_t kMax = 0x7fffffff;
  if (m > kMax || n > kMax || k > kMax || lda > kMax || ldb > kMax || ldc > kMax) return false;
  Blas& b = blas();
  std::lock_guard<std::mutex> lock(b.mu);  // one handle per device, its stream set per call
  const BlasHandle h = handle_locked(b);
  if (!h) return false;
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  // The handle is the device's, shared by every model's stream: each call brings its own workspace (its
  // caller's scratch), so GEMMs running at once on two streams never share one (SetStream resets it).
  if (b.set_stream(h, s) != 0 || b.set_workspace(h, workspace, workspace_bytes) != 0) return false;
  const bool ok = b.gemm(h, kOpT, kOpN, (int)m, (int)n, (int)k, &alpha, A, kR16F, (int)lda, B, kR16F, (int)ldb, &beta,
                         C, kR32F, (int)ldc, kCompute32F, kGemmDefault) == 0;
  b.calls += ok;
  return ok;
}

int64_t blas_calls() {
  Blas& b = blas();
  std::lock_guard<std::mutex> lock(b.mu);
  return b.calls;
}

}  // namespace cuda
}  // namespace ef
