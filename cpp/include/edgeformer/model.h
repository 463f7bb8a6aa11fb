// One generic transformer stack (decoder, encoder, or the decoder half of an encoder-decoder), driven by
// an ArchSpec, with a preallocated KV cache.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "edgeformer/arch.h"
#include "edgeformer/safetensors.h"
#include "edgeformer/tensor.h"
#include "edgeformer/threadpool.h"

namespace ef {
namespace loading {
struct Loader;
}

struct ModelOptions {
  int32_t threads = 0;      // 0 = physical cores
  int32_t max_context = 0;  // 0 = spec.max_position
  std::string dtype;        // "" = as stored; "f32" | "f16" | "bf16" | a block type ("q8_0", "q4_k", ...) | "int8"
                            // converts the matrices at load (quantization policy: docs in load()); "int8" is
                            // q8_0 whose layer rows each share one scale (Tensor::row_scaled)
  bool progress = false;    // print quantization progress to stderr
  // q8_0 weights in prompts (forwards of more than one token) also multiply the activations' int8 rounding
  // residual, as decode steps always do: the error of the weights alone, at half the prompt speed. Off: one
  // int8 level, as llama.cpp and CTranslate2 compute.
  bool exact_q8_prompts = false;
  // The self-attention KV cache's element type: "" = f32 beside f32 matrices, else f16 (half the memory and
  // the traffic of long contexts); "f32" | "f16".
  std::string kv_dtype;
};

struct LayerWeights {
  Tensor attn_norm_w, attn_norm_b, mlp_norm_w, mlp_norm_b;  // norms and biases are f32
  Tensor wq, wk, wv, wo, bq, bk, bv, bo;                     // matrices as stored
  Tensor q_norm_w, k_norm_w;                                 // per-head query / key norms (qk_norm)
  // multi-head latent attention (ArchSpec::mla): wq is q_b (or q without mla_q_lora), wk is kv_a
  Tensor wq_a, q_a_norm_w, kv_a_norm_w;
  std::vector<Tensor> k_b, v_b;                              // per head: [kv_lora, nope], [mla_v, kv_lora]
  Tensor post_attn_norm_w, post_mlp_norm_w;                  // post_norms
  Tensor attn_sub_norm_w, mlp_sub_norm_w;                    // sub_norms: [n_heads * head_dim], [ffn]
  Tensor w_gate, w_up, w_down, b_gate, b_up, b_down;
  Tensor cross_norm_w, cross_norm_b, cq, ck, cv, co;         // cross-attention (T5 decoder)
  // mixture of experts (ArchSpec::moe(layer)): in place of w_gate, w_up, w_down
  struct Expert {
    Tensor gate, up, down;
    Tensor b_gate, b_up, b_down;  // expert_bias: f32
  };
  Tensor router, router_b;      // [n_experts, hidden] f32, [n_experts] (expert_bias)
  Tensor select_b;              // [n_experts] f32 (moe_select_bias)
  Tensor sinks;                 // attn_sinks: [n_heads] f32
  Tensor wgate;                 // attn_out_gate: [n_heads * head_dim, hidden]
  // recurrent layers (ArchSpec::linear(layer)), in place of wq .. wo. Gated DeltaNet: the q|k|v, z, b, a and output
  // projections; f32 the convolution [conv_dim, lin_conv], dt_bias and A [lin_v_heads], the output norm [lin_v_dim].
  // A short convolution: lin_qkv its in_proj (B|C|x), lin_out, lin_conv. Mamba2: lin_qkv its in_proj (z|xBC|dt).
  Tensor lin_qkv, lin_z, lin_b, lin_a, lin_out, lin_conv, lin_dt_bias, lin_A, lin_norm_w;  // lin_A: -exp(A_log)
  Tensor lin_conv_b, lin_D;  // Mamba2: the convolution's bias, the skip's scale per head (Mamba: per channel)
  Tensor lin_x, lin_dt;      // Mamba: x_proj (to dt, B, C), dt_proj (its bias: lin_dt_bias); lin_A [inner, state]
  Tensor lin_dt_norm, lin_b_norm, lin_c_norm;  // Jamba: the weights of dt's, B's and C's RMSNorms
  std::vector<Expert> experts;  // n_experts
  Expert shared;                // shared_ffn_size > 0
  Tensor shared_scale;          // [hidden] f32 (shared_expert_gate)
  Tensor router_in_scale, expert_scale;                   // moe_router_norm: [hidden]; moe_expert_scale: [n_experts]
  Tensor post_mlp_norm1_w, moe_norm_w, post_moe_norm_w;   // moe_beside_mlp: [hidden] each
  Tensor ple_gate, ple_proj, ple_norm_w;  // per-layer inputs (ple_dim): [ple_dim, hidden], [hidden, ple_dim], [hidden]
  Tensor out_scale;                       // layer_scale: [1] f32
  // AltUp (ArchSpec::altup = N): router norm [hidden], router [N, hidden], prediction [N*N, N] and correction [N, N]
  // coefficients (f32), the corrected stream 0's scale [hidden]; LAuReL: [rank, hidden], [hidden, rank], norm [hidden]
  Tensor altup_norm_w, altup_router, altup_pred, altup_corr, altup_out_scale, laurel_l, laurel_r, laurel_norm_w;
};

enum class Output : int32_t { None = 0, LastLogits = 1, AllLogits = 2, Hidden = 3 };

struct ForwardArgs {
  const int32_t* tokens = nullptr;
  int32_t T = 0;
  const int32_t* token_types = nullptr;  // [T] or null (type 0)
  const uint8_t* key_mask = nullptr;     // encoders: [T], 0 = padding (keys not attended)
  // learned positions: each token's row of the position table, [T] (RoBERTa's, counted past its padding), or null
  // (position + pos_offset)
  const int32_t* pos_rows = nullptr;
  Output output = Output::LastLogits;
  float* out = nullptr;  // LastLogits [1, vocab]  AllLogits [T, vocab]  Hidden [T, hidden]
  // T > 1 with the products of decode steps (q8_0's two activation levels) rather than the prompts' one level:
  // rows that stand for decode steps (tokens proposed ahead and checked at once)
  bool decode_precision = false;
  // encoders: the T tokens are n_segs sequences one after another (seg_lens, summing to T), each attending within
  // itself and counting its positions from 0, as if each ran alone (a batch of short texts in one pass: its
  // matrix products have all their rows at once); null: one sequence
  const int32_t* seg_lens = nullptr;
  int32_t n_segs = 0;
  // the length the rotary frequencies of length-dependent scaling (dynamic, longrope) are computed for; 0: this
  // call's (its last position + 1). A prompt prefilled in pieces passes its whole length, as one call would.
  int64_t rope_length = 0;
};

// T5's bucket for a relative position (key - query), as transformers computes it (the CUDA model uses it too).
int32_t relative_bucket(int32_t rel, bool bidirectional, int32_t num_buckets, int32_t max_distance);
// The factor ArchSpec::q_temp_beta scales a query at this position by (the CUDA model uses it too).
float q_temperature(const ArchSpec& spec, int32_t pos);
// ValueError unless every row of ForwardArgs::pos_rows is inside a position table of table_rows rows.
void check_pos_rows(const int32_t* rows, int32_t T, int64_t table_rows);

// A mixture-of-experts layer's routing as transformers routes (moe.cc; the CPU and the CUDA path alike):
// logits [T][n_experts] of the router (+ its bias), turned in place into its probabilities (softmax or sigmoid)
// -> rows[e]: the (row, weight) pairs of the rows that chose expert e, in row order. select_b, expert_scale:
// the layer's vectors where the architecture has them, else null.
using MoeRows = std::vector<std::vector<std::pair<int32_t, float>>>;
void moe_route(const ArchSpec& sp, const KernelTable& K, float* logits, int32_t T, const float* select_b,
               const float* expert_scale, MoeRows& rows);

class Model {
 public:
  // checkpoint: every tensor of the checkpoint (views into the files).
  // names: canonical name (see python/edgeformer/archs.py, e.g. "layers.3.attn.q.weight") -> checkpoint name.
  // consume: the checkpoint itself, or null: its consumable entries (weights derived at load) are erased as soon
  // as the model has its own copy (packed or converted), so that load holds at most one copy of each.
  Model(const ArchSpec& spec, const TensorMap& checkpoint, const std::map<std::string, std::string>& names,
        const ModelOptions& opts, TensorMap* consume = nullptr);

