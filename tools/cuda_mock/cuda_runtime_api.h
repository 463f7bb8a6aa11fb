// Test only (EF_CUDA_MOCK=ON): a stand-in for the CUDA runtime over host memory, so that the CUDA path's host
// code (cpp/src/cuda/*.cc: uploads and layouts, the model's buffers, strides and kernel arguments, the bindings)
// runs and is tested on a machine without a GPU. "Device" memory is host memory and every call completes at once.
// It says nothing about the kernels themselves: kernels_mock.cc implements their contracts (kernels.h) on the host.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorLaunchFailure = 719,
  cudaErrorIllegalAddress = 700,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorAssert = 710,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
};
typedef cudaError_t cudaError;
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMemoryClockRate = 36,
  cudaDevAttrGlobalMemoryBusWidth = 37,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
// A stream records its work instead of doing it while it is being captured into a graph (as CUDA's stream
// capture does): the kernel stand-ins and the device-side copies queue a closure (ef_mock_submit), and a
// launch of the instantiated graph runs them in order. Copies to or from host memory are refused during a
// capture, so a test sees the host code put no per-call upload into a graph.
struct CUstream_st {
  std::vector<std::function<void()>>* capture = nullptr;
};
typedef CUstream_st* cudaStream_t;
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
typedef CUgraph_st* cudaGraph_t;
typedef CUgraph_st* cudaGraphExec_t;
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal = 1,
                             cudaStreamCaptureModeRelaxed = 2 };
inline void ef_mock_submit(cudaStream_t s, std::function<void()> f) {
  if (s && s->capture) s->capture->push_back(std::move(f));
  else f();
}
struct CUevent_st {};
typedef CUevent_st* cudaEvent_t;
constexpr unsigned cudaStreamNonBlocking = 1;
struct cudaDeviceProp {
  char name[256];
  int major, minor, multiProcessorCount, l2CacheSize;
  size_t totalGlobalMem;
};

inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::aligned_alloc(256, (n + 255) / 256 * 256);
  if (*p) std::memset(*p, 0xA5, n);  // never zero by accident: the code must initialize what it reads
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
// Freed blocks wait in a quarantine before going back to the heap, so that a reallocation never returns the
// address just freed: memory a captured graph still points to stays detectably stale (as it may on a GPU).
inline cudaError_t cudaFree(void* p) {
  static std::vector<void*> quarantine;
  if (p) quarantine.push_back(p);
  if (quarantine.size() > 64) {
    std::free(quarantine.front());
    quarantine.erase(quarantine.begin());
  }
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k, cudaStream_t st = nullptr) {
  if (st && st->capture && k != cudaMemcpyDeviceToDevice) return cudaErrorStreamCaptureUnsupported;
  if (n) ef_mock_submit(st, [=] { std::memmove(d, s, n); });
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy2DAsync(void* d, size_t dp, const void* s, size_t sp, size_t w, size_t h, cudaMemcpyKind,
                                     cudaStream_t st = nullptr) {
  if (w > dp || w > sp) return cudaErrorInvalidValue;
  ef_mock_submit(st, [=] { for (size_t r = 0; r < h; r++) std::memmove((char*)d + r * dp, (const char*)s + r * sp, w); });
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t st = nullptr) {
  ef_mock_submit(st, [=] { std::memset(d, v, n); });
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { *s = new CUstream_st; return cudaSuccess; }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (s) delete s->capture;
  delete s;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  return s && s->capture ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
  if (!s || s->capture) return cudaErrorInvalidValue;
  s->capture = new std::vector<std::function<void()>>;
  return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
  if (!s || !s->capture) return cudaErrorInvalidValue;
  *g = new CUgraph_st{std::move(*s->capture)};
  delete s->capture;
  s->capture = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long = 0) {
  *e = new CUgraph_st{g->ops};
  return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
  if (s && s->capture) return cudaErrorStreamCaptureUnsupported;
  for (auto& f : e->ops) f();
  return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete g; return cudaSuccess; }
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new CUevent_st; return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t = nullptr) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) { *ms = 1.f; return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaErrorMock"; }
inline const char* cudaGetErrorString(cudaError_t) { return "error in the host stand-in of the CUDA runtime"; }
inline cudaError_t cudaDriverGetVersion(int* v) { *v = 0; return cudaSuccess; }
inline cudaError_t cudaRuntimeGetVersion(int* v) { *v = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof(*p));
  std::strcpy(p->name, "host emulation of the CUDA path (no GPU)");
  p->multiProcessorCount = 4;
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {  // what a small card would have
  *free_b = (size_t)3 << 30, *total_b = (size_t)4 << 30;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? 4 : a == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 232448 : 0;
  return cudaSuccess;
}
