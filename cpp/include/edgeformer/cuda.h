// The CUDA path: a device copy of a loaded Model (weights uploaded once, KV cache on the device, sampling
// on the device) and op entry points on host memory that the tests compare with the CPU kernels.
// This header compiles without CUDA: a build without EF_CUDA links cpp/src/cuda/cuda_stub.cc, where
// device_count() is 0 and everything else throws ef::Error saying how to build with CUDA.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "edgeformer/arch.h"
#include "edgeformer/model.h"
#include "edgeformer/sampler.h"
#include "edgeformer/tensor.h"

namespace ef {
namespace cuda {

bool built();        // this library was compiled with EF_CUDA
int device_count();  // devices usable here: 0 when not built, without a driver, or without a device; never throws

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;      // compute capability
  int sm_count = 0;
  int64_t total_memory = 0;      // bytes
  int64_t free_memory = 0;       // bytes free when asked (cudaMemGetInfo)
  int64_t l2_bytes = 0;
  double peak_bandwidth = 0;     // GB/s from the memory clock and bus width (0 where the driver reports none)
  int driver_version = 0, runtime_version = 0;
};
DeviceInfo device_info(int device);  // ValueError for an index outside [0, device_count())

// GB/s of a device-to-device copy of `bytes`, counting bytes read and written (the decode roofline).
double measure_bandwidth(int device, int64_t bytes, int iters);

// cuBLAS for prompt GEMMs (64 tokens or more), loaded at first use: neither the build nor the wheel depends on
// it. set_blas_path: libcublas files to try first, ':'-separated (Python passes the nvidia-cublas wheel's, which
// PyTorch installs too); then the sonames libcublas.so.13 and .12, skipping a major version newer than the
// driver's. blas_version: major * 10000 + minor * 100 + patch of the library loaded, 0 when none or when
// EDGEFORMER_CUBLAS=0 in the environment (read at each call) turns it off: prompts then run on edgeformer's own
// tensor-core tiles. (A device where cuBLAS cannot make a handle also falls back to the tiles.)
void set_blas_path(const std::string& paths);
int blas_version();
int64_t blas_calls();  // GEMMs run through cuBLAS in this process so far

struct CudaOptions {
  int32_t device = 0;
  std::string kv_dtype = "f16";  // "f16" | "f32": the KV cache's element type
};

// Decode steps replayed as CUDA graphs (cuda_model.cc): whether they are on for the model, the graphs it
// holds, how many captures and how many replays so far.
struct CudaGraphStats {
  bool enabled = false;
  int64_t graphs = 0, captures = 0, launches = 0;
};

struct DeviceWeights;  // one upload, shared by the models fork() makes

// A Model on one device. Matrices are uploaded once: f32 ones converted to f16, f16 and bf16 as stored,
// q8_0 / q4_0 / q4_k / q6_k kept quantized (the kernels dequantize on the fly), the other block types
// dequantized to f16 at upload (no device kernels of their own yet); norms and biases f32.
// Activations stay on the device; only what is asked for (logits, hidden states, a sampled token) is copied
// back. One call at a time per model (mutex(), as Model).
class CudaModel {
 public:
  CudaModel(const Model& host, const CudaOptions& opts);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;
  // Another model over the same uploaded weights, with its own KV cache (beam search, encoder-decoders).
  std::unique_ptr<CudaModel> fork() const;

  const ArchSpec& spec() const;
  int32_t max_context() const;
  int32_t n_past() const;
  int32_t device() const;
  int32_t host_threads() const;  // the host model's threads (conversions at load)
  std::string kv_dtype() const;
  int64_t weight_bytes() const;  // bytes of the matrices on the device
  CudaGraphStats graph_stats() const;
  // Turns decode graphs on or off for this model (off drops those held). Default: on, unless the environment
  // has EDGEFORMER_CUDA_GRAPHS=0.
  void set_graphs(bool on);
  void reset();
  void truncate(int32_t n);
  void copy_cache_from(const CudaModel& other, int32_t n);

