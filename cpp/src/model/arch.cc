// ArchSpec::validate: every field in range, and only the combinations the generic block computes.
#include <cmath>
#include <string>

#include "edgeformer/arch.h"
#include "edgeformer/errors.h"

namespace ef {

// Gemma 4's per-layer shapes, KV sharing and per-layer inputs (arch.h)
void ArchSpec::per_layer_fields() const {
  const struct {
    const std::vector<int32_t>& v;
    const char* field;
  } lists[] = {{layer_head_dim, "head_dim"}, {layer_kv_heads, "num_key_value_heads"}, {layer_ffn, "intermediate_size"},
               {layer_kv_source, "num_kv_shared_layers"}};
  for (const auto& l : lists)
    EF_CHECK(l.v.empty() || (int64_t)l.v.size() == n_layers, "config field '" + std::string(l.field) +
                                                                 "': one value per layer (" +
                                                                 std::to_string(n_layers) + "), got " +
                                                                 std::to_string(l.v.size()));
  for (int i = 0; i < n_layers; i++) {
    const std::string at = " (layer " + std::to_string(i) + ")";
    EF_CHECK(hd(i) > 0 && (layer_head_dim.empty() || hd(i) % 2 == 0), "config field 'head_dim' must be positive"
                                                                      " and even" + at);
    EF_CHECK(kvh(i) > 0 && n_heads % kvh(i) == 0, "config field 'num_key_value_heads' must divide "
                                                  "num_attention_heads" + at);
    EF_CHECK(ffn(i) > 0, "config field 'intermediate_size' must be positive" + at);
    const int32_t s = kv_source(i);
    if (s < 0) continue;
    EF_CHECK(s < i && kv_source(s) < 0 && !linear(i) && !linear(s) && mixer(i) && mixer(s),
             "KV sharing: layer " + std::to_string(i) + " must read an earlier attention layer's own keys and values");
    EF_CHECK(hd(s) == hd(i) && kvh(s) == kvh(i) && window(s) == window(i) && local_rope(s) == local_rope(i) &&
                 nope(s) == nope(i),
             "KV sharing: layer " + std::to_string(i) + " and layer " + std::to_string(s) +
                 " differ in head size, key/value heads, window or rotary table");
  }
  if (per_layer_shapes() || !layer_kv_source.empty() || ple_dim != 0 || layer_scale || v_norm)
    EF_CHECK(causal() && v_head_dim == 0 && !mla() && !cross_attention && norm_position == NormPosition::Pre &&
                 !parallel_residual && pre_norms,
             "per-layer shapes, shared keys and values, value norms, layer scales and per-layer inputs are for "
             "sequential pre-norm decoders without latent or cross attention");
  EF_CHECK(ple_dim >= 0 && (ple_dim == 0 || ple_vocab > 0), "config fields 'hidden_size_per_layer_input' and "
                                                            "'vocab_size_per_layer_input' must be positive");
  EF_CHECK(altup >= 0 && altup != 1 && laurel_rank >= 0, "config fields 'altup_num_inputs' (0, or 2 and more) and "
                                                         "'laurel_rank' must be non-negative");
  EF_CHECK(laurel_rank == 0 || altup > 0, "LAuReL blocks are computed in AltUp models only");
  if (altup > 0)
    EF_CHECK(causal() && pre_norms && post_norms && norm == NormKind::RMS && norm_position == NormPosition::Pre &&
                 !parallel_residual && !cross_attention && n_experts == 0 && !mla() && layer_linear.empty() &&
                 layer_mlp.empty(),
             "AltUp is for sequential pre- and post-norm RMSNorm decoders without experts or recurrent layers");
  EF_CHECK(layer_gate_sigma.empty() || (int64_t)layer_gate_sigma.size() == n_layers,
           "config field 'activation_sparsity_pattern': one value per layer (" + std::to_string(n_layers) + ")");
  for (float v : layer_gate_sigma) EF_CHECK(std::isnan(v) || std::isfinite(v), "activation sparsity: a finite cutoff");
  EF_CHECK(layer_gate_sigma.empty() || (gated_mlp && n_experts == 0), "activation sparsity is for gated dense MLPs");
  EF_CHECK(!sub_norms || (norm == NormKind::RMS && n_experts == 0 && !mla() && layer_linear.empty() && gated_mlp),
           "sub-norms (BitNet) are for RMSNorm decoders with gated dense MLPs and plain attention");
}

void ArchSpec::validate() const {
  auto positive = [&](int64_t v, const char* field) {
    EF_CHECK(v > 0, "config field '" + std::string(field) + "' must be positive, got " + std::to_string(v));
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(n_layers, "num_hidden_layers");
  positive(n_heads, "num_attention_heads");
  positive(n_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(ffn_size, "intermediate_size");
  EF_CHECK(n_heads % n_kv_heads == 0, "config: num_attention_heads (" + std::to_string(n_heads) +
                                          ") must be a multiple of num_key_value_heads (" + std::to_string(n_kv_heads) + ")");
  EF_CHECK(norm_eps > 0 && std::isfinite(norm_eps), "config field 'rms_norm_eps' must be positive");
  EF_CHECK(sliding_window >= 0, "config field 'sliding_window' must be non-negative");
  EF_CHECK(layer_windows.empty() || (int64_t)layer_windows.size() == n_layers,
           "config field 'layer_types': one entry per layer (" + std::to_string(n_layers) + "), got " +
               std::to_string(layer_windows.size()));
  for (int32_t w : layer_windows) EF_CHECK(w >= 0, "config field 'sliding_window' must be non-negative");
  EF_CHECK(layer_rope.empty() || (int64_t)layer_rope.size() == n_layers,
           "config field 'layer_types': one entry per layer (" + std::to_string(n_layers) + ")");
  if (!layer_rope.empty()) {
    EF_CHECK(pos == PosKind::Rotary, "a local rotary table needs rotary positions");
    EF_CHECK(!rope_local.length_dependent(), "config field 'rope_local_base_freq': the local rotary table takes no "
                                             "length-dependent scaling");
    EF_CHECK((rope_local.rotary_dim == rope.rotary_dim || !layer_head_dim.empty()) && rope_local.style == rope.style,
             "the local rotary table must rotate the dimensions the global one does");
    EF_CHECK(rope_local.theta > 0, "the sliding layers' rope_theta must be positive, got " +
                                       std::to_string(rope_local.theta));
  }
  EF_CHECK(std::isfinite(emb_scale) && emb_scale >= 0, "embedding scale must be finite and non-negative");
  EF_CHECK(std::isfinite(residual_scale) && residual_scale > 0, "config field 'residual_multiplier' must be positive");
  EF_CHECK(std::isfinite(swiglu_limit) && swiglu_limit >= 0 && std::isfinite(swiglu_alpha),
           "config fields 'swiglu_limit' / 'swiglu_alpha' must be finite, the limit non-negative");
  EF_CHECK(!(expert_bias || swiglu_limit > 0) || n_experts > 0, "expert biases and the clamped gate need experts");
  EF_CHECK(std::isfinite(clip_qkv) && clip_qkv >= 0.f, "clip_qkv must be a finite number >= 0 (0: none)");
  EF_CHECK(!(qk_norm_full || qk_norm_per_head || qk_norm_after_rope) || qk_norm,
           "qk_norm_full, qk_norm_per_head and qk_norm_after_rope are forms of qk_norm");
  EF_CHECK(!(qk_norm_full && qk_norm_per_head), "qk_norm_full and qk_norm_per_head exclude each other");
  EF_CHECK(v_head_dim >= 0 && (v_head_dim == 0 || !cross_attention), "v_head_dim: a positive size, without "
                                                                     "cross-attention");
  if (mla()) {
    EF_CHECK(mla_q_lora >= 0 && mla_nope > 0 && mla_v > 0, "config fields 'q_lora_rank', 'qk_nope_head_dim' and "
                                                           "'v_head_dim' must be positive");
    EF_CHECK(pos == PosKind::Rotary && rope.rotary_dim > 0 && n_kv_heads == 1 &&
                 head_dim == mla_kv_lora + rope.rotary_dim && vdim() == mla_kv_lora,
             "latent attention: one kv head of kv_lora_rank + qk_rope_head_dim, values kv_lora_rank wide");
    EF_CHECK(!qk_norm && !attn_bias && !attn_out_bias && !attn_sinks && layer_nope.empty() && layer_rope.empty(),
             "latent attention has no q/k norms, biases, sinks or layers without rotary");
  }
  EF_CHECK(layer_nope.empty() || ((int64_t)layer_nope.size() == n_layers && pos == PosKind::Rotary),
           "config field 'no_rope_layers': one entry per layer (" + std::to_string(n_layers) + ") of a rotary model");
  EF_CHECK(pre_norms || (norm_position == NormPosition::Pre && !parallel_residual && !cross_attention),
           "a block without pre-norms is sequential (post_norms)");
  EF_CHECK(std::isfinite(attn_softcap) && attn_softcap >= 0,
           "config field 'attn_logit_softcapping' must be a non-negative number");
  EF_CHECK(std::isfinite(logit_softcap) && logit_softcap >= 0,
           "config field 'final_logit_softcapping' must be a non-negative number");
  if (n_experts != 0) {
    EF_CHECK(n_experts > 0, "config field 'num_experts' must be positive");
    EF_CHECK(n_experts_used >= 1 && n_experts_used <= n_experts,
             "config field 'num_experts_per_tok' must be in [1, num_experts = " + std::to_string(n_experts) + "], got " +
                 std::to_string(n_experts_used));
    positive(moe_ffn_size, "moe_intermediate_size");
    EF_CHECK(shared_ffn_size >= 0, "config field 'shared_expert_intermediate_size' must be non-negative");
    EF_CHECK(!parallel_residual && norm_position == NormPosition::Pre && !cross_attention,
             "experts are MLPs of a sequential pre-norm decoder");
    EF_CHECK(gated_mlp || (swiglu_limit == 0.f && !shared_expert_gate), "plain (ungated) experts have no clamped "
                                                                        "gate and no shared-expert gate");
    EF_CHECK(std::isfinite(moe_routed_scale) && moe_routed_scale > 0,
             "config field 'routed_scaling_factor' must be a positive number");
    if (moe_groups > 1) {
      const int32_t per = n_experts / moe_groups;
      EF_CHECK(n_experts % moe_groups == 0, "config field 'n_group' (" + std::to_string(moe_groups) +
                                                 ") must divide the expert count (" + std::to_string(n_experts) + ")");
      EF_CHECK(moe_groups_used >= 1 && moe_groups_used <= moe_groups,
               "config field 'topk_group' must be in [1, n_group = " + std::to_string(moe_groups) + "], got " +
                   std::to_string(moe_groups_used));
      EF_CHECK(n_experts_used <= moe_groups_used * per,
               "config field 'num_experts_per_tok' exceeds the experts of the topk_group groups");
      EF_CHECK(moe_group_top >= 1 && moe_group_top <= per, "a group's score sums 1 to its expert count of its best");
    }
    EF_CHECK(!moe_beside_mlp || (post_norms && pre_norms && gated_mlp && shared_ffn_size == 0 &&
                                 norm == NormKind::RMS && !mlp_bias && !expert_bias),
             "experts beside a dense MLP (Gemma 4) are for RMSNorm decoders with post-norms, gated and unbiased");
    EF_CHECK(layer_moe.empty() || (int64_t)layer_moe.size() == n_layers,
             "config: one sparse / dense flag per layer (" + std::to_string(n_layers) + "), got " +
                 std::to_string(layer_moe.size()));
  }
  auto mamba2_fields = [&]() {
    positive(ssm_heads, "mamba_n_heads");
    positive(ssm_head_dim, "mamba_d_head");
    positive(ssm_state, "mamba_d_state");
    positive(ssm_groups, "mamba_n_groups");
    EF_CHECK(ssm_heads % ssm_groups == 0, "config field 'mamba_n_heads' must be a multiple of mamba_n_groups");
    EF_CHECK(std::isfinite(ssm_dt_min) && std::isfinite(ssm_dt_max) && ssm_dt_min >= 0.f &&
                 (ssm_dt_max == 0.f || ssm_dt_max >= ssm_dt_min),
             "config field 'time_step_limit' must be two limits, 0 <= min <= max");
    EF_CHECK(ssm_norm >= 0 && ssm_norm <= 2, "config: the Mamba2 output norm is none, after or before the gate");
  };
  if (ssm_parallel) {  // (Falcon-H1)
    mamba2_fields();
    positive(lin_conv, "mamba_d_conv");
    EF_CHECK(layer_linear.empty() && layer_mlp.empty() && causal() && pre_norms && !post_norms &&
                 norm_position == NormPosition::Pre && !parallel_residual && !cross_attention && mla_kv_lora == 0 &&
                 norm == NormKind::RMS,
             "a Mamba2 mixer beside every attention layer is for sequential pre-norm RMSNorm decoders");
  }
  if (!layer_linear.empty()) {
    EF_CHECK((int64_t)layer_linear.size() == n_layers, "config: one linear / full attention flag per layer (" +
                                                           std::to_string(n_layers) + "), got " +
                                                           std::to_string(layer_linear.size()));
    bool mamba = false, mamba1 = false;
    for (int32_t v : layer_linear) {
      EF_CHECK(v >= 0 && v <= 5, "config: a layer's kind must be attention, Gated DeltaNet, short convolution, "
                                 "Mamba2, none or Mamba");
      mamba = mamba || v == 3;
      mamba1 = mamba1 || v == 5;
    }
    if (mamba1) {
      positive(ssm_dt_rank, "time_step_rank");
      positive(ssm_state, "state_size");
      positive(ssm_inner(), "intermediate_size");
      EF_CHECK(std::isfinite(ssm_bcdt_eps) && ssm_bcdt_eps >= 0.f, "config field 'mixer_rms_eps' must be "
                                                                   "non-negative");
      EF_CHECK(!ssm_bcdt_weights || ssm_bcdt_eps > 0.f, "the time step's, B's and C's norm weights need the norms");
    }
    if (mamba) mamba2_fields();
    if (recurrent()) {
      positive(lin_conv, "linear_conv_kernel_dim");
      EF_CHECK(causal() && !cross_attention && mla_kv_lora == 0 && norm == NormKind::RMS,
               "recurrent layers are for RMSNorm decoders without latent or cross attention");
    }
    if (delta_net()) {
      positive(lin_k_heads, "linear_num_key_heads");
      positive(lin_v_heads, "linear_num_value_heads");
      positive(lin_k_dim, "linear_key_head_dim");
      positive(lin_v_dim, "linear_value_head_dim");
      EF_CHECK(lin_v_heads % lin_k_heads == 0, "config field 'linear_num_value_heads' must be a multiple of "
                                               "linear_num_key_heads");
    }
  }
  if (!layer_mlp.empty())
    EF_CHECK((int64_t)layer_mlp.size() == n_layers, "config: one MLP flag per layer (" + std::to_string(n_layers) +
                                                        "), got " + std::to_string(layer_mlp.size()));
  if (partial_layers()) {
    for (int i = 0; i < n_layers; i++)
      EF_CHECK(mixer(i) || has_mlp(i), "config: layer " + std::to_string(i) + " has neither a token mixer nor an MLP");
    EF_CHECK(causal() && pre_norms && !post_norms && norm_position == NormPosition::Pre && !parallel_residual &&
                 !cross_attention,
             "layers without a token mixer or an MLP are for sequential pre-norm decoders");
  }
  if (q_temp_beta != 0.f) {
    EF_CHECK(std::isfinite(q_temp_beta), "config field 'llama_4_scaling_beta' must be a number");
    EF_CHECK(q_temp_length > 0 && q_temp_offset >= 0,
             "config: the query scaling's length (original_max_position_embeddings) must be positive");
    EF_CHECK(causal() && mla_kv_lora == 0, "query scaling by position is for decoders without latent attention");
  }
  EF_CHECK(pos_offset >= 0 && n_token_types >= 0 && proj_dim >= 0, "config: negative offset, type count or projection");
  EF_CHECK(kind != ModelKind::EncoderDecoder, "an encoder-decoder is two stacks: build an encoder and a decoder spec");
  per_layer_fields();
  switch (pos) {
    case PosKind::Rotary: {
      const int rd = rope.rotary_dim > 0 ? rope.rotary_dim : head_dim;
      for (int i = 0; i < n_layers; i++) {  // (each layer's table, local or global, within its heads)
        const RopeSpec& t = local_rope(i) ? rope_local : rope;
        const int d = t.rotary_dim > 0 ? t.rotary_dim : head_dim;
        EF_CHECK(d % 2 == 0 && d <= hd(i), "config: rotary dimension " + std::to_string(d) +
                                               " must be even and at most the head size " + std::to_string(hd(i)) +
                                               " (layer " + std::to_string(i) + ")");
      }
      for (const RopeSpec* t : {&rope, &rope_local}) {
        if (t->freq_factors.empty()) continue;
        const int d = t->rotary_dim > 0 ? t->rotary_dim : head_dim;
        EF_CHECK((int)t->freq_factors.size() == d / 2, "rope_freqs: " + std::to_string(d / 2) +
                                                            " factors (rotary_dim / 2), got " +
                                                            std::to_string(t->freq_factors.size()));
        for (float f : t->freq_factors) EF_CHECK(f > 0, "rope_freqs: the factors must be positive");
      }
      EF_CHECK(rope.theta > 0, "config field 'rope_theta' must be positive");
      if (rope.scaling != RopeScaling::None)
        EF_CHECK(rope.factor > 0 && std::isfinite(rope.factor), "config field 'rope_scaling.factor' must be positive");
      if (rope.scaling == RopeScaling::Llama3 || rope.scaling == RopeScaling::Yarn)
        EF_CHECK(rope.original_max_position > 0,
                 "config field 'rope_scaling.original_max_position_embeddings' must be positive");
      if (rope.scaling == RopeScaling::Dynamic) positive(max_position, "max_position_embeddings");
      if (rope.scaling == RopeScaling::LongRope) {
        EF_CHECK(rope.original_max_position > 0,
                 "config field 'rope_scaling.original_max_position_embeddings' must be positive");
        EF_CHECK((int)rope.short_factor.size() == rd / 2 && (int)rope.long_factor.size() == rd / 2,
                 "config fields 'rope_scaling.short_factor' and 'long_factor' must hold rotary_dim / 2 = " +
                     std::to_string(rd / 2) + " numbers each");
        for (const auto* v : {&rope.short_factor, &rope.long_factor})
          for (float f : *v) EF_CHECK(f > 0 && std::isfinite(f), "config field 'rope_scaling.short_factor' / 'long_factor': factors must be positive");
        EF_CHECK(rope.attention_factor > 0 && std::isfinite(rope.attention_factor),
                 "config field 'rope_scaling.attention_factor' must be positive");
      }
      break;
    }
    case PosKind::Learned:
      positive(max_position, "max_position_embeddings");
      break;
    case PosKind::ALiBi:
      EF_CHECK((int)alibi_slopes.size() == n_heads, "ALiBi needs one slope per head");
      break;
    case PosKind::Relative:
    case PosKind::None:
      break;
  }
  if (relative_bias()) {
    EF_CHECK(rel_buckets >= 2, "config field 'relative_attention_num_buckets' must be at least 2, got " +
                                   std::to_string(rel_buckets));
    positive(rel_max_distance, "relative_attention_max_distance");
  }
}

}  // namespace ef
