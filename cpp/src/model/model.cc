// The generic transformer stack. One block, configured by ArchSpec:
//   pre-norm:  h = norm1(x);  a = attention(h);
//              sequential: x += a;  [x += cross(norm_c(x))];  x += mlp(norm2(x))
//              parallel:   x += a + mlp(h  or  norm2(x))
//   post-norm: x = norm1(x + attention(x));  x = norm2(x + mlp(x))
//   attention: q, k, v = h Wq, h Wk, h Wv (+ b); rotary(q, k); scores = q.k * scale (+ ALiBi / relative bias);
//              softmax over the visible keys (causal, sliding window, padding); a = (p V) Wo (+ b)
//   mlp(h) = act(h Wgate) * (h Wup) Wdown (gated) or act(h Wup) Wdown
// Embeddings: token (+ learned position) (+ token type) (-> project_in) (-> LayerNorm).
// Head: final norm (-> project_out) (* logits_scale) -> lm_head (+ bias).
#include "edgeformer/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "edgeformer/errors.h"
#include "edgeformer/quant.h"
#include "edgeformer/ops.h"
#include "edgeformer/rope.h"
#include "model/batch_checks.h"
#include "model/loader.h"

namespace ef {

using loading::Loader;
using loading::Role;

float q_temperature(const ArchSpec& spec, int32_t pos) {
  const double n = std::floor((double)(pos + spec.q_temp_offset) / spec.q_temp_length);
  return (float)(1.0 + spec.q_temp_beta * std::log1p(n));
}

void check_pos_rows(const int32_t* rows, int32_t T, int64_t table_rows) {
  for (int32_t t = 0; t < T; t++)
    EF_CHECK(rows[t] >= 0 && rows[t] < table_rows, "position_ids: " + std::to_string(rows[t]) + " at position " +
                                                       std::to_string(t) + " is outside the position table [0, " +
                                                       std::to_string(table_rows) + ")");
}

// T5's bucket for a relative position (key - query), as transformers computes it (float32 logs).
int32_t relative_bucket(int32_t rel, bool bidirectional, int32_t num_buckets, int32_t max_distance) {
  int32_t bucket = 0;
  if (bidirectional) {
    num_buckets /= 2;
    if (rel > 0) bucket += num_buckets;
    rel = std::abs(rel);
  } else {
    rel = -std::min(rel, 0);
  }
  const int32_t max_exact = num_buckets / 2;
  if (rel < max_exact) return bucket + rel;
  // a config with few buckets or a small max_distance makes this log ratio infinite or negative:
  // clamp into the table instead of indexing outside it
  const float v = std::log((float)rel / (float)max_exact) / std::log((float)max_distance / (float)max_exact) *
                  (float)(num_buckets - max_exact);
  int32_t large = std::isfinite(v) && v < 1e9f && v > -1e9f ? max_exact + (int32_t)v : num_buckets - 1;
  large = std::min(std::max(large, 0), num_buckets - 1);
  return bucket + large;
}

Model::Model(const ArchSpec& spec, const TensorMap& ckpt, const std::map<std::string, std::string>& names,
             const ModelOptions& opts, TensorMap* consume)
    : spec_(spec), opts_(opts) {
  spec_.validate();
  EF_CHECK(!consume || consume == &ckpt, "Model: 'consume' must be the checkpoint itself");
  kernels();  // an unusable EDGEFORMER_ISA fails here, at load
  EF_CHECK(opts.threads >= 0, "argument 'threads' must be positive, got " + std::to_string(opts.threads));
  EF_CHECK(opts.max_context >= 0, "argument 'max_context' must be positive, got " + std::to_string(opts.max_context));
  max_ctx_ = opts.max_context > 0 ? opts.max_context : spec_.max_position;
  EF_CHECK(max_ctx_ > 0, "max_context is unknown: the config has no 'max_position_embeddings'; pass max_context=");
  if (spec_.pos == PosKind::Learned && spec_.causal())
    EF_CHECK(max_ctx_ <= spec_.max_position, "max_context=" + std::to_string(max_ctx_) +
                                                 " exceeds the learned positions of the model (" +
                                                 std::to_string(spec_.max_position) + ")");
  int threads = opts.threads > 0 ? opts.threads : physical_cores();
  pool_ = std::make_shared<ThreadPool>(threads);
  Loader L{ckpt, names, consume, DType::F32, !opts.dtype.empty(), opts.dtype == "int8", pool_.get(), opts.progress};
  if (L.convert) L.convert_to = L.int8 ? DType::Q8_0 : parse_dtype(opts.dtype, "argument 'dtype'");
  if (L.progress)
    for (auto& kv : names)
      if (ckpt.contains(kv.second)) L.total += (int64_t)ckpt.get(kv.second).nbytes();

  const int64_t H = spec_.hidden_size, V = spec_.vocab_size, hd = spec_.head_dim, nh_ = spec_.n_heads;
  const int64_t E = spec_.proj_dim > 0 ? spec_.proj_dim : H;  // embedding width
  const bool ln = spec_.norm == NormKind::Layer;
  tok_emb_ = L.matrix("tok_embeddings.weight", {V, E}, Role::Embedding);
  if (spec_.pos == PosKind::Learned)
    pos_emb_ = L.matrix("pos_embeddings.weight", {(int64_t)spec_.max_position + spec_.pos_offset, H}, Role::Embedding);
  if (spec_.n_token_types > 0)
    type_emb_ = L.matrix("token_type_embeddings.weight", {spec_.n_token_types, H}, Role::Embedding);
  if (spec_.proj_dim > 0) {
    proj_in_ = L.matrix("proj_in.weight", {H, E}, Role::Head);
    proj_out_ = L.matrix("proj_out.weight", {E, H}, Role::Head);
  }
  if (spec_.emb_norm) {
    emb_norm_w_ = L.vec("emb_norm.weight", H, true);
    emb_norm_b_ = L.vec("emb_norm.bias", H, false);
  }
  const bool nw = spec_.norm_weights;  // (false: no weights or biases to read, OLMo 1)
  if (spec_.final_norm && nw) {
    final_norm_w_ = L.vec("norm.weight", H, true);
    if (ln) final_norm_b_ = L.vec("norm.bias", H, false);
  }
  if (spec_.causal() && !spec_.no_head) {
    // a tied head is the embedding table in the kernels' panels (decode steps stream it as a head, whose stored
    // rows the row kernels read several times slower); lookups unpack their rows
    if (spec_.tie_embeddings) tok_emb_ = L.panels(tok_emb_, Role::Head);
    lm_head_ = spec_.tie_embeddings ? tok_emb_ : L.matrix("lm_head.weight", {V, E}, Role::Head);
    if (spec_.lm_head_bias) lm_head_b_ = L.vec("lm_head.bias", V, true);
  }
  if (spec_.relative_bias()) rel_bias_ = L.small("rel_bias.weight", {spec_.rel_buckets, spec_.n_heads}, true);
  const int64_t P = spec_.ple_dim;
  if (P > 0) {
    ple_emb_ = L.matrix("ple.embed.weight", {spec_.ple_vocab, spec_.n_layers * P}, Role::Gathered);
    ple_proj_ = L.matrix("ple.proj.weight", {spec_.n_layers * P, H});
    ple_norm_w_ = L.vec("ple.norm.weight", P, true);
  }
  for (int i = 1; i < spec_.altup; i++) {  // (AltUp: streams 1 .. N-1 in and out)
    altup_proj_.push_back(L.matrix("altup.proj." + std::to_string(i - 1) + ".weight", {H, H}));
    altup_unembed_.push_back(L.matrix("altup.unembed." + std::to_string(i - 1) + ".weight", {H, H}));
  }
  layers_.resize(spec_.n_layers);
  for (int i = 0; i < spec_.n_layers; i++) {
    LayerWeights& w = layers_[i];
    std::string p = "layers." + std::to_string(i) + ".";
    const bool mixer = spec_.mixer(i), attends = mixer && !spec_.linear(i);
    const bool own_kv = attends && spec_.kv_source(i) < 0;  // (a layer sharing another's has no k or v)
    // this layer's widths: queries, keys, values, the heads' values, the MLP
    const int64_t QD = nh_ * spec_.hd(i), KD = (int64_t)spec_.kvh(i) * spec_.hd(i);
    const int64_t KVD = (int64_t)spec_.kvh(i) * spec_.vd(i), QVD = nh_ * spec_.vd(i), F = spec_.ffn(i);
    if (spec_.pre_norms && mixer && (i > 0 || spec_.first_attn_norm) && nw) {
      w.attn_norm_w = L.vec(p + "attn_norm.weight", H, true);
      if (ln) w.attn_norm_b = L.vec(p + "attn_norm.bias", H, false);
    }
    if (spec_.pre_norms && (!spec_.parallel_residual || spec_.parallel_mlp_norm) && spec_.has_mlp(i) && nw) {
      w.mlp_norm_w = L.vec(p + "mlp_norm.weight", H, true);
      if (ln) w.mlp_norm_b = L.vec(p + "mlp_norm.bias", H, false);
    }
    if (!mixer) {
      // (Nemotron-H's MLP layers: no token mixer)
    } else if (spec_.linear(i)) {
      load_linear(L, w, p, spec_.layer_linear[i]);
    } else if (spec_.mla()) {
      const int64_t Lk = spec_.mla_kv_lora, Lq = spec_.mla_q_lora, dn = spec_.mla_nope, dv = spec_.mla_v;
      const int64_t dq = nh_ * (dn + spec_.rope.rotary_dim);  // the queries before absorption
      if (Lq > 0) {
        w.wq_a = L.matrix(p + "attn.q_a.weight", {Lq, H});
        w.q_a_norm_w = L.vec(p + "attn.q_a_norm.weight", Lq, true);
        w.wq = L.matrix(p + "attn.q_b.weight", {dq, Lq});
      } else {
        w.wq = L.matrix(p + "attn.q.weight", {dq, H});
      }
      w.wk = L.matrix(p + "attn.kv_a.weight", {hd, H});
      w.kv_a_norm_w = L.vec(p + "attn.kv_a_norm.weight", Lk, true);
      for (int h = 0; h < nh_; h++) {
        w.k_b.push_back(L.matrix(p + "attn.k_b." + std::to_string(h) + ".weight", {Lk, dn}));
        w.v_b.push_back(L.matrix(p + "attn.v_b." + std::to_string(h) + ".weight", {dv, Lk}));
      }
      w.wo = L.matrix(p + "attn.o.weight", {H, nh_ * dv});
    } else {
      w.wq = L.matrix(p + "attn.q.weight", {QD, H});
      if (own_kv) {
        w.wk = L.matrix(p + "attn.k.weight", {KD, H});
        // keys serving as values (Gemma 4's attention_k_eq_v: both names one tensor) keep one matrix; the values are
        // the raw key rows (self_attention)
        const auto kn = names.find(p + "attn.k.weight"), vn = names.find(p + "attn.v.weight");
        if (!(kn != names.end() && vn != names.end() && kn->second == vn->second && KD == KVD))
          w.wv = L.matrix(p + "attn.v.weight", {KVD, H});
      }
      w.wo = L.matrix(p + "attn.o.weight", {H, QVD});
    }
    if (spec_.attn_bias && attends) {
      w.bq = L.vec(p + "attn.q.bias", QD, true);
      if (own_kv) {
        w.bk = L.vec(p + "attn.k.bias", KD, true);
        w.bv = L.vec(p + "attn.v.bias", KVD, true);
      }
    }
    if (spec_.attn_out_bias && attends) w.bo = L.vec(p + "attn.o.bias", H, true);
    if (spec_.attn_out_gate && attends) w.wgate = L.matrix(p + "attn.gate.weight", {QD, H});
    if (spec_.sub_norms && attends) w.attn_sub_norm_w = L.vec(p + "attn.sub_norm.weight", QVD, true);
    if (spec_.qk_norm && attends) {
      const int64_t lhd = spec_.hd(i);
      if (spec_.qk_norm_per_head) {
        w.q_norm_w = L.small(p + "attn.q_norm.weight", {spec_.n_heads, lhd}, true);
        if (own_kv) w.k_norm_w = L.small(p + "attn.k_norm.weight", {spec_.kvh(i), lhd}, true);
      } else {
        w.q_norm_w = L.vec(p + "attn.q_norm.weight", spec_.qk_norm_full ? QD : lhd, true);
        if (own_kv) w.k_norm_w = L.vec(p + "attn.k_norm.weight", spec_.qk_norm_full ? KD : lhd, true);
      }
    }
    if (spec_.attn_sinks && attends) w.sinks = L.vec(p + "attn.sinks", spec_.n_heads, true);
    if (spec_.ssm_parallel) load_linear(L, w, p, 3);  // (Falcon-H1: a Mamba2 mixer beside the attention)
    if (spec_.post_norms) {
      w.post_attn_norm_w = L.vec(p + "post_attn_norm.weight", H, true);
      w.post_mlp_norm_w = L.vec(p + "post_mlp_norm.weight", H, true);
    }
    if (P > 0) {
      w.ple_gate = L.matrix(p + "ple.gate.weight", {P, H});
      w.ple_proj = L.matrix(p + "ple.proj.weight", {H, P});
      w.ple_norm_w = L.vec(p + "ple.norm.weight", H, true);
    }
    if (spec_.layer_scale) w.out_scale = L.vec(p + "out_scale", 1, true);
    if (spec_.altup > 0) {
      const int64_t N = spec_.altup;
      w.altup_norm_w = L.vec(p + "altup.norm.weight", H, true);
      w.altup_router = L.small_f32(p + "altup.router.weight", {N, H});
      w.altup_pred = L.small_f32(p + "altup.pred.weight", {N * N, N});
      w.altup_corr = L.small_f32(p + "altup.corr.weight", {N, N});
      if (spec_.altup_correct_scale) w.altup_out_scale = L.vec(p + "altup.out_scale", H, true);
    }
    if (spec_.laurel_rank > 0) {
      w.laurel_l = L.matrix(p + "laurel.l.weight", {spec_.laurel_rank, H});
      w.laurel_r = L.matrix(p + "laurel.r.weight", {H, spec_.laurel_rank});
      w.laurel_norm_w = L.vec(p + "laurel.norm.weight", H, true);
    }
    if (!spec_.has_mlp(i)) continue;  // (Mamba2's and Nemotron-H's mixer layers)
    if (spec_.moe(i)) {
      const int64_t NE = spec_.n_experts, FE = spec_.moe_ffn_size, FS = spec_.shared_ffn_size;
      w.router = L.small_f32(p + "moe.router.weight", {NE, H});
      if (spec_.moe_router_norm) w.router_in_scale = L.vec(p + "moe.router.in_scale", H, true);
      if (spec_.moe_expert_scale) w.expert_scale = L.vec(p + "moe.router.expert_scale", NE, true);
      if (spec_.moe_beside_mlp) {
        w.post_mlp_norm1_w = L.vec(p + "post_mlp_norm_1.weight", H, true);
        w.moe_norm_w = L.vec(p + "moe_norm.weight", H, true);
        w.post_moe_norm_w = L.vec(p + "post_moe_norm.weight", H, true);
      }
      if (spec_.expert_bias) w.router_b = L.vec(p + "moe.router.bias", NE, true);
      if (spec_.moe_select_bias) w.select_b = L.vec(p + "moe.router.select_bias", NE, true);
      // an MLP of width f under prefix q ("...gate.weight" where gated, ...), with its biases where asked
      auto expert = [&](const std::string& q, int64_t f, bool biases) {
        LayerWeights::Expert x;
        if (spec_.gated_mlp) x.gate = L.matrix(q + "gate.weight", {f, H});
        x.up = L.matrix(q + "up.weight", {f, H});
        x.down = L.matrix(q + "down.weight", {H, f});
        if (biases) {
          if (spec_.gated_mlp) x.b_gate = L.vec(q + "gate.bias", f, true);
          x.b_up = L.vec(q + "up.bias", f, true);
          x.b_down = L.vec(q + "down.bias", H, true);
        }
        return x;
      };
      for (int64_t e = 0; e < NE; e++)
        w.experts.push_back(expert(p + "moe.experts." + std::to_string(e) + ".", FE, spec_.expert_bias));
      if (FS > 0) w.shared = expert(p + "moe.shared.", FS, spec_.mlp_bias);  // (ERNIE 4.5's use_bias)
      if (FS > 0 && spec_.shared_expert_gate) {  // [1, hidden] ([hidden] in GGUF files)
        const Tensor* g = L.find(p + "moe.shared_scale.weight");
        w.shared_scale = L.small(p + "moe.shared_scale.weight", g && g->dim() == 1 ? std::vector<int64_t>{H}
                                                                                      : std::vector<int64_t>{1, H}, true);
      }
      if (!spec_.moe_beside_mlp) continue;  // (a sparse layer has no dense MLP, unless Gemma 4's)
    }
    if (spec_.gated_mlp) w.w_gate = L.matrix(p + "mlp.gate.weight", {F, H});
    w.w_up = L.matrix(p + "mlp.up.weight", {F, H});
    w.w_down = L.matrix(p + "mlp.down.weight", {H, F});
    if (spec_.sub_norms) w.mlp_sub_norm_w = L.vec(p + "mlp.sub_norm.weight", F, true);
    if (spec_.mlp_bias) {
      if (spec_.gated_mlp) w.b_gate = L.vec(p + "mlp.gate.bias", F, true);
      w.b_up = L.vec(p + "mlp.up.bias", F, true);
      w.b_down = L.vec(p + "mlp.down.bias", H, true);
    }
    if (spec_.cross_attention) {
      w.cross_norm_w = L.vec(p + "cross_norm.weight", H, true);
      if (ln) w.cross_norm_b = L.vec(p + "cross_norm.bias", H, false);
      w.cq = L.matrix(p + "cross.q.weight", {QD, H});
      w.ck = L.matrix(p + "cross.k.weight", {QD, H});
      w.cv = L.matrix(p + "cross.v.weight", {QD, H});
      w.co = L.matrix(p + "cross.o.weight", {H, QD});
    }
  }
  if (L.progress && L.convert) std::fprintf(stderr, "\n");
  EF_CHECK(opts.kv_dtype.empty() || opts.kv_dtype == "f16" || opts.kv_dtype == "f32" || opts.kv_dtype == "bf16",
           "argument 'kv_dtype' must be None, 'f16', 'bf16' or 'f32', got '" + opts.kv_dtype + "'");
  // auto: f32 beside f32 matrices (the reference precision); bf16 beside bf16 matrices where the tile unit
  // multiplies them (amx: attention products on tiles too, as PyTorch's bf16 keeps its cache; a 1.1B prompt of
  // 512 tokens 1.08x, of 2048 1.37x); f16 beside every other type, as llama.cpp
  const LayerWeights* first = nullptr;  // (the first layer with attention: recurrent layers have no wq)
  for (int i = 0; i < spec_.n_layers && !first; i++)
    if (!spec_.linear(i)) first = &layers_[i];
  const DType wq_type = first ? first->wq.dtype : DType::F32;
  const DType auto_kv = wq_type == DType::F32                                      ? DType::F32
                        : wq_type == DType::BF16 && active_isa() == Isa::AMX ? DType::BF16
                                                                                   : DType::F16;
  kv_type_ = opts.kv_dtype == "bf16"  ? DType::BF16
             : opts.kv_dtype.empty() ? auto_kv
             : opts.kv_dtype == "f16" ? DType::F16
                                      : DType::F32;
  // panels where the head sizes allow; bf16 ones where this ISA multiplies bf16 panels (else rows, which every ISA
  // multiplies in vectors)
  kv_panels_ = kv_type_ != DType::BF16 || kernels().matmul_panel[(int)DType::BF16] != nullptr;
  for (int i = 0; i < spec_.n_layers; i++)
    kv_panels_ = kv_panels_ && spec_.hd(i) % kPanel == 0 && spec_.vd(i) % kPanel == 0;
  kv_len_ = kv_panels_ ? (int32_t)((max_ctx_ + kPanel - 1) / kPanel * kPanel) : max_ctx_;
  // each layer's KV slot (attention) and recurrent state (its convolution's last inputs, then Mamba's, Mamba2's or
  // Gated DeltaNet's state matrices; Falcon-H1's attention layers have both)
  for (int i = 0, n_linear = 0; i < spec_.n_layers; i++) {
    if (spec_.linear(i)) {
      kv_slot_.push_back(-1);
    } else if (spec_.kv_source(i) >= 0) {
      kv_slot_.push_back(kv_slot_[spec_.kv_source(i)]);
    } else {  // a slot of its own: its layer's kv heads of kv_len_ positions
      kv_slot_.push_back(kv_layers_++);
      kv_owner_.push_back(i);
      kv_koff_.push_back(kv_kelems_);
      kv_voff_.push_back(kv_velems_);
      kv_kelems_ += (size_t)spec_.kvh(i) * kv_len_ * spec_.hd(i);
      kv_velems_ += (size_t)spec_.kvh(i) * kv_len_ * spec_.vd(i);
    }
    size_t state = 0;
    bool recurrent = true;
    if (spec_.short_conv(i)) {
      state = (size_t)(spec_.lin_conv - 1) * spec_.hidden_size;
    } else if (spec_.mamba(i) || spec_.ssm_parallel) {
      state = (size_t)(spec_.lin_conv - 1) * spec_.ssm_conv_dim() + (size_t)spec_.ssm_inner() * spec_.ssm_state;
    } else if (spec_.mamba1(i)) {
      state = (size_t)(spec_.lin_conv - 1 + spec_.ssm_state) * spec_.ssm_inner();
    } else if (spec_.linear(i) && spec_.mixer(i)) {  // (Gated DeltaNet)
      const size_t conv_dim =
          2 * (size_t)spec_.lin_k_heads * spec_.lin_k_dim + (size_t)spec_.lin_v_heads * spec_.lin_v_dim;
      state = (size_t)(spec_.lin_conv - 1) * conv_dim + (size_t)spec_.lin_v_heads * spec_.lin_k_dim * spec_.lin_v_dim;
    } else {
      recurrent = false;
    }
    lin_slot_.push_back(recurrent ? n_linear++ : -1);
    lin_stride_ = std::max(lin_stride_, state);
  }
  alloc_cache();
  if (spec_.pos == PosKind::Rotary && !spec_.rope.length_dependent())
    rope_inv_freq(spec_, 0, inv_freq_, rope_mscale_);
  if (!spec_.layer_rope.empty()) {
    ArchSpec local = spec_;
    local.rope = spec_.rope_local;
    rope_inv_freq(local, 0, inv_freq_local_, rope_mscale_local_);
  }
}

void Model::alloc_cache() {
  int32_t n_linear = 0;
  for (int32_t s : lin_slot_) n_linear += s >= 0;
  lin_state_.assign((size_t)n_linear * lin_stride_, 0.f);
  try {
    kcache_ = std::make_unique<Buffer>(kv_kelems_ * kv_elem());
    vcache_ = std::make_unique<Buffer>(kv_velems_ * kv_elem());
  } catch (const Error&) {
    throw ValueError("max_context=" + std::to_string(max_ctx_) + ": the KV cache needs " +
                     std::to_string((kv_kelems_ + kv_velems_) * kv_elem() >> 20) +
                     " MiB, more than can be allocated; pass a smaller max_context= (or kv_dtype='f16')");
  }
  // zeros where no position was written yet: bf16 value products read whole pairs (and 32 positions on the tile
  // unit) past the last one, times zero weights, which must stay zero (large buffers are fresh mappings: zero)
  for (Buffer* b : {kcache_.get(), vcache_.get()})
    if (!b->mapped && b->data) std::memset(b->data, 0, b->size);
}

Model::Model(const Model& o, bool)
    : spec_(o.spec_), opts_(o.opts_), max_ctx_(o.max_ctx_), pool_(o.pool_), tok_emb_(o.tok_emb_),
      pos_emb_(o.pos_emb_), type_emb_(o.type_emb_), emb_norm_w_(o.emb_norm_w_), emb_norm_b_(o.emb_norm_b_),
      proj_in_(o.proj_in_), proj_out_(o.proj_out_), final_norm_w_(o.final_norm_w_), final_norm_b_(o.final_norm_b_),
      lm_head_(o.lm_head_), lm_head_b_(o.lm_head_b_), rel_bias_(o.rel_bias_), ple_emb_(o.ple_emb_),
      ple_proj_(o.ple_proj_), ple_norm_w_(o.ple_norm_w_), altup_proj_(o.altup_proj_), altup_unembed_(o.altup_unembed_),
      layers_(o.layers_),
      kv_panels_(o.kv_panels_), kv_len_(o.kv_len_), kv_type_(o.kv_type_), kv_slot_(o.kv_slot_),
      kv_layers_(o.kv_layers_), kv_koff_(o.kv_koff_), kv_voff_(o.kv_voff_), kv_owner_(o.kv_owner_),
      kv_kelems_(o.kv_kelems_), kv_velems_(o.kv_velems_), lin_slot_(o.lin_slot_), lin_stride_(o.lin_stride_),
      inv_freq_(o.inv_freq_),
      inv_freq_local_(o.inv_freq_local_), rope_mscale_local_(o.rope_mscale_local_), rope_mscale_(o.rope_mscale_) {
  alloc_cache();  // the tensors share their memory (Tensor::owner); the cache and scratch are this model's
}

std::unique_ptr<Model> Model::fork() const { return std::unique_ptr<Model>(new Model(*this, true)); }

void Model::decode_batch(const std::vector<Model*>& seqs, const int32_t* tokens, float* logits) {
  EF_CHECK(!seqs.empty() && tokens && logits, "decode_batch: no sequences");
  Model& lead = *seqs[0];
  const ArchSpec& sp = lead.spec_;
  EF_CHECK(sp.causal() && !sp.cross_attention && sp.pos != PosKind::Relative,
           "decode_batch: only causal decoders without cross-attention or relative position bias");
  check_batch(seqs, tokens, sp.vocab_size, [&](size_t i) {
    const Model& m = *seqs[i];
    return m.tok_emb_.data == lead.tok_emb_.data && m.layers_.size() == lead.layers_.size() &&
           (m.layers_.empty() || m.layers_[0].wq.data == lead.layers_[0].wq.data) && m.max_ctx_ == lead.max_ctx_ &&
           m.kv_type_ == lead.kv_type_ && m.pool_ == lead.pool_;
  });
  ForwardArgs a;
  a.tokens = tokens;
  a.T = (int32_t)seqs.size();
  a.output = Output::AllLogits;
  a.out = logits;
  lead.run(a, seqs.data());
}

std::vector<std::pair<std::string, Tensor>> Model::weights() const {
  std::vector<std::pair<std::string, Tensor>> w;
  auto add = [&](const std::string& n, const Tensor& t) {
    if (t.data) w.emplace_back(n, unpack_panels(t));  // the stored row layout, as a checkpoint has it
  };
  add("tok_embeddings.weight", tok_emb_);
  add("pos_embeddings.weight", pos_emb_);
  add("token_type_embeddings.weight", type_emb_);
  add("emb_norm.weight", emb_norm_w_);
  add("emb_norm.bias", emb_norm_b_);
  add("proj_in.weight", proj_in_);
  add("proj_out.weight", proj_out_);
  add("norm.weight", final_norm_w_);
  add("norm.bias", final_norm_b_);
  if (lm_head_.data != tok_emb_.data) add("lm_head.weight", lm_head_);
  add("lm_head.bias", lm_head_b_);
  add("rel_bias.weight", rel_bias_);
  add("ple.embed.weight", ple_emb_);
  add("ple.proj.weight", ple_proj_);
  add("ple.norm.weight", ple_norm_w_);
  for (size_t i = 0; i < altup_proj_.size(); i++) {
    add("altup.proj." + std::to_string(i) + ".weight", altup_proj_[i]);
    add("altup.unembed." + std::to_string(i) + ".weight", altup_unembed_[i]);
  }
  for (size_t i = 0; i < layers_.size(); i++) {
    const LayerWeights& l = layers_[i];
    const std::string p = "layers." + std::to_string(i) + ".";
    // (latent attention: wq is q_b where queries go through q_a, wk is kv_a)
    const char* q_name = spec_.mla() && spec_.mla_q_lora > 0 ? "attn.q_b.weight" : "attn.q.weight";
    const char* k_name = spec_.mla() ? "attn.kv_a.weight" : "attn.k.weight";
    const std::pair<const char*, const Tensor*> items[] = {
        {"attn_norm.weight", &l.attn_norm_w}, {"attn_norm.bias", &l.attn_norm_b}, {"mlp_norm.weight", &l.mlp_norm_w},
        {"mlp_norm.bias", &l.mlp_norm_b},     {q_name, &l.wq},                  {k_name, &l.wk},
        {"attn.v.weight", &l.wv},             {"attn.o.weight", &l.wo},         {"attn.q.bias", &l.bq},
        {"attn.k.bias", &l.bk},               {"attn.v.bias", &l.bv},           {"attn.o.bias", &l.bo},
        {"attn.q_norm.weight", &l.q_norm_w},  {"attn.k_norm.weight", &l.k_norm_w},
        {"post_attn_norm.weight", &l.post_attn_norm_w}, {"post_mlp_norm.weight", &l.post_mlp_norm_w},
        {"attn.sub_norm.weight", &l.attn_sub_norm_w}, {"mlp.sub_norm.weight", &l.mlp_sub_norm_w},
        {"mlp.gate.weight", &l.w_gate},       {"mlp.up.weight", &l.w_up},       {"mlp.down.weight", &l.w_down},
        {"mlp.gate.bias", &l.b_gate},         {"mlp.up.bias", &l.b_up},         {"mlp.down.bias", &l.b_down},
        {"cross_norm.weight", &l.cross_norm_w}, {"cross_norm.bias", &l.cross_norm_b}, {"cross.q.weight", &l.cq},
        {"cross.k.weight", &l.ck},            {"cross.v.weight", &l.cv},        {"cross.o.weight", &l.co}};
    for (auto& it : items) add(p + it.first, *it.second);
    add(p + "attn.sinks", l.sinks);
    add(p + "ple.gate.weight", l.ple_gate);
    add(p + "ple.proj.weight", l.ple_proj);
    add(p + "ple.norm.weight", l.ple_norm_w);
    add(p + "out_scale", l.out_scale);
    const std::pair<const char*, const Tensor*> altup[] = {
        {"altup.norm.weight", &l.altup_norm_w}, {"altup.router.weight", &l.altup_router},
        {"altup.pred.weight", &l.altup_pred},   {"altup.corr.weight", &l.altup_corr},
        {"altup.out_scale", &l.altup_out_scale}, {"laurel.l.weight", &l.laurel_l},
        {"laurel.r.weight", &l.laurel_r},       {"laurel.norm.weight", &l.laurel_norm_w}};
    for (auto& it : altup) add(p + it.first, *it.second);
    add(p + "attn.gate.weight", l.wgate);
    const bool sc = spec_.short_conv((int)i) || spec_.mamba((int)i) || spec_.mamba1((int)i) ||  // (in_proj: lin.in)
                    spec_.ssm_parallel;
    add(p + "lin.conv.bias", l.lin_conv_b);
    add(p + "lin.D", l.lin_D);
    const std::pair<const char*, const Tensor*> linear[] = {
        {sc ? "lin.in.weight" : "lin.qkv.weight", &l.lin_qkv}, {"lin.z.weight", &l.lin_z},   {"lin.b.weight", &l.lin_b},
        {"lin.a.weight", &l.lin_a},     {"lin.out.weight", &l.lin_out}, {"lin.conv.weight", &l.lin_conv},
        {"lin.dt_bias", &l.lin_dt_bias}, {"lin.A", &l.lin_A},  {"lin.norm.weight", &l.lin_norm_w},
        {"lin.x.weight", &l.lin_x},     {"lin.dt.weight", &l.lin_dt},
        {"lin.dt_norm.weight", &l.lin_dt_norm}, {"lin.b_norm.weight", &l.lin_b_norm},
        {"lin.c_norm.weight", &l.lin_c_norm}};
    for (auto& it : linear) add(p + it.first, *it.second);
    if (spec_.mla()) {  // (wq and wk are q_b or q and kv_a there)
      add(p + "attn.q_a.weight", l.wq_a);
      add(p + "attn.q_a_norm.weight", l.q_a_norm_w);
      add(p + "attn.kv_a_norm.weight", l.kv_a_norm_w);
      for (size_t h = 0; h < l.k_b.size(); h++) {
        add(p + "attn.k_b." + std::to_string(h) + ".weight", l.k_b[h]);
        add(p + "attn.v_b." + std::to_string(h) + ".weight", l.v_b[h]);
      }
    }
    add(p + "moe.router.weight", l.router);
    add(p + "moe.router.bias", l.router_b);
    add(p + "moe.router.select_bias", l.select_b);
    auto add_expert = [&](const std::string& q, const LayerWeights::Expert& x) {
      add(q + "gate.weight", x.gate);
      add(q + "up.weight", x.up);
      add(q + "down.weight", x.down);
      add(q + "gate.bias", x.b_gate);
      add(q + "up.bias", x.b_up);
      add(q + "down.bias", x.b_down);
    };
    for (size_t e = 0; e < l.experts.size(); e++) add_expert(p + "moe.experts." + std::to_string(e) + ".", l.experts[e]);
    add_expert(p + "moe.shared.", l.shared);
    add(p + "moe.shared_scale.weight", l.shared_scale);
    add(p + "moe.router.in_scale", l.router_in_scale);
    add(p + "moe.router.expert_scale", l.expert_scale);
    add(p + "post_mlp_norm_1.weight", l.post_mlp_norm1_w);
    add(p + "moe_norm.weight", l.moe_norm_w);
    add(p + "post_moe_norm.weight", l.post_moe_norm_w);
  }
  return w;
}

int64_t Model::weight_bytes() const {
  int64_t n = tok_emb_.storage_bytes() + (lm_head_.data && lm_head_.data != tok_emb_.data ? lm_head_.storage_bytes() : 0);
  n += ple_emb_.nbytes() + (ple_proj_.data ? ple_proj_.storage_bytes() : 0);
  for (const auto* v : {&altup_proj_, &altup_unembed_})
    for (const Tensor& t : *v) n += t.storage_bytes();
  for (auto& w : layers_) {
    for (const Tensor* t : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down, &w.cq, &w.ck, &w.cv, &w.co,
                            &w.shared.gate, &w.shared.up, &w.shared.down, &w.wq_a, &w.router, &w.ple_gate,
                            &w.ple_proj, &w.laurel_l, &w.laurel_r})
      n += t->data ? t->storage_bytes() : 0;
    for (const auto& e : w.experts) n += e.gate.storage_bytes() + e.up.storage_bytes() + e.down.storage_bytes();
    for (const auto* heads : {&w.k_b, &w.v_b})  // (latent attention's per-head matrices)
      for (const Tensor& t : *heads) n += t.storage_bytes();
  }
  return n;
}

