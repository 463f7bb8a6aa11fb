// ArchSpec: everything the one generic transformer needs to know about an architecture, as data.
// Built in Python from a checkpoint's config (python/edgeformer/archs.py); validated here.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "edgeformer/cpu.h"

namespace ef {

enum class NormKind : int32_t { RMS = 0, Layer = 1 };
enum class PosKind : int32_t { None = 0, Rotary = 1, Learned = 2, ALiBi = 3, Relative = 4 };
enum class RopeStyle : int32_t { Half = 0, Interleaved = 1 };  // HF rotate-half, GPT-J pairs
enum class RopeScaling : int32_t { None = 0, Linear = 1, Dynamic = 2, Llama3 = 3, Yarn = 4, LongRope = 5 };
enum class ModelKind : int32_t { Decoder = 0, Encoder = 1, EncoderDecoder = 2 };
enum class NormPosition : int32_t { Pre = 0, Post = 1 };  // pre: x += f(norm(x))   post: x = norm(x + f(x))

struct RopeSpec {
  float theta = 10000.f;
  int32_t rotary_dim = 0;  // 0 = head_dim
  RopeStyle style = RopeStyle::Half;
  RopeScaling scaling = RopeScaling::None;
  float factor = 1.f;
  int32_t original_max_position = 0;      // llama3, yarn; dynamic uses max_position
  float low_freq_factor = 1.f, high_freq_factor = 4.f;  // llama3
  float beta_fast = 32.f, beta_slow = 1.f;              // yarn
  float attention_factor = 0.f;                          // yarn: 0 = derive from factor / mscale
  float mscale = 0.f, mscale_all_dim = 0.f;              // yarn
  bool truncate = true;                                  // yarn
  // longrope (Phi-3.5, Phi-4-mini): per-frequency factors, the long ones once the call's length passes
  // original_max_position; attention_factor multiplies cos and sin
  std::vector<float> short_factor, long_factor;
  // each frequency divided by its factor (rotary_dim / 2 of them; empty: none), after any scaling: llama.cpp's
  // rope_freqs. Gemma 4's proportional rotary: 1 on the rotated pairs, infinity (a frequency of 0) on the rest.
  std::vector<float> freq_factors;
  // the frequencies depend on the length of the call that computes a key (dynamic, longrope)
  bool length_dependent() const { return scaling == RopeScaling::Dynamic || scaling == RopeScaling::LongRope; }
};

struct ArchSpec {
  std::string model_type;  // "llama", "mistral", ... for messages
  ModelKind kind = ModelKind::Decoder;
  int32_t vocab_size = 0, hidden_size = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int32_t ffn_size = 0;
  int32_t max_position = 0;
  int32_t v_head_dim = 0;  // values' head size where it differs from the keys' (MLA); 0: head_dim
  int32_t vdim() const { return v_head_dim > 0 ? v_head_dim : head_dim; }
  // multi-head latent attention (DeepSeek-V2/V3, Kimi, GLM-4.7-Flash) where mla_kv_lora > 0, computed absorbed, as
  // llama.cpp does: a position's keys and values are one latent head, [c (mla_kv_lora wide) | rotated k_pe
  // (rope.rotary_dim wide)] and c, so head_dim = mla_kv_lora + rope.rotary_dim, v_head_dim = mla_kv_lora,
  // n_kv_heads = 1. A query head [nope (mla_nope) | pe (rope.rotary_dim)] enters as [k_b . nope | rotated pe]; its
  // output leaves through v_b (mla_v wide) before o. mla_q_lora > 0: queries through q_a, a norm and q_b.
  int32_t mla_kv_lora = 0, mla_q_lora = 0, mla_nope = 0, mla_v = 0;
  bool mla() const { return mla_kv_lora > 0; }
  NormKind norm = NormKind::RMS;
  float norm_eps = 1e-6f;
  bool norm_weights = true;  // false: the block's and final norms have no weights or biases (OLMo 1's LayerNorm)
  float clip_qkv = 0.f;      // > 0: every q, k and v projection clamped to [-clip_qkv, clip_qkv] (OLMo 1); 0: none
  Act act = Act::SiLU;
  bool gated_mlp = true;
  PosKind pos = PosKind::Rotary;
  RopeSpec rope;
  bool parallel_residual = false;  // x + attn(ln(x)) + mlp(ln(x))
  bool attn_bias = false, attn_out_bias = false, mlp_bias = false;
  bool tie_embeddings = false;
  // 0 = none; key j visible from query i when i - j < sliding_window (encoders: |i - j| < sliding_window)
  int32_t sliding_window = 0;
  std::vector<int32_t> layer_windows;  // per layer (0: none), in place of sliding_window where not empty
  // q/k norms, of the model's norm kind (RMSNorm; LayerNorm without bias where norm is Layer):
  bool qk_norm = false;        // each head's query and key normalized before rotary (Qwen3): [head_dim] weights
  bool qk_norm_full = false;   // with qk_norm: one norm over all the heads' queries ([n_heads * head_dim]
                               // weights) and one over the keys (OLMo 2, OLMoE)
  bool qk_norm_per_head = false;    // with qk_norm: each head its own weights, [n_heads, head_dim] and
                                    // [n_kv_heads, head_dim] (StableLM 2 12B, Command R+)
  bool qk_norm_after_rope = false;  // with qk_norm: normalized after rotary (HunYuan)
  bool pre_norms = true;       // norms before attention and MLP; false: their outputs only (post_norms: OLMo 2)
  bool first_attn_norm = true;  // false: layer 0's attention reads the embeddings' norm as is (ModernBERT)
  // a decoder saved without its language-model head (a bare base model, as sentence-transformers saves decoder
  // embedders: Qwen3-Embedding, gte-Qwen2, e5-mistral): hidden states only
  bool no_head = false;
  float emb_scale = 0.f;       // multiplies the token embeddings (Gemma: sqrt(hidden_size)); 0 = none
  // soft-capping (Gemma 2): scaled attention scores and final logits become cap * tanh(x / cap); 0 = none
  float attn_softcap = 0.f, logit_softcap = 0.f;
  bool post_norms = false;     // norms of the attention's and the MLP's outputs before their residual adds (Gemma 2/3)
  // a second rotary table (Gemma 3's sliding layers: a base of their own) for the layers layer_rope marks 1
  RopeSpec rope_local;
  std::vector<int32_t> layer_rope;
  bool local_rope(int layer) const { return !layer_rope.empty() && layer_rope[layer] != 0; }
  std::vector<int32_t> layer_nope;  // per layer (1: no rotary there, NoPE: SmolLM3's every 4th); empty: none
  bool nope(int layer) const { return !layer_nope.empty() && layer_nope[layer] != 0; }
  float attn_scale = 0.f;      // 0 = 1/sqrt(head_dim)
  bool attn_out_gate = false;  // the attention's output times sigmoid(attn.gate x) before o (Qwen3-Next, Qwen3.5)
  // BitNet's sub-norms: the attention's output RMS-normalized (attn.sub_norm [n_heads * head_dim]) before o, and the
  // MLP's act(g) * u (mlp.sub_norm [ffn_size]) before down
  bool sub_norms = false;
  // Gated DeltaNet (Qwen3-Next, Qwen3.5): the layers layer_linear marks 1 mix tokens through a recurrent state of
  // lin_v_heads matrices [lin_k_dim, lin_v_dim] in place of attention (no KV cache). q, k, v come from one
  // projection through a causal depthwise convolution of lin_conv taps and SiLU; q and k (lin_k_heads, each
  // serving lin_v_heads / lin_k_heads value heads) are L2-normalized; per token and value head,
  //   S = exp(g) S;  S += k (beta (v - S^T k))^T;  o = S^T q / sqrt(lin_k_dim)
  // with g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b); o is RMS-normalized per head times
  // silu(z), then projected out. A state does not rewind: such a model's cache keeps all of its tokens or none.
  // layer_linear's values: 0 attention, 1 Gated DeltaNet, 2 a gated short convolution (LFM2: in_proj to B, C, x;
  // y = C * conv(B * x), causal and depthwise over lin_conv taps; out_proj), whose state is its last inputs,
  // 3 a Mamba2 mixer (Granite 4.0-H: in_proj to z, x B C, dt; x B C through a causal convolution of lin_conv taps
  // and SiLU; per head a [ssm_head_dim, ssm_state] state h = exp(dt A) h + dt x B^T, y = h C + D x; y * silu(z)
  // RMS-normalized per group; out_proj), 4 none: the layer is its MLP alone (Nemotron-H's MLP layers), 5 a Mamba
  // (v1) mixer (in_proj to x, z; x through the causal convolution and SiLU; x_proj to dt (ssm_dt_rank), B, C, each
  // RMS-normalized without a weight where ssm_bcdt_eps > 0 (Falcon-Mamba); dt = softplus(dt_proj dt); per channel a
  // state of ssm_state values h = exp(dt A) h + dt x B, y = h C + D x; y * silu(z); out_proj), its ssm_inner()
  // channels as one head of ssm_head_dim.
  std::vector<int32_t> layer_linear;
  // which layers have an MLP: empty all of them, else 0 where a layer is its token mixer alone (Mamba2, Nemotron-H).
  // A layer without one of its two branches is a sequential pre-norm block: x += branch(norm(x)).
  std::vector<int32_t> layer_mlp;
  int32_t lin_k_heads = 0, lin_v_heads = 0, lin_k_dim = 0, lin_v_dim = 0, lin_conv = 4;
  // the value heads' order: grouped by key head (value head h reads key head h / (lin_v_heads / lin_k_heads), as
  // transformers holds them) or tiled (key head h % lin_k_heads: llama.cpp's GGUF order, read as stored)
  bool lin_v_tiled = false;
  int32_t ssm_heads = 0, ssm_head_dim = 0, ssm_state = 0, ssm_groups = 1;  // Mamba2 (layer_linear 3)
  float ssm_dt_min = 0.f, ssm_dt_max = 0.f;  // the time step's clamp (time_step_limit; max 0: none)
  bool ssm_conv_bias = false;
  // Falcon-H1: every layer's attention runs beside a Mamba2 mixer (its lin_* weights, a state per layer) on the same
  // normalized input, the two outputs added
  bool ssm_parallel = false;
  // Mamba2's output: y * silu(z) RMS-normalized per group (1: Mamba2, Granite 4.0-H, Nemotron-H), y * silu(z) alone
  // (0), or y normalized, then times silu(z) (2: Falcon-H1's norm_before_gate)
  int32_t ssm_norm = 1;
  int32_t ssm_dt_rank = 0;    // Mamba (layer_linear 5): the time step's rank before dt_proj
  float ssm_bcdt_eps = 0.f;   // Mamba: the epsilon of dt's, B's and C's RMSNorms (Falcon-Mamba); 0: none
  bool ssm_bcdt_weights = false;  // Mamba: those norms have weights (Jamba: lin.dt_norm, lin.b_norm, lin.c_norm)
  int64_t ssm_inner() const { return (int64_t)ssm_heads * ssm_head_dim; }
  int64_t ssm_conv_dim() const { return ssm_inner() + 2 * (int64_t)ssm_groups * ssm_state; }
  bool linear(int layer) const { return !layer_linear.empty() && layer_linear[layer] != 0; }  // (no KV cache)
  bool mixer(int layer) const { return layer_linear.empty() || layer_linear[layer] != 4; }
  bool has_mlp(int layer) const { return layer_mlp.empty() || layer_mlp[layer] != 0; }
  bool partial_layers() const {  // (some layer lacks its token mixer or its MLP)
    for (int32_t v : layer_mlp)
      if (!v) return true;
    for (int32_t v : layer_linear)
      if (v == 4) return true;
    return false;
  }
  bool short_conv(int layer) const { return linear(layer) && layer_linear[layer] == 2; }
  bool mamba(int layer) const { return linear(layer) && layer_linear[layer] == 3; }
  bool mamba1(int layer) const { return linear(layer) && layer_linear[layer] == 5; }
  bool delta_net() const {
    for (int32_t v : layer_linear)
      if (v == 1) return true;
    return false;
  }
  bool recurrent() const {
    if (ssm_parallel) return true;
    for (int32_t v : layer_linear)
      if (v != 0 && v != 4) return true;
    return false;
  }
  // queries scaled by 1 + q_temp_beta * log(1 + floor((position + q_temp_offset) / q_temp_length)) after rotary
  // (Ministral 3, Mistral Large 3: llama_4_scaling_beta over original_max_position_embeddings; Llama 4 on its NoPE
  // layers only, q_temp_nope_only, offset 1); q_temp_beta 0: none
  float q_temp_beta = 0.f;
  int32_t q_temp_length = 1, q_temp_offset = 0;
  bool q_temp_nope_only = false;
  bool q_temp(int layer) const { return q_temp_beta != 0.f && (!q_temp_nope_only || nope(layer)); }
  float residual_scale = 1.f;  // multiplies the attention's and the MLP's outputs before their residual adds (Granite)
  // mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE). Where n_experts > 0, the layers layer_moe marks 1 (all of
  // them where it is empty) replace their MLP by n_experts gated MLPs of width moe_ffn_size and a router: each token
  // takes the n_experts_used experts of highest softmax(router x) probability, their outputs weighted by those
  // probabilities (renormalized to sum to 1 over the chosen where moe_norm_topk). A shared gated MLP of width
  // shared_ffn_size (0: none) runs for every token, scaled by sigmoid(shared_scale . x) where shared_expert_gate.
  int32_t n_experts = 0, n_experts_used = 0, moe_ffn_size = 0, shared_ffn_size = 0;
  bool moe_norm_topk = true, shared_expert_gate = false;
  std::vector<int32_t> layer_moe;
  bool moe(int layer) const { return n_experts > 0 && (layer_moe.empty() || layer_moe[layer] != 0); }
  bool expert_bias = false;    // the router and every expert's products have biases (gpt-oss)
  // the router's variants (ERNIE 4.5, GLM-4.5, DeepSeek): scores sigmoid(logits) in place of the softmax
  // (moe_sigmoid); the choice made on the scores plus a bias that the weights leave out (moe_select_bias:
  // moe.router.select_bias [n_experts]); the experts in moe_groups groups (0: one), the choice among the experts of
  // the moe_groups_used groups whose moe_group_top best scores sum highest; the weights (the chosen scores,
  // renormalized where moe_norm_topk) times moe_routed_scale
  bool moe_sigmoid = false, moe_select_bias = false;
  int32_t moe_groups = 0, moe_groups_used = 0, moe_group_top = 2;
  float moe_routed_scale = 1.f;
  // the experts' gate where swiglu_limit > 0 (gpt-oss), in place of act(g) * u:
  //   g' = min(g, limit), u' = clamp(u, -limit, limit), out = (u' + 1) * g' * sigmoid(swiglu_alpha * g')
  float swiglu_limit = 0.f, swiglu_alpha = 1.702f;
  bool attn_sinks = false;     // a learned logit per head joins every softmax's denominator (gpt-oss): attn.sinks
  // Gemma 4's 26B-A4B: a sparse layer keeps its dense MLP, and the experts run beside it on x normalized by their
  // own norm (moe_norm), each branch through a norm of its own (post_mlp_norm_1, post_moe_norm) before the two are
  // added (then post_mlp_norm, post_norms); the router reads rmsnorm(x) (no weight) times moe.router.in_scale
  // / sqrt(hidden_size) (moe_router_norm); each chosen expert's weight times its moe.router.expert_scale
  // (moe_expert_scale)
  bool moe_beside_mlp = false, moe_router_norm = false, moe_expert_scale = false;

