// Host-side helpers of the CUDA path: errors become ef exceptions, device memory is owned by RAII buffers.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "edgeformer/errors.h"

namespace ef {
namespace cuda {

// Throws ef::Error naming the call, the file and line, and CUDA's message. An error raised by a kernel
// (an illegal address, say) leaves the CUDA context unusable: the message says so.
[[noreturn]] void throw_cuda(cudaError_t e, const char* call, const char* file, int line);

#define EF_CUDA_CHECK(call)                                                          \
  do {                                                                               \
    const cudaError_t ef_cuda_e_ = (call);                                           \
    if (ef_cuda_e_ != cudaSuccess) ::ef::cuda::throw_cuda(ef_cuda_e_, #call, __FILE__, __LINE__); \
  } while (0)

// After each launch: a bad launch configuration throws here; a fault inside a kernel throws at the next
// synchronization (every model call ends with one).
#define EF_CUDA_LAUNCHED(kernel) EF_CUDA_CHECK(cudaGetLastError())

// Device memory, freed on destruction. Allocation failure throws ef::Error ("out of device memory ...").
class DevBuffer {
 public:
  DevBuffer() = default;
  explicit DevBuffer(size_t bytes);
  ~DevBuffer();
  DevBuffer(DevBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  DevBuffer& operator=(DevBuffer&& o) noexcept;
  DevBuffer(const DevBuffer&) = delete;
  DevBuffer& operator=(const DevBuffer&) = delete;
  void* get() const { return p_; }
  template <class T>
  T* as() const { return static_cast<T*>(p_); }
  size_t size() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

// A device buffer that grows on demand (by at least half again, so a slowly growing need reallocates
// rarely). Growing frees the old memory, which cudaFree orders after the work already queued.
class Scratch {
 public:
  void* ensure(size_t bytes);
  template <class T>
  T* ensure_as(size_t count) { return static_cast<T*>(ensure(count * sizeof(T))); }
  const void* data() const { return buf_.get(); }

 private:
  DevBuffer buf_;
};

// Makes `device` current for the scope (Python may call from any thread), restoring the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1, dev_ = -1;
};

// Checks `device` against the devices present: ValueError naming the argument otherwise.
void check_device(int device);

}  // namespace cuda
}  // namespace ef