void Model::ensure_scratch(int32_t T) {
  if (T <= scratch_T_) return;
  // the widest layer's widths (ArchSpec::hd, kvh, vd and ffn per layer)
  size_t QD = 0, KD = 0, KVD = 0, QVD = 0, F = 0;
  for (int l = 0; l < spec_.n_layers; l++) {
    QD = std::max(QD, (size_t)spec_.n_heads * spec_.hd(l));
    KD = std::max(KD, (size_t)spec_.kvh(l) * spec_.hd(l));
    KVD = std::max(KVD, (size_t)spec_.kvh(l) * spec_.vd(l));
    QVD = std::max(QVD, (size_t)spec_.n_heads * spec_.vd(l));
    F = std::max(F, (size_t)spec_.ffn(l));
  }
  const size_t H = spec_.hidden_size;
  const size_t E = std::max<size_t>(H, spec_.proj_dim);
  x_.resize(T * H);
  h_.resize(T * E);
  h2_.resize(T * H);
  tmp_.resize(T * H);
  e_.resize(T * E);
  q_.resize(T * QD);
  k_.resize(T * KD);
  v_.resize(T * KVD);
  att_.resize(T * QVD);
  if (spec_.attn_out_gate) gate_.resize(T * QD);
  // (g_ also holds LAuReL's low-rank rows)
  const size_t FM =
      std::max({F, (size_t)spec_.moe_ffn_size, (size_t)spec_.shared_ffn_size, (size_t)spec_.laurel_rank});
  // (a decode step's experts run side by side: n_experts_used of them)
  const size_t FE = std::max((size_t)T, (size_t)spec_.n_experts_used) * spec_.moe_ffn_size;
  g_.resize(std::max(T * FM, FE));
  u_.resize(std::max(T * FM, FE));
  ple_.resize(2 * (size_t)T * spec_.n_layers * spec_.ple_dim);  // (the rows, and a product's scratch)
  if (spec_.n_experts > 0) {
    moe_in_.resize(T * H);
    moe_out_.resize(std::max<size_t>(T, spec_.n_experts_used) * H);
    moe_logits_.resize(T * (size_t)spec_.n_experts);
    if (spec_.moe_beside_mlp) moe_side_.resize(3 * (size_t)T * H);
  }
  scratch_T_ = T;
}