  // As Model::forward: a.out is host memory; logits or hidden states are copied there when asked.
  void forward(const ForwardArgs& a);
  // forward(tokens) and one token sampled on the device from the last position's logits (never copied back).
  // history: the tokens the repetition penalty applies to. Uses sampler's options and its random stream.
  // raw_logits (vocab floats, or null): receives the step's logits row before the sampler changes it
  int32_t step(const int32_t* tokens, int32_t T, Sampler& sampler, const int32_t* history, int64_t n_history,
               float* raw_logits = nullptr);
  void set_encoder_output(const float* enc, int32_t T_enc, const uint8_t* mask);
  // One decode step for each of seqs (distinct forks of one model; a causal decoder without cross-attention or
  // relative position bias): tokens[i] goes to seqs[i]. One forward of seqs.size() rows reads the matrices once
  // for all; each row's attention reads its own sequence's cache. raw_logits (B x vocab host floats, or null)
  // receives the logits; with samplers, next[i] is the token sampled on the device for seqs[i] as step() does
  // (histories[i], n_histories[i]: its repetition penalty's tokens).
  static void decode_batch(const std::vector<CudaModel*>& seqs, const int32_t* tokens, Sampler* const* samplers,
                           const int32_t* const* histories, const int64_t* n_histories, float* raw_logits,
                           int32_t* next);

  std::mutex& mutex();

 private:
  CudaModel();
  struct State;
  std::unique_ptr<State> s_;
};

// Op entry points on host memory, for the tests: each uploads its inputs the way the model does, runs one
// op on `device`, and copies the result back. Shapes as the CPU ops (python/bindings/register_ops.cc).
namespace testing {
// y[T, O] = x[T, K] W[O, K]^T (+ bias). W: any weight dtype, uploaded as the model uploads it.
void linear(int device, const Tensor& W, const float* x, int64_t T, const float* bias, float* y);
// out[T, cols] = rows ids of table (any weight dtype)
void embedding(int device, const Tensor& table, const int32_t* ids, int64_t T, float* out);
void rmsnorm(int device, const float* x, const float* w, float eps, float* y, int64_t rows, int64_t n);
void layernorm(int device, const float* x, const float* w, const float* b, float eps, float* y, int64_t rows, int64_t n);
void softmax(int device, float* x, int64_t rows, int64_t n);  // in place, row by row
void act(int device, Act a, float* x, int64_t n);
void act_mul(int device, Act a, float* g, const float* u, int64_t n);
// x: [T, heads, head_dim] rotated in place by cos, sin: [T, half] (the first 2 * half dims)
void rope(int device, float* x, const float* cos, const float* sin, int64_t T, int64_t heads, int64_t head_dim,
          int64_t half, RopeStyle style);

struct AttentionArgs {
  int32_t T = 0, n_keys = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int32_t pos0 = 0;  // position of the first query (n_keys - T for self-attention after appending)
  bool causal = true;
  int32_t window = 0;
  float scale = 0.f;  // 0 = 1/sqrt(head_dim)
  std::vector<float> alibi_slopes;  // empty or one per head
  bool alibi_bf16 = false, alibi_scaled = false;
  std::vector<float> rel;  // empty or [n_heads][rel_width]: bias for key - query = r at r - rel_lo
  int32_t rel_width = 0, rel_lo = 0;
  std::vector<uint8_t> key_mask;  // empty or [n_keys]
  bool kv_f16 = false;            // keys and values stored as f16, as the default KV cache
};
// q: [T, n_heads, head_dim]  k, v: [n_keys, n_kv_heads, head_dim]  ->  out: [T, n_heads, head_dim]
void attention(int device, const AttentionArgs& a, const float* q, const float* k, const float* v, float* out);
// The token the device sampler draws from logits [vocab] with uniform number u (penalty over history).
int32_t sample(int device, const float* logits, int32_t vocab, const SamplerOptions& o, const int32_t* history,
               int64_t n_history, double u);
}  // namespace testing

}  // namespace cuda
}  // namespace ef
