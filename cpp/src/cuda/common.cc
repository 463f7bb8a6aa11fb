#include "common.h"

#include <algorithm>
#include <cstring>

#include "edgeformer/cuda.h"

namespace ef {
namespace cuda {

void throw_cuda(cudaError_t e, const char* call, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  std::string where = std::string(base ? base + 1 : file) + ":" + std::to_string(line);
  std::string msg = std::string("CUDA error in ") + call + " (" + where + "): " + cudaGetErrorName(e) + ": " +
                    cudaGetErrorString(e);
  if (e == cudaErrorMemoryAllocation) throw Error("CUDA: out of device memory (" + where + ")");
  if (e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure || e == cudaErrorIllegalInstruction ||
      e == cudaErrorMisalignedAddress || e == cudaErrorAssert)
    msg += " (a kernel faulted: the CUDA context of this process is now unusable)";
  throw Error(msg);
}

DevBuffer::DevBuffer(size_t bytes) : n_(bytes) {
  if (bytes == 0) return;
  const cudaError_t e = cudaMalloc(&p_, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();  // an allocation failure is not sticky: clear it
    p_ = nullptr;
    n_ = 0;
    if (e == cudaErrorMemoryAllocation)
      throw Error("CUDA: out of device memory allocating " + std::to_string(bytes >> 20) + " MiB");
    throw_cuda(e, "cudaMalloc", __FILE__, __LINE__);
  }
}

DevBuffer::~DevBuffer() {
  if (p_) cudaFree(p_);  // errors here (a context already broken) cannot be reported from a destructor
}

DevBuffer& DevBuffer::operator=(DevBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = o.p_, n_ = o.n_;
    o.p_ = nullptr, o.n_ = 0;
  }
  return *this;
}

void* Scratch::ensure(size_t bytes) {
  if (bytes > buf_.size()) {
    const size_t grown = buf_.size() + buf_.size() / 2;
    buf_ = DevBuffer();  // free first: the old and the new need not fit together
    buf_ = DevBuffer(std::max(bytes, grown));
  }
  return buf_.get();
}

DeviceGuard::DeviceGuard(int device) : dev_(device) {
  EF_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != dev_) EF_CUDA_CHECK(cudaSetDevice(dev_));
}

DeviceGuard::~DeviceGuard() {
  if (prev_ >= 0 && prev_ != dev_) cudaSetDevice(prev_);
}

void check_device(int device) {
  const int n = device_count();
  if (n == 0) throw Error("CUDA: no CUDA device is available (no driver, or no device visible to this process)");
  EF_CHECK(device >= 0 && device < n, "argument 'device': cuda:" + std::to_string(device) + " does not exist (" +
                                          std::to_string(n) + " CUDA device" + (n == 1 ? "" : "s") + ")");
}

bool built() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

DeviceInfo device_info(int device) {
  check_device(device);
  cudaDeviceProp p;
  EF_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  DeviceInfo d;
  d.index = device;
  d.name = p.name;
  d.major = p.major;
  d.minor = p.minor;
  d.sm_count = p.multiProcessorCount;
  d.total_memory = (int64_t)p.totalGlobalMem;
  d.l2_bytes = p.l2CacheSize;
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess) clock_khz = 0;
  if (cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess) bus_bits = 0;
  cudaGetLastError();
  d.peak_bandwidth = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;  // double data rate
  {
    DeviceGuard g(device);
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) d.free_memory = (int64_t)free_b;
    cudaGetLastError();
  }
  EF_CUDA_CHECK(cudaDriverGetVersion(&d.driver_version));
  EF_CUDA_CHECK(cudaRuntimeGetVersion(&d.runtime_version));
  return d;
}

double measure_bandwidth(int device, int64_t bytes, int iters) {
  check_device(device);
  EF_CHECK(bytes > 0 && iters > 0, "measure_bandwidth: bytes and iters must be positive");
  DeviceGuard g(device);
  DevBuffer a((size_t)bytes), b((size_t)bytes);
  cudaStream_t s;
  EF_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  EF_CUDA_CHECK(cudaEventCreate(&e0));
  EF_CUDA_CHECK(cudaEventCreate(&e1));
  float ms = 0.f;
  try {
    EF_CUDA_CHECK(cudaMemsetAsync(a.get(), 1, (size_t)bytes, s));
    EF_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), (size_t)bytes, cudaMemcpyDeviceToDevice, s));  // warm-up
    EF_CUDA_CHECK(cudaEventRecord(e0, s));
    for (int i = 0; i < iters; i++) EF_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), (size_t)bytes, cudaMemcpyDeviceToDevice, s));
    EF_CUDA_CHECK(cudaEventRecord(e1, s));
    EF_CUDA_CHECK(cudaEventSynchronize(e1));
    EF_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  } catch (...) {
    cudaEventDestroy(e0), cudaEventDestroy(e1), cudaStreamDestroy(s);
    throw;
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1), cudaStreamDestroy(s);
  return 2.0 * (double)bytes * iters / (ms * 1e-3) / 1e9;
}

}  // namespace cuda
}  // namespace ef