void Model::compute_rope(const int32_t* pos, int32_t T, int64_t length) {
  const bool dynamic = spec_.rope.length_dependent();
  if (dynamic) rope_inv_freq(spec_, length >= 0 ? length : (int64_t)pos[0] + 1, inv_freq_, rope_mscale_);
  const size_t half = inv_freq_.size();
  cos_.resize(T * half);
  sin_.resize(T * half);
  for (int32_t t = 0; t < T; t++) {
    if (dynamic && length < 0 && t > 0) rope_inv_freq(spec_, (int64_t)pos[t] + 1, inv_freq_, rope_mscale_);
    float p = (float)pos[t];
    for (size_t i = 0; i < half; i++) {
      float f = p * inv_freq_[i];
      cos_[t * half + i] = std::cos(f) * rope_mscale_;
      sin_[t * half + i] = std::sin(f) * rope_mscale_;
    }
  }
  if (inv_freq_local_.empty()) return;
  const size_t hl = inv_freq_local_.size();  // (the local table rotates as many dimensions: validate())
  cos_l_.resize(T * hl);
  sin_l_.resize(T * hl);
  for (int32_t t = 0; t < T; t++)
    for (size_t i = 0; i < hl; i++) {
      const float f = (float)pos[t] * inv_freq_local_[i];
      cos_l_[t * hl + i] = std::cos(f) * rope_mscale_local_;
      sin_l_[t * hl + i] = std::sin(f) * rope_mscale_local_;
    }
}

