// One generic transformer, driven by an ArchSpec, with a preallocated KV cache.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "edgeformer/arch.h"
#include "edgeformer/safetensors.h"
#include "edgeformer/tensor.h"
#include "edgeformer/threadpool.h"

namespace ef {

struct ModelOptions {
  int32_t threads = 0;      // 0 = physical cores
  int32_t max_context = 0;  // 0 = spec.max_position
  std::string dtype;        // "" = as stored; "f32" | "f16" | "bf16" converts the matrices at load
};

struct LayerWeights {
  Tensor attn_norm_w, attn_norm_b, mlp_norm_w, mlp_norm_b;  // f32
  Tensor wq, wk, wv, wo, bq, bk, bv, bo;                     // matrices as stored; biases f32
  Tensor w_gate, w_up, w_down, b_gate, b_up, b_down;
};

class Model {
 public:
  // checkpoint: every tensor of the checkpoint (views into the files).
  // names: canonical name (see python/edgeformer/archs.py, e.g. "layers.3.attn.q.weight") -> checkpoint name.
  Model(const ArchSpec& spec, const TensorMap& checkpoint, const std::map<std::string, std::string>& names,
        const ModelOptions& opts);

  const ArchSpec& spec() const { return spec_; }
  int32_t max_context() const { return max_ctx_; }
  int32_t n_past() const { return n_past_; }
  int32_t threads() const { return pool_->size(); }
  void reset() { n_past_ = 0; }
  // Keep only the first n positions of the cache (n <= n_past).
  void truncate(int32_t n);

  // Runs tokens at positions n_past .. n_past+T-1, appending to the KV cache.
  // all_logits: out is [T, vocab]; else [1, vocab] for the last position. out may be null (no logits).
  void forward(const int32_t* tokens, int32_t T, bool all_logits, float* out);
  int64_t weight_bytes() const;

  std::mutex& mutex() { return mu_; }  // held by the bindings around each call: one call at a time

 private:
  void attention(int layer, const float* q, float* out, int32_t T, int32_t pos0);
  void ensure_scratch(int32_t T);
  void compute_rope(int32_t pos0, int32_t T);

  ArchSpec spec_;
  ModelOptions opts_;
  int32_t max_ctx_ = 0;
  int32_t n_past_ = 0;
  std::unique_ptr<ThreadPool> pool_;
  Tensor tok_emb_, final_norm_w_, final_norm_b_, lm_head_;
  std::vector<LayerWeights> layers_;
  std::unique_ptr<Buffer> kcache_, vcache_;  // [layer][kv_head][max_ctx][head_dim] f32
  // scratch, sized for the largest T seen
  int32_t scratch_T_ = 0;
  std::vector<float> x_, h_, tmp_, q_, k_, v_, att_, g_, u_, cos_, sin_, scores_;
  std::vector<float> inv_freq_;
  float rope_mscale_ = 1.f;
  std::mutex mu_;
};

}  // namespace ef