  const ArchSpec& spec() const { return spec_; }
  int32_t max_context() const { return max_ctx_; }
  int32_t n_past() const { return n_past_; }
  int32_t threads() const { return pool_->size(); }
  void reset() { n_past_ = 0; }
  void truncate(int32_t n);  // keep the first n positions of the cache (n <= n_past)
  // Copies the first n cached positions of another model with the same spec (beam search).
  void copy_cache_from(const Model& other, int32_t n);
  // Another model over the same weights (shared, not copied) and thread pool, with its own empty KV cache and
  // scratch: one per sequence of a batch, or per beam.
  std::unique_ptr<Model> fork() const;
  // One decode step for each of several sequences at once: seqs are distinct forks of one model (the same
  // weights), tokens[i] the next token of seqs[i], at its own position (its n_past, then advanced). The
  // matrices are read once for every sequence; each attends to its own cache. logits: [seqs.size(), vocab].
  // Causal decoders without cross-attention or T5's relative bias. The caller holds every model's mutex.
  static void decode_batch(const std::vector<Model*>& seqs, const int32_t* tokens, float* logits);

  // Runs tokens at positions n_past .. n_past+T-1 (encoders: always from 0), appending to the KV cache.
  void forward(const ForwardArgs& a);
  void forward(const int32_t* tokens, int32_t T, bool all_logits, float* out) {
    ForwardArgs a;
    a.tokens = tokens;
    a.T = T;
    a.output = out ? (all_logits ? Output::AllLogits : Output::LastLogits) : Output::None;
    a.out = out;
    forward(a);
  }
  // Cross-attention memory: the encoder's output [T_enc, hidden] and its padding mask (null = none).
  // Keys and values are computed once here, for every layer.
  void set_encoder_output(const float* enc, int32_t T_enc, const uint8_t* mask);
  int64_t weight_bytes() const;
  // Every tensor the model computes with, by canonical name (after conversion or quantization at load).
  std::vector<std::pair<std::string, Tensor>> weights() const;