// The per-layer input rows ple_ [T, n_layers, ple_dim] of the tokens, from their embeddings x [T, hidden]
// (ArchSpec::ple_dim), in float32 as transformers computes them.
void Model::per_layer_inputs(const int32_t* tokens, int32_t T, const float* x, const KernelTable& K) {
  const int64_t H = spec_.hidden_size, P = spec_.ple_dim, LP = (int64_t)spec_.n_layers * P;
  float *rows = ple_.data(), *tok = ple_.data() + (size_t)T * LP;
  ops::linear(pool_.get(), K, x, H, T, ple_proj_, nullptr, rows, LP);
  K.scale(rows, (float)std::pow((double)H, -0.5), T * LP);
  for (int64_t r = 0; r < (int64_t)T * spec_.n_layers; r++)
    K.rmsnorm(rows + r * P, fptr(ple_norm_w_), spec_.norm_eps, rows + r * P, P);
  std::vector<int32_t> ids(tokens, tokens + T);
  for (int32_t& id : ids)
    if (id < 0 || id >= spec_.ple_vocab) id = 0;  // (past the table: its row 0, as transformers reads them)
  ops::embedding(K, ple_emb_, ids.data(), T, tok);
  K.scale(tok, (float)std::sqrt((double)P), T * LP);
  K.add(rows, tok, T * LP);
  K.scale(rows, (float)std::pow(2.0, -0.5), T * LP);
}

