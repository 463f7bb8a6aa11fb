// The CUDA model's weights and per-sequence state (cuda_model.cc's forward, cuda_upload.cc's upload of a host
// Model): what each layer holds on the device, the activation buffers, the KV cache, the decode-step graphs.
//
// Activation buffers, per token row:  x [H] residual stream   h, h2 [max(H, E)] normalized inputs
//   qkv [QD + 2 KD] (q | k | v)   att [QD]   gu [2F] (gate | up) or [F]   e [E] embeddings of width proj_dim
#pragma once
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "edgeformer/cuda.h"
#include "edgeformer/model.h"
#include "host.h"
#include "kernels.h"

namespace ef {
namespace cuda {


// A matrix multiplied into columns [col0, col0 + rows) of a wider output (fused q/k/v, gate/up).
struct Part {
  DevMatrix W;
  int64_t col0 = 0;
};

// An MLP of width f: act(x gate) * (x up), or act(x up) where not gated, times down.
struct DevMlp {
  std::vector<Part> gate_up;  // gated: gate at 0, up at f of gu [T][2f]; else up at 0 of gu [T][f]
  const float* b_gate_up = nullptr;
  DevMatrix down;
  const float* b_down = nullptr;
};

struct DevLayer {
  const float *attn_norm_w = nullptr, *attn_norm_b = nullptr, *mlp_norm_w = nullptr, *mlp_norm_b = nullptr;
  const float *cross_norm_w = nullptr, *cross_norm_b = nullptr;
  std::vector<Part> qkv;  // into qkv [T][QD + 2 KD]
  const float* b_qkv = nullptr;
  DevMatrix wo;
  const float* bo = nullptr;
  const float *q_norm_w = nullptr, *k_norm_w = nullptr;  // qk_norm
  const float *post_attn_norm_w = nullptr, *post_mlp_norm_w = nullptr;  // post_norms
  DevMlp mlp;
  DevMatrix cq, ck, cv, co;
  // mixture of experts (ArchSpec::moe): the router's logits computed here in f32, the choice made on the host
  // (moe_route, the CPU's own code) from their copy; the experts run over the rows that chose them
  bool moe = false;
  const float *router = nullptr, *router_b = nullptr;  // [n_experts][hidden], [n_experts]
  std::vector<float> select_b, expert_scale;          // host copies, where the architecture has them
  std::vector<DevMlp> experts;
  DevMlp shared;                        // (shared_ffn_size > 0)
  const float* shared_scale = nullptr;  // [hidden]: the shared expert's gate, where it has one
};

inline const float* fp(const DevBuffer& b) { return b.as<float>(); }

struct DeviceWeights {
  ArchSpec spec;
  int device = 0;
  int32_t max_ctx = 0, host_threads = 0;
  std::vector<DevBuffer> owned;
  DevMatrix tok_emb, pos_emb, type_emb, proj_in, proj_out, lm_head;
  const float *emb_norm_w = nullptr, *emb_norm_b = nullptr, *final_norm_w = nullptr, *final_norm_b = nullptr;
  const float *lm_head_b = nullptr, *alibi = nullptr;
  std::vector<float> rel_bias;  // host copy of the relative bias table [buckets][heads]
  std::vector<DevLayer> layers;
  const float *rope_cos = nullptr, *rope_sin = nullptr;  // [max_ctx][half] unless the scaling is dynamic
  const float *rope_cos_local = nullptr, *rope_sin_local = nullptr;  // rope_local's, for the layers local_rope marks
  int32_t rope_half = 0;
  int64_t weight_bytes = 0;
};

struct CudaModel::State {
  std::shared_ptr<DeviceWeights> w;
  int device = 0;
  bool kv_f16 = true;
  cudaStream_t stream = nullptr;
  int32_t n_past = 0;
  DevBuffer kc, vc;  // [layer][kv head][max_ctx][head_dim]
  DevBuffer cross_k, cross_v, enc_mask;  // [layer][T_enc][QD] f32; [T_enc]
  int32_t enc_T = 0;
  bool enc_has_mask = false;
  int32_t cap_T = 0, cap_logits_rows = 0;
  DevBuffer x, h, h2, e, qkv, att, gu, ids, aux, types, kmask, logits, token, rope_cos, rope_sin, rel, penalized;
  DevBuffer qtemp;  // [T]: q_temperature of each row's position
  DevBuffer moe_logits, moe_idx, moe_w, moe_x, moe_y;  // mixture of experts: [T][n_experts]; [T * used] x2; [T][H] x2
  int32_t rel_width = 0, rel_lo = 0;
  Scratch ws_linear, ws_attn, ws_sample;
  std::mutex mu;

  // Decode steps replayed as CUDA graphs: a one-token step of a causal decoder launches some 10-15 kernels
  // per layer, each a few microseconds of host time, while the whole step reads the weights in well under a
  // millisecond on a large GPU (a 1.1B model in f16: ~0.5 ms at 4.8 TB/s), so without graphs small models
  // decode at the speed of the launches. The step's kernels read its token and position from `params` on
  // the device (int32: token, position, learned-position row), so one capture serves every step whose
  // position fits its attention grid: graphs are kept per `cap` (keys the split-K grid is sized for: 256,
  // 512, ... up to max_context). A capture records the device addresses of the buffers; when one is
  // reallocated (a longer prompt grows the activations or the scratch) the graphs are dropped and captured
  // again. EDGEFORMER_CUDA_GRAPHS=0 turns them off; a failed capture turns them off for the model.
  struct Graph {
    int32_t cap = 0;
    cudaGraphExec_t exec = nullptr;
  };
  std::vector<Graph> graphs;
  std::vector<const void*> graph_addrs;  // the buffers' addresses the graphs were captured with
  bool graphs_on = true;
  int64_t graph_captures = 0, graph_launches = 0;
  DevBuffer params;

