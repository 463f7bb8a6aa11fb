// Host-side pieces shared by the CUDA model and the op entry points: moving weights to the device in the
// layout of DevMatrix (kernels.h), and the sampler arguments.
#pragma once
#include <vector>

#include "kernels.h"
#include "edgeformer/sampler.h"
#include "edgeformer/tensor.h"

namespace ef {
namespace cuda {

// The type a host matrix has on the device: f32 -> f16; f16, bf16 and the quantized types as they are.
DType device_dtype(DType host);

class Uploader {
 public:
  explicit Uploader(cudaStream_t s) : s_(s) {}
  // Device memory for a [rows, cols] matrix of host type `host` (owned by `owned`), zero-filled.
  DevMatrix allocate(DType host, int64_t rows, int64_t cols, std::vector<DevBuffer>& owned);
  // Copies t's rows into rows row0 .. row0 + t.rows - 1 of dst (same columns and device type).
  void rows(const Tensor& t, const DevMatrix& dst, int64_t row0);
  DevMatrix matrix(const Tensor& t, std::vector<DevBuffer>& owned);
  // Several matrices with the same columns and type stacked by rows (fused q/k/v, gate/up).
  DevMatrix stacked(const std::vector<const Tensor*>& ts, std::vector<DevBuffer>& owned);
  // n floats (host) -> device, owned
  const float* floats(const float* host, int64_t n, std::vector<DevBuffer>& owned);
  const float* vec(const Tensor& t, std::vector<DevBuffer>& owned);  // an f32 vector tensor; null if empty
  void finish();  // waits for the copies (errors surface here)

 private:
  cudaStream_t s_;
  Scratch staging_;
};

// Bytes a DevMatrix occupies on the device.
int64_t device_bytes(const DevMatrix& m);

// Sampler options -> the kernel's arguments (penalized ids and the draw filled in by the caller).
SampleArgs sample_args(const SamplerOptions& o);
// The distinct ids of history, sorted (the penalty applies once per token, as on the CPU).
std::vector<int32_t> distinct_tokens(const int32_t* history, int64_t n);

}  // namespace cuda
}  // namespace ef