// The rows of a forward of T rows that the layers after the KV-sharing point still read, narrowed to the last one
// (row T-1 moved to row 0): the hidden state, the per-layer input rows, the rotary tables, AltUp's streams.
void Model::narrow_to_last_row(float* x, int32_t T) {
  const int64_t H = spec_.hidden_size, last = T - 1;
  std::memmove(x, x + last * H, H * sizeof(float));
  if (spec_.ple_dim > 0) {
    const int64_t LP = (int64_t)spec_.n_layers * spec_.ple_dim;
    std::memmove(ple_.data(), ple_.data() + last * LP, LP * sizeof(float));
  }
  for (std::vector<float>* v : {&cos_, &sin_, &cos_l_, &sin_l_}) {
    const size_t w = v->size() / T;  // (a table's row: its half of the rotated dimensions)
    if (w) std::memmove(v->data(), v->data() + last * w, w * sizeof(float));
  }
  for (int j = 0; j < spec_.altup; j++)  // ([N][T][H] -> [N][1][H]; each row moves down, none overwritten first)
    std::memmove(streams_.data() + j * H, streams_.data() + (j * T + last) * H, H * sizeof(float));
}

void Model::forward(const ForwardArgs& a) { run(a, nullptr); }

void Model::run(const ForwardArgs& a, Model* const* seqs) {
  int32_t T = a.T;  // (the rows computed: narrowed to a prompt's last past the layers that keep keys and values)
  const int32_t T_all = a.T;
  EF_CHECK(T > 0, "forward: no tokens");
  const bool batch = seqs != nullptr;
  if (!spec_.causal()) n_past_ = 0;  // an encoder sees each input whole
  for (int32_t i = 0; i < (batch ? T : 1); i++) {
    const int64_t need = batch ? (int64_t)seqs[i]->n_past_ + 1 : (int64_t)n_past_ + T;
    if (need > max_ctx_)
      throw ValueError(std::string(batch ? "sequence " + std::to_string(i) + " of the batch: " : "") + "sequence of " +
                       std::to_string(need) + " tokens exceeds max_context=" + std::to_string(max_ctx_) +
                       " (pass a larger max_context= to load, up to the memory you have)");
  }
  // each row's position (and, in a batch, the model whose cache it uses)
  std::vector<int32_t> pos(T);
  for (int32_t t = 0; t < T; t++) pos[t] = batch ? seqs[t]->n_past_ : n_past_ + t;
  // the position a row's token has in its own sequence (packed sequences count from 0 each; pos: its cache row)
  std::vector<int32_t> seq_pos;
  set_segments(a, seq_pos);
  const std::vector<int32_t>& tok_pos = seq_pos.empty() ? pos : seq_pos;
  auto owner = [&](int32_t t) -> Model& { return batch ? *seqs[t] : *this; };
  EF_CHECK(!spec_.cross_attention || ckcache_, "forward: the decoder has no encoder output (set_encoder_output)");
  EF_CHECK(a.output == Output::None || a.out, "forward: no output buffer");
  EF_CHECK((a.output != Output::LastLogits && a.output != Output::AllLogits) || lm_head_.data,
           "this model has no language-model head (an encoder, or a base model saved without one): ask for hidden "
           "states (hidden_states(), embed())");
  KernelTable kt = kernels();
  // prompts: compute-bound, one level (a batch of decode steps keeps the decode precision)
  if (T > 1 && !batch && !a.decode_precision && !opts_.exact_q8_prompts && kt.q8_0_panel_one_level)
    kt.qmatmul_panel[(int)DType::Q8_0] = kt.q8_0_panel_one_level;
  const KernelTable& K = kt;
  ensure_scratch(T);
  // attention scores: one row per thread, as long as the keys in use (grown on demand: a context of
  // millions of positions costs nothing until it is used)
  const size_t keys = (size_t)std::max<int64_t>((int64_t)*std::max_element(pos.begin(), pos.end()) + 1, enc_T_);
  if (scores_.size() < (size_t)pool_->size() * keys) scores_.resize((size_t)pool_->size() * keys);
  score_stride_ = keys;
  const int64_t H = spec_.hidden_size, V = spec_.vocab_size;
  const int nh = spec_.n_heads;
  const int64_t E = spec_.proj_dim > 0 ? spec_.proj_dim : H;
  int32_t pos0 = n_past_;  // (row 0's position)
  const int32_t past = n_past_;
  ThreadPool* pool = pool_.get();
  float *x = x_.data(), *h = h_.data(), *h2 = h2_.data(), *tmp = tmp_.data();

  // embeddings
  if (spec_.proj_dim > 0) {
    ops::embedding(K, tok_emb_, a.tokens, T, e_.data());
    ops::linear(pool, K, e_.data(), E, T, proj_in_, nullptr, x, H);
  } else {
    ops::embedding(K, tok_emb_, a.tokens, T, x);
  }
  if (spec_.emb_scale > 0) K.scale(x, spec_.emb_scale, T * H);
  if (spec_.pos == PosKind::Learned) {
    std::vector<int32_t> rows(T);
    for (int32_t t = 0; t < T; t++) rows[t] = a.pos_rows ? a.pos_rows[t] : tok_pos[t] + spec_.pos_offset;
    if (a.pos_rows) check_pos_rows(a.pos_rows, T, pos_emb_.shape[0]);
    ops::embedding(K, pos_emb_, rows.data(), T, tmp);
    K.add(x, tmp, T * H);
  }
  if (spec_.n_token_types > 0) {
    std::vector<int32_t> types(a.token_types ? a.token_types : nullptr, a.token_types ? a.token_types + T : nullptr);
    types.resize(T, 0);
    for (int32_t t = 0; t < T; t++)
      EF_CHECK(types[t] >= 0 && types[t] < spec_.n_token_types,
               "token_type_ids: " + std::to_string(types[t]) + " at position " + std::to_string(t) +
                   " is outside [0, " + std::to_string(spec_.n_token_types) + ")");
    ops::embedding(K, type_emb_, types.data(), T, tmp);
    K.add(x, tmp, T * H);
  }
  auto norm_rows = [&](const float* src, float* dst, const Tensor& w, const Tensor& b, int64_t rows) {
    ops::each_rows(pool, rows, H, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; t++) {
        if (spec_.norm == NormKind::RMS)
          K.rmsnorm(src + t * H, fptr(w), spec_.norm_eps, dst + t * H, H);
        else
          K.layernorm(src + t * H, fptr(w), fptr(b), spec_.norm_eps, dst + t * H, H);
      }
    });
  };
  if (spec_.emb_norm) norm_rows(x, x, emb_norm_w_, emb_norm_b_, T);
  if (spec_.ple_dim > 0) per_layer_inputs(a.tokens, T, x, K);

  const bool rotary_all = spec_.pos == PosKind::Rotary;
  if (rotary_all) compute_rope(tok_pos.data(), T, batch ? -1 : a.rope_length > 0 ? a.rope_length : (int64_t)pos0 + T);
  if (spec_.relative_bias()) compute_relative_bias(pos0, T, pos0 + T);
  auto mlp = [&](int l, const LayerWeights& w, const float* in, float* result) {
    float *g = g_.data(), *u = u_.data();
    if (spec_.moe(l) && spec_.moe_beside_mlp) {  // (Gemma 4: the dense MLP and the experts, each normalized)
      float *xe = moe_side_.data(), *xr = xe + (size_t)T * H, *ye = xr + (size_t)T * H;
      ops::mlp(pool, K, spec_.act, in, H, T, w.w_gate, w.w_up, w.w_down, nullptr, nullptr, nullptr, spec_.ffn(l), g,
               u, result);
      norm_rows(result, result, w.post_mlp_norm1_w, Tensor(), T);
      norm_rows(x, xe, w.moe_norm_w, Tensor(), T);  // (both from the residual stream itself)
      norm_rows(x, xr, w.router_in_scale, Tensor(), T);  // (no weight where the router has no input scale)
      if (spec_.moe_router_norm) K.scale(xr, (float)std::pow((double)H, -0.5), T * H);
      moe(l, xe, ye, T, K, spec_.moe_router_norm ? xr : nullptr);
      norm_rows(ye, ye, w.post_moe_norm_w, Tensor(), T);
      K.add(result, ye, T * H);
    } else if (spec_.moe(l)) {
      moe(l, in, result, T, K);
    } else {  // (w_gate holds data where gated_mlp)
      ops::mlp(pool, K, spec_.act, in, H, T, w.w_gate, w.w_up, w.w_down, fptr(w.b_gate), fptr(w.b_up),
               fptr(w.b_down), spec_.ffn(l), g, u, result, spec_.gate_sigma(l), fptr(w.mlp_sub_norm_w), spec_.norm_eps);
    }
  };
  // one token's queries q [n_heads * hd] and keys k [nkv * hd] (null: none, a layer sharing another's) normalized
  // in place (ArchSpec::qk_norm): all the heads at once (qk_norm_full), or each head with a weight shared by the
  // heads or with its own (qk_norm_per_head)
  auto qk_norms = [&](const LayerWeights& w, float* q, float* k, int64_t hd, int nkv) {
    auto norm = [&](float* v, const float* wt, int64_t n) {
      if (spec_.norm == NormKind::RMS) K.rmsnorm(v, wt, spec_.norm_eps, v, n);
      else K.layernorm(v, wt, nullptr, spec_.norm_eps, v, n);
    };
    if (spec_.qk_norm_full) {
      norm(q, fptr(w.q_norm_w), nh * hd);
      if (k) norm(k, fptr(w.k_norm_w), nkv * hd);
      return;
    }
    const int64_t step = spec_.qk_norm_per_head ? hd : 0;
    for (int hh = 0; hh < nh; hh++) norm(q + hh * hd, fptr(w.q_norm_w) + hh * step, hd);
    for (int hh = 0; k && hh < nkv; hh++) norm(k + hh * hd, fptr(w.k_norm_w) + hh * step, hd);
  };
  // self-attention of the normalized input `in` -> tmp [T, H]
  auto self_attention = [&](int l, const LayerWeights& w, const float* in) {
    if (spec_.linear(l)) return linear_attention(l, in, tmp, T, pos0, seqs);
    if (spec_.mla()) return mla_attention(l, in, tmp, T, pos.data(), cos_.data(), sin_.data(), a.key_mask, seqs);
    // this layer's head size and widths (ArchSpec::hd, kvh, vd)
    const int64_t hd = spec_.hd(l), vd = spec_.vd(l), QD = nh * hd;
    const int nkv = spec_.kvh(l);
    const int64_t KD = nkv * hd, KVD = nkv * vd, QVD = nh * vd;
    const bool own_kv = spec_.kv_source(l) < 0;  // (else the layer it shares keys and values with cached them)
    ops::LinearOut outs[4] = {{&w.wq, fptr(w.bq), q_.data(), QD}};
    int n_outs = 1;
    if (own_kv) outs[n_outs++] = {&w.wk, fptr(w.bk), k_.data(), KD};
    if (own_kv && w.wv.data) outs[n_outs++] = {&w.wv, fptr(w.bv), v_.data(), KVD};
    if (spec_.attn_out_gate) outs[n_outs++] = {&w.wgate, nullptr, gate_.data(), QD};
    ops::linear_group(pool, K, in, H, T, outs, n_outs);
    if (own_kv && !w.wv.data)  // (keys serving as values: the raw key rows, before their norm and rotary)
      for (int32_t t = 0; t < T; t++) std::memcpy(v_.data() + t * KVD, k_.data() + t * KD, KD * sizeof(float));
    const bool local = spec_.local_rope(l), rotary = rotary_all && !spec_.nope(l);
    const size_t half = (local ? inv_freq_local_ : inv_freq_).size();
    // per token: norms, rotary, the cache's rows (in f16: converted); independent, so spread over the threads
    pool->parallel_for(T, 8, [&](int, int64_t t0, int64_t t1) {
      for (int32_t t = (int32_t)t0; t < (int32_t)t1; t++) {
        const float* c = rotary ? (local ? cos_l_ : cos_).data() + t * half : nullptr;
        const float* s = rotary ? (local ? sin_l_ : sin_).data() + t * half : nullptr;
        float *qt = q_.data() + t * QD, *kt = own_kv ? k_.data() + t * KD : nullptr, *vt = v_.data() + t * KVD;
        if (spec_.clip_qkv > 0.f) {  // (OLMo 1: the projections clamped, before anything else)
          const auto clamp = [lim = spec_.clip_qkv](float* r, int64_t n) {
            for (int64_t i = 0; i < n; i++) r[i] = std::min(std::max(r[i], -lim), lim);
          };
          clamp(qt, QD);
          if (kt) clamp(kt, KD), clamp(vt, KVD);
        }
        if (spec_.qk_norm && !spec_.qk_norm_after_rope) qk_norms(w, qt, kt, hd, nkv);
        if (rotary) {
          for (int hh = 0; hh < nh; hh++) ops::rope(qt + hh * hd, c, s, half, spec_.rope.style);
          for (int hh = 0; kt && hh < nkv; hh++) ops::rope(kt + hh * hd, c, s, half, spec_.rope.style);
        }
        if (spec_.qk_norm && spec_.qk_norm_after_rope) qk_norms(w, qt, kt, hd, nkv);
        if (spec_.q_temp(l)) K.scale(qt, q_temperature(spec_, pos[t]), QD);
        if (!own_kv) continue;
        if (spec_.v_norm)
          for (int hh = 0; hh < nkv; hh++) K.rmsnorm(vt + hh * vd, nullptr, spec_.norm_eps, vt + hh * vd, vd);
        for (int hh = 0; hh < nkv; hh++) owner(t).store_kv(l, hh, pos[t], kt + hh * hd, vt + hh * vd);
      }
    });
    attention(l, q_.data(), att_.data(), T, pos0, a.key_mask, seqs);
    if (spec_.attn_out_gate) {  // (Qwen3-Next, Qwen3.5: each output times sigmoid of its gate)
      float* g = gate_.data();
      for (int64_t i = 0; i < T * QD; i++) g[i] = 1.f / (1.f + std::exp(-g[i]));
      K.mul(att_.data(), g, T * QD);
    }
    if (take_interrupt()) throw Interrupted();
    if (spec_.sub_norms)  // (BitNet: the attention's output normalized before o)
      for (int32_t t = 0; t < T; t++)
        K.rmsnorm(att_.data() + t * QVD, fptr(w.attn_sub_norm_w), spec_.norm_eps, att_.data() + t * QVD, QVD);
    ops::linear(pool, K, att_.data(), QVD, T, w.wo, fptr(w.bo), tmp, H);
    if (spec_.ssm_parallel) {  // (Falcon-H1: plus its Mamba2 mixer's output, on the same input)
      mamba2(l, in, h2, T, pos0, seqs);
      K.add(tmp, h2, T * H);
    }
  };

  // x += tmp (a branch's output), scaled by residual_scale where the architecture scales it (Granite)
  auto residual_add = [&]() {
    ops::each_rows(pool, T, H, [&](int64_t t0, int64_t t1) {
      if (spec_.residual_scale != 1.f) K.scale(tmp + t0 * H, spec_.residual_scale, (t1 - t0) * H);
      K.add(x + t0 * H, tmp + t0 * H, (t1 - t0) * H);
    });
  };
  // one layer's block, its residual adds included
  auto block = [&](int l, const LayerWeights& w) {
    if (spec_.norm_position == NormPosition::Post) {
      self_attention(l, w, x);
      residual_add();
      norm_rows(x, x, w.attn_norm_w, w.attn_norm_b, T);
      mlp(l, w, x, tmp);
      residual_add();
      norm_rows(x, x, w.mlp_norm_w, w.mlp_norm_b, T);
      return;
    }
    if (!spec_.mixer(l) || !spec_.has_mlp(l)) {  // (one branch: Mamba, Mamba2, Nemotron-H)
      if (spec_.mixer(l)) {
        norm_rows(x, h, w.attn_norm_w, w.attn_norm_b, T);
        self_attention(l, w, h);
      } else {
        norm_rows(x, h, w.mlp_norm_w, w.mlp_norm_b, T);
        mlp(l, w, h, tmp);
      }
      residual_add();
      return;
    }
    // (without pre-norms, OLMo 2, the branches read x itself: it changes only at the residual adds after them)
    const bool attn_normed = spec_.pre_norms && (l > 0 || spec_.first_attn_norm);
    if (attn_normed) norm_rows(x, h, w.attn_norm_w, w.attn_norm_b, T);
    if (spec_.parallel_residual && spec_.parallel_mlp_norm) norm_rows(x, h2, w.mlp_norm_w, w.mlp_norm_b, T);
    self_attention(l, w, attn_normed ? h : x);
    if (spec_.post_norms) norm_rows(tmp, tmp, w.post_attn_norm_w, Tensor(), T);
    if (spec_.parallel_residual) {  // x + attn(norm1(x)) + mlp(norm1(x) or norm2(x))
      residual_add();
      mlp(l, w, spec_.parallel_mlp_norm ? h2 : h, tmp);
      residual_add();
      return;
    }
    residual_add();
    if (spec_.laurel_rank > 0) {  // (Gemma 3n: x = (x + h + norm(laurel.r laurel.l h)) / sqrt(2), h its input)
      ops::linear(pool, K, h, H, T, w.laurel_l, nullptr, g_.data(), spec_.laurel_rank);
      ops::linear(pool, K, g_.data(), spec_.laurel_rank, T, w.laurel_r, nullptr, tmp, H);
      norm_rows(tmp, tmp, w.laurel_norm_w, Tensor(), T);
      const float root2 = std::sqrt(2.f);
      for (int64_t i = 0; i < T * H; i++) x[i] = (x[i] + (h[i] + tmp[i])) / root2;
    }
    if (spec_.cross_attention) {
      const int64_t QD = nh * spec_.head_dim;
      norm_rows(x, h, w.cross_norm_w, w.cross_norm_b, T);
      ops::linear(pool, K, h, H, T, w.cq, nullptr, q_.data(), QD);
      cross_attention(l, q_.data(), att_.data(), T);
      ops::linear(pool, K, att_.data(), QD, T, w.co, nullptr, tmp, H);
      residual_add();
    }
    if (spec_.pre_norms) norm_rows(x, h, w.mlp_norm_w, w.mlp_norm_b, T);
    mlp(l, w, spec_.pre_norms ? h : x, tmp);
    if (spec_.post_norms) norm_rows(tmp, tmp, w.post_mlp_norm_w, Tensor(), T);
    residual_add();
  };
  // the per-layer input branch of layer l: out = norm(ple.proj (act(ple.gate in) * this layer's input rows))
  auto ple_branch = [&](int l, const LayerWeights& w, const float* in, float* out) {
    const int64_t P = spec_.ple_dim, LP = (int64_t)spec_.n_layers * P;
    float* g = ple_.data() + (size_t)T * LP;
    ops::linear(pool, K, in, H, T, w.ple_gate, nullptr, g, P);
    K.act(spec_.act, g, T * P);
    for (int32_t t = 0; t < T; t++) K.mul(g + t * P, ple_.data() + t * LP + l * P, P);
    ops::linear(pool, K, g, P, T, w.ple_proj, nullptr, out, H);
    norm_rows(out, out, w.ple_norm_w, Tensor(), T);
  };
  const int NS = spec_.altup;
  if (NS > 0) altup_begin(x, T, K);
  // KV sharing (Gemma 3n, 4): from the first of the last layers that only read other layers' keys and values, a
  // prompt's rows but its last feed nothing that is kept; where only the last row's logits (or nothing) are asked
  // for, those layers run on the last row alone (or not at all)
  int narrow_at = spec_.n_layers;
  if (!batch && T > 1 && (a.output == Output::LastLogits || a.output == Output::None))
    while (narrow_at > 0 && spec_.kv_source(narrow_at - 1) >= 0) narrow_at--;
  if (narrow_at == 0) narrow_at = spec_.n_layers;  // (no layer keeps keys and values: nothing to narrow past)
  for (int l = 0; l < spec_.n_layers; l++) {
    if (take_interrupt()) throw Interrupted();  // n_past_ is unchanged: the model stays usable
    const LayerWeights& w = layers_[l];
    if (l == narrow_at) {
      if (a.output == Output::None) break;
      narrow_to_last_row(x, T);
      pos0 += T - 1;
      pos.assign(1, pos0);
      T = 1;
    }
    if (NS > 0) {  // (Gemma 3n: the layer on stream 0's prediction; its output corrects every stream)
      const size_t TH = (size_t)T * H;  // (one stream)
      altup_predict(w, T, K);
      std::memcpy(x, streams_.data() + NS * TH, TH * sizeof(float));
      block(l, w);
      altup_correct(w, x, T, K);
      if (spec_.ple_dim > 0) {  // (read from the corrected stream 0, added to the others)
        std::memcpy(h2, streams_.data(), TH * sizeof(float));
        if (spec_.altup_correct_scale)
          for (int32_t t = 0; t < T; t++) K.mul(h2 + (size_t)t * H, fptr(w.altup_out_scale), H);
        ple_branch(l, w, h2, tmp);
        for (int i = 1; i < NS; i++) K.add(streams_.data() + i * TH, tmp, T * H);
      }
      continue;
    }
    block(l, w);
    if (spec_.ple_dim > 0) {  // x += the per-layer input branch of x
      ple_branch(l, w, x, tmp);
      K.add(x, tmp, T * H);
    }
    if (spec_.layer_scale) K.scale(x, fptr(w.out_scale)[0], T * H);
  }
  if (NS > 0) altup_end(x, T, K);
  if (batch)
    for (int32_t t = 0; t < T; t++) seqs[t]->n_past_++;
  else
    n_past_ = past + T_all;
  if (a.output == Output::None) return;
  const int64_t first = a.output == Output::LastLogits ? T - 1 : 0, rows = T - first;
  float* fin = x + first * H;
  if (spec_.final_norm) {
    norm_rows(fin, h, final_norm_w_, final_norm_b_, rows);
    fin = h;
  }
  if (a.output == Output::Hidden) {
    std::memcpy(a.out, fin, rows * H * sizeof(float));
    return;
  }
  if (spec_.proj_dim > 0) {
    ops::linear(pool, K, fin, H, rows, proj_out_, nullptr, e_.data(), E);
    fin = e_.data();
  }
  if (spec_.logits_scale != 1.f) {
    if (fin != h) {
      std::memcpy(h, fin, rows * E * sizeof(float));
      fin = h;
    }
    K.scale(h, spec_.logits_scale, rows * E);
  }
  ops::linear(pool, K, fin, E, rows, lm_head_, fptr(lm_head_b_), a.out, V);
  if (spec_.logit_softcap > 0) {
    const float cap = spec_.logit_softcap;
    for (int64_t i = 0; i < rows * V; i++) a.out[i] = cap * std::tanh(a.out[i] / cap);
  }
}

}  // namespace ef
