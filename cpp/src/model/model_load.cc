// The model's load: the checkpoint's tensors by canonical name (python/edgeformer/archs.py) through the loader
// (model/loader.h: shapes checked, converted or quantized as ModelOptions asks, packed into the kernels' panels),
// the KV cache's layout and type, forks sharing the weights; and the weights back by name (weights()). The
// forward is model.cc's.
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
  // auto: f32 beside f32 matrices (the reference precision); bf16 beside bf16 and block-quantized matrices where
  // the tile unit multiplies their prompts in bf16 (amx: attention products on tiles too, as PyTorch's bf16
  // keeps its cache; a 1.1B bf16 prompt of 512 tokens 1.08x, of 2048 1.37x; q4_k 2048 tokens 1.41x); f16 beside
  // every other type, as llama.cpp
  const LayerWeights* first = nullptr;  // (the first layer with attention: recurrent layers have no wq)
  for (int i = 0; i < spec_.n_layers && !first; i++)
    if (!spec_.linear(i)) first = &layers_[i];
  const DType wq_type = first ? first->wq.dtype : DType::F32;
  const bool bf16_prompts = wq_type == DType::BF16 || (kernels().qmatmul_panel_bf16x[(int)wq_type] && first &&
                                                                         !first->wq.row_scaled);
  const DType auto_kv = wq_type == DType::F32                              ? DType::F32
                        : bf16_prompts && active_isa() == Isa::AMX ? DType::BF16
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

}  // namespace ef