  void drop_graphs() {
    for (Graph& g : graphs) cudaGraphExecDestroy(g.exec);
    graphs.clear();
  }
  std::vector<const void*> buffer_addrs() const {
    return {x.get(), h.get(), h2.get(), e.get(), qkv.get(), att.get(), gu.get(), logits.get(), params.get(),
            ws_linear.data(), ws_attn.data(), kc.get(), vc.get()};
  }

  ~State() {
    if (stream) {
      int prev = -1;
      if (cudaGetDevice(&prev) == cudaSuccess && prev != device) cudaSetDevice(device);
      drop_graphs();
      cudaStreamDestroy(stream);
      if (prev >= 0 && prev != device) cudaSetDevice(prev);
    }
  }

  size_t kv_elem() const { return kv_f16 ? 2 : 4; }
  size_t layer_cache_elems() const {
    const ArchSpec& s = w->spec;
    return (size_t)s.n_kv_heads * w->max_ctx * s.head_dim;
  }

  void init_stream_and_cache(const std::shared_ptr<DeviceWeights>& weights, bool f16) {
    w = weights;
    device = w->device;
    kv_f16 = f16;
    const char* g = std::getenv("EDGEFORMER_CUDA_GRAPHS");
    graphs_on = !(g && std::strcmp(g, "0") == 0);
    EF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const size_t bytes = layer_cache_elems() * w->spec.n_layers * kv_elem();
    try {
      kc = DevBuffer(bytes);
      vc = DevBuffer(bytes);
    } catch (const Error&) {
      throw ValueError("max_context=" + std::to_string(w->max_ctx) + ": the KV cache needs " +
                       std::to_string(2 * bytes >> 20) + " MiB on cuda:" + std::to_string(device) +
                       ", more than is free; pass a smaller max_context=");
    }
  }

  // Activation buffers for T token rows (grown, never shrunk).
  void ensure(int32_t T) {
    if (T <= cap_T) return;
    const ArchSpec& s = w->spec;
    const size_t H = s.hidden_size, hd = s.head_dim;
    const size_t F = std::max({(size_t)s.ffn_size, (size_t)s.moe_ffn_size, (size_t)s.shared_ffn_size});
    const size_t QD = (size_t)s.n_heads * hd, KD = (size_t)s.n_kv_heads * hd;
    const size_t E = std::max<size_t>(H, (size_t)s.proj_dim);
    const size_t t = (size_t)T;
    x = DevBuffer(t * H * 4);
    h = DevBuffer(t * E * 4);
    h2 = DevBuffer(t * H * 4);
    e = DevBuffer(t * E * 4);
    qkv = DevBuffer(t * std::max(QD + 2 * KD, QD) * 4);
    att = DevBuffer(t * QD * 4);
    gu = DevBuffer(t * 2 * F * 4);
    ids = DevBuffer(t * 4);
    aux = DevBuffer(t * 4);
    types = DevBuffer(t * 4);
    kmask = DevBuffer(std::max<size_t>(t, (size_t)w->max_ctx));
    if (s.q_temp_beta != 0.f) qtemp = DevBuffer(t * 4);
    if (s.n_experts > 0) {
      moe_logits = DevBuffer(t * s.n_experts * 4);
      moe_idx = DevBuffer(t * s.n_experts_used * 4);
      moe_w = DevBuffer(t * s.n_experts_used * 4);
      moe_x = DevBuffer(t * H * 4);
      moe_y = DevBuffer(t * H * 4);
    }
    cap_T = T;
  }

  // Runs the stack for a.tokens at positions n_past .. n_past + T - 1 (n_past is not advanced) and returns the
  // device rows asked for: logits (S.logits) or hidden states; null for Output::None.
  // dyn_cap > 0: a graph's step (graph_step): one token whose id and position the kernels read from `params`
  // (uploaded by the caller); nothing is uploaded and nothing synchronizes, so it can be captured.
  // seqs (decode_batch): row t is the next token of seqs[t] (this model's activation buffers, seqs[t]'s cache
  // and position); every row of the output is returned.
  const float* run(const ForwardArgs& a, int32_t& out_rows, int32_t dyn_cap = 0, State* const* seqs = nullptr);
  // batch: the rows are one token each of other sequences (decode_batch checks their lengths itself)
  void check(const ForwardArgs& a, bool batch = false) const;
  // A token for each of B logits rows (vocab apart; changed in place) sampled on the device: row i with
  // samplers[i] (its options, random stream and presence/frequency counts, which then count the token) and the
  // repetition penalty over histories[i]. Waits for the stream.
  std::vector<int32_t> sample_rows(float* logits, int32_t B, Sampler* const* samplers, const int32_t* const* histories,
                                   const int64_t* n_histories);
  // The forward of a step, checked, on the current device: T tokens of this sequence (a graph replay where one
  // serves) or, with seqs, a token for each; returns the device logits of its last row (or of each of seqs),
  // copied to raw_logits (host, or null) before anything changes them.
  float* step_logits(const int32_t* tokens, int32_t T, State* const* seqs, float* raw_logits);
  bool graph_eligible(const ForwardArgs& a) const;
  const float* graph_step(const ForwardArgs& a);

  float* logits_rows(int32_t rows) {
    if (rows > cap_logits_rows) {
      logits = DevBuffer((size_t)rows * w->spec.vocab_size * 4);
      cap_logits_rows = rows;
    }
    return logits.as<float>();
  }
};

// dst <- src on the stream (a pageable source has been read when this returns)
inline void upload(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes) EF_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
}

}  // namespace cuda
}  // namespace ef