  std::mutex& mutex() { return mu_; }  // held by the bindings around each call: one call at a time
  const char* kv_dtype() const { return kv_type_ == DType::F16 ? "f16" : kv_type_ == DType::BF16 ? "bf16" : "f32"; }

 private:
  Model(const Model& other, bool fork_tag);  // fork()
  // forward() for one sequence (seqs null: positions n_past ..), or one token per model of seqs (decode_batch)
  void run(const ForwardArgs& a, Model* const* seqs);
  void set_segments(const ForwardArgs& a, std::vector<int32_t>& seq_pos);
  // seqs: as run(); each query row t then attends to seqs[t]'s cache at that model's n_past
  void attention(int layer, const float* q, float* out, int32_t T, int32_t pos0, const uint8_t* key_mask,
                 Model* const* seqs);
  void cross_attention(int layer, const float* q, float* out, int32_t T);
  // multi-head latent attention (ArchSpec::mla) of layer l: the normalized input in [T, hidden] -> out [T, hidden],
  // keys and values stored in owner(t)'s cache at pos[t] (cos / sin: the rows' rotary tables)
  void mla_attention(int layer, const float* in, float* out, int32_t T, const int32_t* pos, const float* cos,
                     const float* sin, const uint8_t* key_mask, Model* const* seqs);
  // a recurrent layer (ArchSpec::linear: Gated DeltaNet, short convolution or Mamba2): the normalized input in
  // [T, hidden] -> out [T, hidden], through row t's sequence's state (row_states)
  void linear_attention(int layer, const float* in, float* out, int32_t T, int32_t pos0, Model* const* seqs);
  // row t's state of a recurrent layer (a batch: seqs[t]'s, else this model's), zeroed where the row is its
  // sequence's first position
  float* const* row_states(int layer, int32_t T, int32_t pos0, Model* const* seqs);
  void load_linear(loading::Loader& L, LayerWeights& w, const std::string& p, int kind);
  void short_conv(int layer, const float* in, float* out, int32_t T, int32_t pos0, Model* const* seqs);
  void mamba2(int layer, const float* in, float* out, int32_t T, int32_t pos0, Model* const* seqs);
  void mamba1(int layer, const float* in, float* out, int32_t T, int32_t pos0, Model* const* seqs);
  void ensure_scratch(int32_t T);
  void per_layer_inputs(const int32_t* tokens, int32_t T, const float* x, const KernelTable& K);
  void narrow_to_last_row(float* x, int32_t T);
  // AltUp (altup.cc): the streams from the embeddings x; the router's modalities of rows s; the predictions from
  // the streams; the correction by the layer's output a; the streams averaged back into x
  void altup_begin(const float* x, int32_t T, const KernelTable& K);
  void altup_modalities(const LayerWeights& w, const float* s, int32_t T, float* mod, const KernelTable& K);
  void altup_predict(const LayerWeights& w, int32_t T, const KernelTable& K);
  void altup_correct(const LayerWeights& w, const float* a, int32_t T, const KernelTable& K);
  void altup_end(float* x, int32_t T, const KernelTable& K);
  // the mixture-of-experts block of layer l: out [T, hidden] from the normalized input in [T, hidden]
  // (router_in: what the router reads, where it differs from in: moe_router_norm)
  void moe(int layer, const float* in, float* out, int32_t T, const KernelTable& K, const float* router_in = nullptr);
  // cos_/sin_ rows for positions pos[0 .. T); length: the sequence length dynamic scaling sees, -1 for each
  // row's own (pos + 1)
  void compute_rope(const int32_t* pos, int32_t T, int64_t length);
  void alloc_cache();
  void compute_relative_bias(int32_t pos0, int32_t T, int32_t n_keys);