  // -- what the other families need ---------------------------------------------------------------
  NormPosition norm_position = NormPosition::Pre;
  bool final_norm = true;            // a norm after the last layer
  bool emb_norm = false;             // LayerNorm right after the embeddings (BLOOM, BERT)
  int32_t pos_offset = 0;            // learned positions: row = position + pos_offset (OPT: 2)
  int32_t n_token_types = 0;         // token type embeddings (BERT)
  bool parallel_mlp_norm = false;    // parallel residual whose MLP has its own norm (Falcon ln_attn / ln_mlp)
  bool lm_head_bias = false;         // CodeGen
  int32_t proj_dim = 0;              // embeddings of this width, projected in/out of hidden_size (OPT-350m)
  float logits_scale = 1.f;          // multiplies the final hidden state before the head (T5: d_model^-0.5)
  std::vector<float> alibi_slopes;   // ALiBi: one slope per head; the bias is slope * key position
  bool alibi_bf16 = false;           // Falcon: slope and bias rounded to bfloat16 as transformers does
  bool alibi_scaled = false;         // Falcon: the bias is scaled with the scores (BLOOM adds it after)
  int32_t rel_buckets = 32, rel_max_distance = 128;  // T5 relative position buckets
  bool rel_bias = false;  // T5's bucketed relative bias beside another position kind (MPNet: learned positions too)
  bool relative_bias() const { return pos == PosKind::Relative || rel_bias; }
  bool cross_attention = false;      // a decoder that attends to an encoder's output (T5)

