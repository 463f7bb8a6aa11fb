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
  // prompts: compute-bound, one level, or bf16 activations where the ISA decodes block formats to bf16 (a batch of
  // decode steps keeps the decode precision)
  const bool prompt = T > 1 && !batch && !a.decode_precision && !opts_.exact_q8_prompts;
  if (prompt && kt.q8_0_panel_one_level) kt.qmatmul_panel[(int)DType::Q8_0] = kt.q8_0_panel_one_level;
  if (!prompt) kt.qbf16x_from = 0;
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