  ArchSpec spec_;
  ModelOptions opts_;
  int32_t max_ctx_ = 0;
  int32_t n_past_ = 0;
  std::shared_ptr<ThreadPool> pool_;
  Tensor tok_emb_, pos_emb_, type_emb_, emb_norm_w_, emb_norm_b_, proj_in_, proj_out_;
  Tensor final_norm_w_, final_norm_b_, lm_head_, lm_head_b_, rel_bias_;
  Tensor ple_emb_, ple_proj_, ple_norm_w_;  // per-layer inputs (ArchSpec::ple_dim)
  std::vector<Tensor> altup_proj_, altup_unembed_;  // AltUp: streams 1 .. N-1 in and out, [hidden, hidden] each
  std::vector<LayerWeights> layers_;
  // Self-attention cache, f32, f16 or bf16 (kv_type_), per layer and kv head. Where the head size is a multiple of
  // 16 (kv_panels_), in the float panel layout the attention products stream (quant.h), positions rounded up to
  // kv_len_ (a multiple of 16):
  // keys [kv_len / 16][head_dim][16] (16 positions of one dim per vector), values [head_dim / 16][kv_len][16]
  // (16 dims of one position); bf16 in quant.h's bf16 panels, pairs side by side: keys [kv_len / 16][head_dim / 2]
  // [16][2] (a position's dims 2j, 2j + 1), values [head_dim / 16][kv_len / 2][16][2] (a dim's positions 2i,
  // 2i + 1). Otherwise rows: [max_ctx][head_dim].
  std::unique_ptr<Buffer> kcache_, vcache_;
  bool kv_panels_ = false;
  int32_t kv_len_ = 0;
  DType kv_type_ = DType::F32;
  // layer -> its slot in the KV cache (recurrent layers have none: -1; a layer sharing another's keys and values,
  // that layer's), and the slots in use; each slot's first element in kcache_ / vcache_ (its layer's kv heads of
  // kv_len_ positions each, head sizes per layer) and the layer that owns it
  std::vector<int32_t> kv_slot_;
  int32_t kv_layers_ = 0;
  std::vector<size_t> kv_koff_, kv_voff_;
  std::vector<int32_t> kv_owner_;
  size_t kv_kelems_ = 0, kv_velems_ = 0;
  // recurrent states, per recurrent layer (lin_slot_): the convolution's last inputs [lin_conv - 1][conv channels],
  // then the state matrices (Gated DeltaNet, Mamba2); lin_stride_ floats each (the largest layer's)
  std::vector<int32_t> lin_slot_;
  std::vector<float> lin_state_;
  size_t lin_stride_ = 0;
  std::vector<float> lin_;         // linear_attention's scratch
  std::vector<float*> lin_rows_;  // row_states' answer
  size_t kv_elem() const { return kv_type_ == DType::F32 ? 4 : 2; }
  bool kv_bf16_panels() const { return kv_panels_ && kv_type_ == DType::BF16; }
  void store_kv(int layer, int kv_head, int32_t pos, const float* k, const float* v);
  template <typename E>
  void store_kv_as(int layer, int kv_head, int32_t pos, const float* k, const float* v);
  std::unique_ptr<Buffer> ckcache_, cvcache_;  // cross: [layer][head][T_enc][head_dim]
  int32_t enc_T_ = 0;
  std::vector<uint8_t> enc_mask_;
  // scratch, sized for the largest T seen
  int32_t scratch_T_ = 0;
  std::vector<float> x_, h_, h2_, tmp_, q_, k_, v_, att_, g_, u_, e_, cos_, sin_, scores_, gate_;
  std::vector<float> moe_in_, moe_out_, moe_logits_;  // experts' gathered rows, their outputs, router logits
  std::vector<float> moe_side_;                       // moe_beside_mlp: the experts' input, router input, output
  std::vector<float> ple_;                            // per-layer inputs [T, n_layers, ple_dim]
  std::vector<float> streams_;  // AltUp: the streams, their predictions [N, T, hidden] each, and scratch
  std::vector<float> mla_;                            // mla_attention's (queries, latents, per-head rows)
  std::vector<float> inv_freq_, rel_table_;
  std::vector<float> inv_freq_local_, cos_l_, sin_l_;  // rope_local (layers whose local_rope is set)
  float rope_mscale_local_ = 1.f;
  int32_t rel_lo_ = 0;
  // this call's packed sequences (ForwardArgs::seg_lens): row t attends to keys [seg_lo_[t], seg_hi_[t]]; empty: all
  std::vector<int32_t> seg_lo_, seg_hi_;
  size_t score_stride_ = 0;  // floats per thread in scores_  // rel_table_[h * width + (j - i - rel_lo_)]
  float rope_mscale_ = 1.f;
  std::mutex mu_;
};

}  // namespace ef