  // -- Gemma 4 (and Gemma 3n): shapes, caches and inputs per layer ---------------------------------
  // per-layer head size, key/value head count and MLP width (empty: head_dim, n_kv_heads, ffn_size everywhere):
  // Gemma 4's full layers have heads of global_head_dim and their own key/value head count, its KV-sharing layers
  // a double-wide MLP. Values are as wide as keys where these are set (no v_head_dim).
  std::vector<int32_t> layer_head_dim, layer_kv_heads, layer_ffn;
  int32_t hd(int layer) const { return layer_head_dim.empty() ? head_dim : layer_head_dim[layer]; }
  int32_t vd(int layer) const { return layer_head_dim.empty() ? vdim() : layer_head_dim[layer]; }
  int32_t kvh(int layer) const { return layer_kv_heads.empty() ? n_kv_heads : layer_kv_heads[layer]; }
  int32_t ffn(int layer) const { return layer_ffn.empty() ? ffn_size : layer_ffn[layer]; }
  bool per_layer_shapes() const { return !layer_head_dim.empty() || !layer_kv_heads.empty() || !layer_ffn.empty(); }
  // KV sharing: where layer_kv_source[l] >= 0, layer l has no keys or values of its own and attends to those
  // layer layer_kv_source[l] (an earlier layer of the same shape, window and rotary table) cached
  std::vector<int32_t> layer_kv_source;
  int32_t kv_source(int layer) const { return layer_kv_source.empty() ? -1 : layer_kv_source[layer]; }
  bool v_norm = false;       // each value head RMS-normalized, without a weight
  bool layer_scale = false;  // each layer's output times its scalar layers.N.out_scale (Gemma 4's layer_scalar)
  // per-layer inputs where ple_dim > 0: each token's [n_layers, ple_dim] rows, (norm(ple.proj x0 / sqrt(hidden)) +
  // ple.embed[token] * sqrt(ple_dim)) / sqrt(2) from the embeddings x0 (tokens past ple_vocab read row 0); after
  // each layer, x += norm(ple.proj_l (act(ple.gate_l x) * row_l))
  int32_t ple_dim = 0, ple_vocab = 0;
  // Gemma 3n: AltUp's `altup` streams of the hidden state (0: none; stream 0 the one the layers compute on, the
  // others projections of the embeddings at their magnitude, altup.proj.{i}). Per layer, a router's modalities
  // m = tanh(altup.router (rmsnorm(s0) / hidden)) predict each stream, p_j = s_j + sum_i (altup.pred m)[j*N+i] s_i;
  // the layer runs on p_0; its output a corrects them, s_j = p_j + (a - p_0) (altup.corr m' + 1)[j] (m' from a);
  // the per-layer input branch reads s_0 (times altup.out_scale where altup_correct_scale) and is added to the other
  // streams. After the last layer the streams are projected back (altup.unembed.{i}), at s_0's magnitude, and
  // averaged. LAuReL (laurel_rank > 0): the attention's input h also feeds h + norm(laurel.r laurel.l h), added to
  // the attention's residual sum, the two scaled by 1/sqrt(2).
  int32_t altup = 0, laurel_rank = 0;
  bool altup_correct_scale = true;
  // per layer: the MLP's gate cut at its row's mean + sigma * its standard deviation and ReLU'd before the
  // activation (Gemma 3n's activation sparsity; sigma the normal quantile of the target sparsity); NaN: none
  std::vector<float> layer_gate_sigma;
  float gate_sigma(int layer) const { return layer_gate_sigma.empty() ? NAN : layer_gate_sigma[layer]; }

  bool causal() const { return kind != ModelKind::Encoder; }
  int32_t window(int layer) const { return layer_windows.empty() ? sliding_window : layer_windows[layer]; }

  void validate() const;  // throws ValueError naming the field
  void per_layer_fields() const;  // (validate's checks of the Gemma 4 fields)
};

}  // namespace ef
