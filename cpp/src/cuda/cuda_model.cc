// The generic transformer on one CUDA device: the same stack as cpp/src/model/model.cc (read that file's
// header for the block structure), each step a kernel of kernels.h on the model's stream. The weights come
// from a loaded host Model (its loader applied the checkpoint's names, shapes and the dtype policy), are
// uploaded once and may be shared by forks; each model has its own KV cache and activation buffers.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "edgeformer/cpu.h"
#include "edgeformer/cuda.h"
#include "edgeformer/rope.h"
#include "model/batch_checks.h"
#include "model_state.h"

namespace ef {
namespace cuda {

namespace {

// Per-forward inputs the CPU model also computes on the host: token checks, rotary tables for dynamic
// scaling, the relative-bias table.
void check_ids(const int32_t* ids, int32_t T, int64_t rows) {
  for (int32_t t = 0; t < T; t++)
    if (ids[t] < 0 || ids[t] >= rows)
      throw ValueError("token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                       " is outside the vocabulary [0, " + std::to_string(rows) + ")");
}

}  // namespace

CudaModel::~CudaModel() = default;

std::unique_ptr<CudaModel> CudaModel::fork() const {
  DeviceGuard guard(s_->device);
  std::unique_ptr<CudaModel> m(new CudaModel());
  m->s_->init_stream_and_cache(s_->w, s_->kv_f16);
  return m;
}

const ArchSpec& CudaModel::spec() const { return s_->w->spec; }
int32_t CudaModel::max_context() const { return s_->w->max_ctx; }
int32_t CudaModel::n_past() const { return s_->n_past; }
int32_t CudaModel::device() const { return s_->device; }
int32_t CudaModel::host_threads() const { return s_->w->host_threads; }
std::string CudaModel::kv_dtype() const { return s_->kv_f16 ? "f16" : "f32"; }
int64_t CudaModel::weight_bytes() const { return s_->w->weight_bytes; }
CudaGraphStats CudaModel::graph_stats() const {
  return {s_->graphs_on, (int64_t)s_->graphs.size(), s_->graph_captures, s_->graph_launches};
}
void CudaModel::set_graphs(bool on) {
  DeviceGuard guard(s_->device);
  if (!on) s_->drop_graphs();
  s_->graphs_on = on;
}
std::mutex& CudaModel::mutex() { return s_->mu; }
void CudaModel::reset() { s_->n_past = 0; }

void CudaModel::truncate(int32_t n) {
  EF_CHECK(n >= 0 && n <= s_->n_past, "truncate: " + std::to_string(n) + " is outside [0, " + std::to_string(s_->n_past) + "]");
  s_->n_past = n;
}

void CudaModel::copy_cache_from(const CudaModel& other, int32_t n) {
  State &S = *s_, &O = *other.s_;
  const ArchSpec &a = S.w->spec, &b = O.w->spec;
  EF_CHECK(S.w->max_ctx == O.w->max_ctx && a.n_layers == b.n_layers && a.n_kv_heads == b.n_kv_heads &&
               a.head_dim == b.head_dim && S.kv_f16 == O.kv_f16 && S.device == O.device,
           "copy_cache_from: the models differ in shape, KV type or device");
  EF_CHECK(n >= 0 && n <= O.n_past, "copy_cache_from: n is outside the other model's cache");
  DeviceGuard guard(S.device);
  const size_t pitch = (size_t)S.w->max_ctx * a.head_dim * S.kv_elem(), width = (size_t)n * a.head_dim * S.kv_elem();
  const size_t rows = (size_t)a.n_layers * a.n_kv_heads;
  if (width > 0) {
    EF_CUDA_CHECK(cudaMemcpy2DAsync(S.kc.get(), pitch, O.kc.get(), pitch, width, rows, cudaMemcpyDeviceToDevice, S.stream));
    EF_CUDA_CHECK(cudaMemcpy2DAsync(S.vc.get(), pitch, O.vc.get(), pitch, width, rows, cudaMemcpyDeviceToDevice, S.stream));
  }
  EF_CUDA_CHECK(cudaStreamSynchronize(S.stream));
  S.n_past = n;
}

void CudaModel::set_encoder_output(const float* enc, int32_t T_enc, const uint8_t* mask) {
  State& S = *s_;
  const DeviceWeights& W = *S.w;
  const ArchSpec& sp = W.spec;
  EF_CHECK(sp.cross_attention, "set_encoder_output: this model has no cross-attention");
  EF_CHECK(T_enc > 0, "set_encoder_output: empty encoder output");
  DeviceGuard guard(S.device);
  const int64_t H = sp.hidden_size, QD = (int64_t)sp.n_heads * sp.head_dim;
  DevBuffer encd((size_t)T_enc * H * 4);
  upload(encd.get(), enc, (size_t)T_enc * H * 4, S.stream);
  S.cross_k = DevBuffer((size_t)sp.n_layers * T_enc * QD * 4);
  S.cross_v = DevBuffer((size_t)sp.n_layers * T_enc * QD * 4);
  for (int l = 0; l < sp.n_layers; l++) {
    const DevLayer& L = W.layers[l];
    float* kc = S.cross_k.as<float>() + (size_t)l * T_enc * QD;
    float* vc = S.cross_v.as<float>() + (size_t)l * T_enc * QD;
    linear(L.ck, fp(encd), H, T_enc, nullptr, kc, QD, false, S.ws_linear, S.stream);
    linear(L.cv, fp(encd), H, T_enc, nullptr, vc, QD, false, S.ws_linear, S.stream);
  }
  S.enc_has_mask = mask != nullptr;
  if (mask) {
    S.enc_mask = DevBuffer((size_t)T_enc);
    upload(S.enc_mask.get(), mask, (size_t)T_enc, S.stream);
  }
  EF_CUDA_CHECK(cudaStreamSynchronize(S.stream));  // encd is freed on return
  S.enc_T = T_enc;
}

namespace {

void norm_rows(const DeviceWeights& W, const float* src, float* dst, const float* w, const float* b, int64_t rows,
               cudaStream_t s) {
  const ArchSpec& sp = W.spec;
  if (sp.norm == NormKind::RMS) rmsnorm(src, w, sp.norm_eps, dst, rows, sp.hidden_size, s);
  else layernorm(src, w, b, sp.norm_eps, dst, rows, sp.hidden_size, s);
}

void run_parts(const std::vector<Part>& parts, const float* bias, const float* in, int64_t ldin, int64_t T, float* out,
               int64_t ldout, Scratch& ws, cudaStream_t s) {
  for (const Part& p : parts)
    linear(p.W, in, ldin, T, bias ? bias + p.col0 : nullptr, out + p.col0, ldout, false, ws, s);
}

}  // namespace

const float* CudaModel::State::run(const ForwardArgs& a, int32_t& out_rows, int32_t dyn_cap, State* const* seqs) {
  State& S = *this;
  const DeviceWeights& W = *S.w;
  const ArchSpec& sp = W.spec;
  const int32_t T = a.T;
  cudaStream_t st = S.stream;
  const int64_t H = sp.hidden_size, F = sp.ffn_size, hd = sp.head_dim, V = sp.vocab_size;
  const int nh = sp.n_heads, nkv = sp.n_kv_heads;
  const int64_t QD = (int64_t)nh * hd, KD = (int64_t)nkv * hd, QKV = QD + 2 * KD;
  const int64_t E = sp.proj_dim > 0 ? sp.proj_dim : H;
  const int32_t pos0 = S.n_past;
  const bool batch = seqs != nullptr;
  std::vector<int32_t> pos(T);  // each row's position (in a batch: its own sequence's)
  for (int32_t t = 0; t < T; t++) pos[t] = batch ? seqs[t]->n_past : pos0 + t;
  S.ensure(T);
  float *x = S.x.as<float>(), *h = S.h.as<float>(), *h2 = S.h2.as<float>(), *e = S.e.as<float>();
  float *qkv = S.qkv.as<float>(), *att = S.att.as<float>(), *gu = S.gu.as<float>();

  const bool dyn = dyn_cap > 0;  // graph_step checked the ids and uploaded them with the position
  const int32_t* dyn_pos = dyn ? S.params.as<int32_t>() + 1 : nullptr;
  const int32_t* ids = dyn ? S.params.as<int32_t>() : S.ids.as<int32_t>();

  // embeddings
  if (!dyn) {
    check_ids(a.tokens, T, W.tok_emb.rows);
    upload(S.ids.get(), a.tokens, (size_t)T * 4, st);
  }
  if (sp.proj_dim > 0) {
    embedding(W.tok_emb, ids, T, e, E, false, st);
    linear(W.proj_in, e, E, T, nullptr, x, H, false, S.ws_linear, st);
  } else {
    embedding(W.tok_emb, ids, T, x, H, false, st);
  }
  if (sp.emb_scale > 0) scale(x, sp.emb_scale, (int64_t)T * H, st);
  // (a pageable host-to-device copy has read its source when cudaMemcpyAsync returns: these vectors may go)
  if (sp.pos == PosKind::Learned && dyn) {
    embedding(W.pos_emb, S.params.as<int32_t>() + 2, T, x, H, true, st);
  } else if (sp.pos == PosKind::Learned) {
    std::vector<int32_t> rows(T);
    for (int32_t t = 0; t < T; t++) rows[t] = a.pos_rows ? a.pos_rows[t] : pos[t] + sp.pos_offset;
    if (a.pos_rows) check_pos_rows(a.pos_rows, T, W.pos_emb.rows);
    check_ids(rows.data(), T, W.pos_emb.rows);
    upload(S.aux.get(), rows.data(), (size_t)T * 4, st);
    embedding(W.pos_emb, S.aux.as<int32_t>(), T, x, H, true, st);
  }
  if (sp.n_token_types > 0) {
    std::vector<int32_t> types(T);
    for (int32_t t = 0; t < T; t++) {
      types[t] = a.token_types ? a.token_types[t] : 0;
      EF_CHECK(types[t] >= 0 && types[t] < sp.n_token_types,
               "token_type_ids: " + std::to_string(types[t]) + " at position " + std::to_string(t) + " is outside [0, " +
                   std::to_string(sp.n_token_types) + ")");
    }
    upload(S.types.get(), types.data(), (size_t)T * 4, st);
    embedding(W.type_emb, S.types.as<int32_t>(), T, x, H, true, st);
  }
  if (sp.emb_norm) norm_rows(W, x, x, W.emb_norm_w, W.emb_norm_b, T, st);

  // rotary tables: every position at load, or this call's positions (dynamic scaling depends on the length: the
  // call's, or in a batch each sequence's own); row t's table row is tab_row(t)
  const float *cosp = nullptr, *sinp = nullptr;
  int32_t half = 0;
  bool per_call_table = false;
  std::vector<float> dyn_cos, dyn_sin;
  if (sp.pos == PosKind::Rotary) {
    if (sp.rope.length_dependent()) {
      per_call_table = true;
      std::vector<float> inv;
      float msc = 1.f;
      rope_inv_freq(sp, batch ? (int64_t)pos[0] + 1 : a.rope_length > 0 ? a.rope_length : (int64_t)pos0 + T, inv, msc);
      half = (int32_t)inv.size();
      dyn_cos.resize((size_t)T * half);
      dyn_sin.resize((size_t)T * half);
      for (int32_t t = 0; t < T; t++) {
        if (batch && t > 0) rope_inv_freq(sp, (int64_t)pos[t] + 1, inv, msc);
        const float p = (float)pos[t];
        for (int32_t i = 0; i < half; i++) {
          const float f = p * inv[i];
          dyn_cos[(size_t)t * half + i] = std::cos(f) * msc;
          dyn_sin[(size_t)t * half + i] = std::sin(f) * msc;
        }
      }
      if (S.rope_cos.size() < dyn_cos.size() * 4) {
        S.rope_cos = DevBuffer(dyn_cos.size() * 4);
        S.rope_sin = DevBuffer(dyn_sin.size() * 4);
      }
      upload(S.rope_cos.get(), dyn_cos.data(), dyn_cos.size() * 4, st);
      upload(S.rope_sin.get(), dyn_sin.data(), dyn_sin.size() * 4, st);
      cosp = fp(S.rope_cos), sinp = fp(S.rope_sin);
    } else {
      cosp = W.rope_cos, sinp = W.rope_sin, half = W.rope_half;
    }
  }
  const auto tab_row = [&](int32_t t) { return per_call_table ? t : pos[t]; };
  // relative position bias: rel[h][r - rel_lo] for r = key - query in use (as Model::compute_relative_bias)
  const float* rel = nullptr;
  int32_t rel_width = 0, rel_lo = 0;
  std::vector<float> rel_table;
  if (sp.pos == PosKind::Relative) {
    rel_lo = -(pos0 + T - 1);
    const int32_t hi = T - 1;  // n_keys - 1 - pos0 with n_keys = pos0 + T
    rel_width = hi - rel_lo + 1;
    rel_table.resize((size_t)nh * rel_width);
    for (int32_t r = rel_lo; r <= hi; r++) {
      const int32_t b = relative_bucket(r, !sp.causal(), sp.rel_buckets, sp.rel_max_distance);
      for (int hh = 0; hh < nh; hh++) rel_table[(size_t)hh * rel_width + (r - rel_lo)] = W.rel_bias[(size_t)b * nh + hh];
    }
    if (S.rel.size() < rel_table.size() * 4) S.rel = DevBuffer(rel_table.size() * 4);
    upload(S.rel.get(), rel_table.data(), rel_table.size() * 4, st);
    rel = fp(S.rel);
  }
  if (sp.q_temp_beta != 0.f) {  // each row's query factor (Ministral 3), for the layers that scale them
    std::vector<float> f(T);
    for (int32_t t = 0; t < T; t++) f[t] = q_temperature(sp, pos[t]);
    upload(S.qtemp.get(), f.data(), (size_t)T * 4, st);
  }
  const uint8_t* key_mask = nullptr;
  if (a.key_mask) {
    upload(S.kmask.get(), a.key_mask, (size_t)T, st);
    key_mask = S.kmask.as<uint8_t>();
  }
  const float attn_scale = sp.attn_scale > 0 ? sp.attn_scale : 1.f / std::sqrt((float)hd);
  const size_t layer_elems = S.layer_cache_elems();

  // result += ffn(in) over n rows for an MLP of width f, or with acc false result = ffn(in)
  auto ffn = [&](const DevMlp& m, int64_t f, const float* in, int64_t n, float* result, bool acc) {
    if (sp.gated_mlp) {
      run_parts(m.gate_up, m.b_gate_up, in, H, n, gu, 2 * f, S.ws_linear, st);
      act_mul(sp.act, gu, 2 * f, gu + f, 2 * f, n, f, st);
      linear(m.down, gu, 2 * f, n, m.b_down, result, H, acc, S.ws_linear, st);
    } else {
      run_parts(m.gate_up, m.b_gate_up, in, H, n, gu, f, S.ws_linear, st);
      act(sp.act, gu, n, f, f, st);
      linear(m.down, gu, f, n, m.b_down, result, H, acc, S.ws_linear, st);
    }
  };
  // the experts' sum of a mixture-of-experts layer (moe.cc's, its routing on the host): each expert once over the
  // rows that chose it, gathered, its outputs added to theirs times their weights, experts in index order; then
  // the shared expert (behind its gate where it has one)
  auto experts = [&](const DevLayer& L, const float* in, float* result, bool acc) {
    const int NE = sp.n_experts;
    float* lg = S.moe_logits.as<float>();
    linear_f32(in, L.router, L.router_b, T, H, NE, lg, st);
    std::vector<float> host_lg((size_t)T * NE);
    EF_CUDA_CHECK(cudaMemcpyAsync(host_lg.data(), lg, host_lg.size() * 4, cudaMemcpyDeviceToHost, st));
    EF_CUDA_CHECK(cudaStreamSynchronize(st));
    MoeRows rows;
    moe_route(sp, kernels(), host_lg.data(), T, L.select_b.empty() ? nullptr : L.select_b.data(),
              L.expert_scale.empty() ? nullptr : L.expert_scale.data(), rows);
    std::vector<int32_t> idx;  // every expert's rows, then their weights, in one upload each
    std::vector<float> wt;
    for (const auto& r : rows)
      for (const auto& rw : r) idx.push_back(rw.first), wt.push_back(rw.second);
    upload(S.moe_idx.get(), idx.data(), idx.size() * 4, st);
    upload(S.moe_w.get(), wt.data(), wt.size() * 4, st);
    if (!acc) EF_CUDA_CHECK(cudaMemsetAsync(result, 0, (size_t)T * H * 4, st));
    float *xin = S.moe_x.as<float>(), *y = S.moe_y.as<float>();
    int64_t off = 0;
    for (int e = 0; e < NE; e++) {
      const int64_t n = (int64_t)rows[e].size();
      if (n == 0) continue;
      const int32_t* ix = S.moe_idx.as<int32_t>() + off;
      gather_rows(in, H, ix, n, H, xin, st);
      ffn(L.experts[e], sp.moe_ffn_size, xin, n, y, false);
      scatter_add_rows(result, H, ix, S.moe_w.as<float>() + off, y, n, H, st);
      off += n;
    }
    if (sp.shared_ffn_size == 0) return;
    ffn(L.shared, sp.shared_ffn_size, in, T, y, false);
    if (L.shared_scale) sigmoid_gate_add(result, y, in, L.shared_scale, T, H, st);
    else add(result, y, (int64_t)T * H, st);
  };
  // result += mlp(in), or with acc false result = mlp(in)
  auto mlp = [&](const DevLayer& L, const float* in, float* result, bool acc = true) {
    if (L.moe) return experts(L, in, result, acc);
    ffn(L.mlp, F, in, T, result, acc);
  };
  // rotary on rows t0 .. t0 + n - 1 of q and k, their k and v appended to cache kc / vc (this layer's) at
  // positions p0 .., and their attention over that cache
  auto attend = [&](int32_t t0, int32_t n, int32_t p0, char* kc, char* vc, int32_t window, bool local, bool rotary,
                    bool q_temp) {
    RopeStoreArgs r;
    r.q = qkv + t0 * QKV, r.ldq = QKV;
    r.k = qkv + t0 * QKV + QD, r.v = qkv + t0 * QKV + QD + KD, r.ldk = QKV, r.ldv = QKV;
    r.kc = kc, r.vc = vc, r.kv_f16 = S.kv_f16;
    r.head_stride = (int64_t)W.max_ctx * hd, r.pos_stride = hd;
    r.T = n, r.n_heads = nh, r.n_kv = nkv, r.head_dim = (int32_t)hd, r.pos0 = p0;
    if (local)  // the local table has a row for every position, as a static global one
      r.cos = W.rope_cos_local, r.sin = W.rope_sin_local, r.half = half, r.tab_row0 = pos[t0];
    else
      r.cos = cosp, r.sin = sinp, r.half = half, r.tab_row0 = cosp ? tab_row(t0) : 0;
    if (!rotary) r.cos = r.sin = nullptr, r.tab_row0 = 0;  // (a NoPE layer: keys and values stored as they are)
    r.interleaved = sp.rope.style == RopeStyle::Interleaved;
    r.dyn_pos = dyn_pos;
    rope_store(r, st);
    if (q_temp) scale_rows(qkv + t0 * QKV, QKV, S.qtemp.as<float>() + t0, n, QD, st);  // (after rotary, as the CPU)
    AttnArgs A;
    A.q = qkv + t0 * QKV, A.ldq = QKV, A.out = att + t0 * QD, A.ldo = QD;
    A.k = kc, A.v = vc, A.kv_f16 = S.kv_f16;
    A.head_stride = (int64_t)W.max_ctx * hd, A.pos_stride = hd;
    A.T = n, A.n_heads = nh, A.group = nh / nkv, A.head_dim = (int32_t)hd, A.pos0 = p0, A.n_keys = p0 + n;
    A.causal = sp.causal(), A.window = window, A.scale = attn_scale, A.softcap = sp.attn_softcap;
    A.alibi = W.alibi, A.alibi_bf16 = sp.alibi_bf16, A.alibi_scaled = sp.alibi_scaled;
    A.rel = rel, A.rel_width = rel_width, A.rel_lo = rel_lo;
    A.key_mask = key_mask;
    if (dyn) A.dyn_pos = dyn_pos, A.n_keys = dyn_cap;
    attention(A, S.ws_attn, st);
  };
  // result += attn(in), or with acc false result = attn(in)
  auto self_attention = [&](int l, const DevLayer& L, const float* in, float* result, bool acc = true) {
    run_parts(L.qkv, L.b_qkv, in, H, T, qkv, QKV, S.ws_linear, st);
    if (sp.clip_qkv > 0.f) clamp(qkv, sp.clip_qkv, (int64_t)T * QKV, st);  // (OLMo 1, MPT: before anything else)
    if (sp.qk_norm_full) {  // all the heads' queries as one vector, and all the keys (OLMo 2, OLMoE), before rotary
      rmsnorm_heads(qkv, L.q_norm_w, sp.norm_eps, qkv, T, QD, 1, QKV, st);
      rmsnorm_heads(qkv + QD, L.k_norm_w, sp.norm_eps, qkv + QD, T, KD, 1, QKV, st);
    } else if (sp.qk_norm && (sp.norm != NormKind::RMS || sp.qk_norm_per_head)) {  // (a LayerNorm or a weight per head)
      const bool ln = sp.norm != NormKind::RMS;
      const int64_t wh = sp.qk_norm_per_head ? hd : 0;
      norm_heads(ln, qkv, L.q_norm_w, wh, sp.norm_eps, qkv, (int64_t)T * nh, hd, nh, QKV, st);
      norm_heads(ln, qkv + QD, L.k_norm_w, wh, sp.norm_eps, qkv + QD, (int64_t)T * nkv, hd, nkv, QKV, st);
    } else if (sp.qk_norm) {  // each head's query and key, in place, before rotary
      rmsnorm_heads(qkv, L.q_norm_w, sp.norm_eps, qkv, (int64_t)T * nh, hd, nh, QKV, st);
      rmsnorm_heads(qkv + QD, L.k_norm_w, sp.norm_eps, qkv + QD, (int64_t)T * nkv, hd, nkv, QKV, st);
    }
    const size_t layer_off = l * layer_elems * S.kv_elem();
    auto cache = [&](const DevBuffer& c) { return static_cast<char*>(c.get()) + layer_off; };
    if (batch) {
      for (int32_t t = 0; t < T; t++)
        attend(t, 1, pos[t], cache(seqs[t]->kc), cache(seqs[t]->vc), sp.window(l), sp.local_rope(l), !sp.nope(l),
               sp.q_temp(l));
    } else {
      attend(0, T, pos0, cache(S.kc), cache(S.vc), sp.window(l), sp.local_rope(l), !sp.nope(l), sp.q_temp(l));
    }
    linear(L.wo, att, QD, T, L.bo, result, H, acc, S.ws_linear, st);
  };
  auto cross_attention = [&](int l, const DevLayer& L, const float* in, float* result) {
    linear(L.cq, in, H, T, nullptr, qkv, QD, false, S.ws_linear, st);
    AttnArgs A;
    A.q = qkv, A.ldq = QD, A.out = att, A.ldo = QD;
    A.k = S.cross_k.as<float>() + (size_t)l * S.enc_T * QD, A.v = S.cross_v.as<float>() + (size_t)l * S.enc_T * QD;
    A.kv_f16 = false, A.head_stride = hd, A.pos_stride = QD;
    A.T = T, A.n_heads = nh, A.group = 1, A.head_dim = (int32_t)hd, A.pos0 = 0, A.n_keys = S.enc_T;
    A.causal = false, A.window = 0, A.scale = attn_scale;
    A.key_mask = S.enc_has_mask ? S.enc_mask.as<uint8_t>() : nullptr;
    attention(A, S.ws_attn, st);
    linear(L.co, att, QD, T, nullptr, result, H, true, S.ws_linear, st);
  };

  // x += h2 (a branch's output), times residual_scale where the architecture scales it (Granite)
  const bool scaled = sp.residual_scale != 1.f;
  auto residual_add = [&]() {
    if (scaled) scale(h2, sp.residual_scale, (int64_t)T * H, st);
    add(x, h2, (int64_t)T * H, st);
  };

  for (int l = 0; l < sp.n_layers; l++) {
    if (!dyn && take_interrupt()) {  // n_past is unchanged: the model stays usable (graph_step checks once)
      EF_CUDA_CHECK(cudaStreamSynchronize(st));
      throw Interrupted();
    }
    const DevLayer& L = W.layers[l];
    if (sp.norm_position == NormPosition::Post) {  // x = norm1(x + attn(x)); x = norm2(x + mlp(x))
      self_attention(l, L, x, x);
      norm_rows(W, x, x, L.attn_norm_w, L.attn_norm_b, T, st);
      mlp(L, x, x);
      norm_rows(W, x, x, L.mlp_norm_w, L.mlp_norm_b, T, st);
      continue;
    }
    if (sp.post_norms) {  // x + norm(attn(norm1(x))), then x + norm(mlp(norm2(x))); without pre-norms (OLMo 2)
      // the branches read x itself: it changes only at the residual adds after them
      const float* in = x;
      if (sp.pre_norms) norm_rows(W, x, h, L.attn_norm_w, L.attn_norm_b, T, st), in = h;
      self_attention(l, L, in, h2, false);
      norm_rows(W, h2, h2, L.post_attn_norm_w, nullptr, T, st);
      residual_add();
      if (sp.pre_norms) norm_rows(W, x, h, L.mlp_norm_w, L.mlp_norm_b, T, st);
      mlp(L, in, h2, false);
      norm_rows(W, h2, h2, L.post_mlp_norm_w, nullptr, T, st);
      residual_add();
      continue;
    }
    norm_rows(W, x, h, L.attn_norm_w, L.attn_norm_b, T, st);
    if (sp.parallel_residual && sp.parallel_mlp_norm) norm_rows(W, x, h2, L.mlp_norm_w, L.mlp_norm_b, T, st);
    if (sp.parallel_residual) {  // x + attn(norm1(x)) + mlp(norm1(x) or norm2(x))
      self_attention(l, L, h, x);
      mlp(L, sp.parallel_mlp_norm ? h2 : h, x);
      continue;
    }
    if (scaled) {  // (Granite: x + s attn(norm1(x)), then x + s mlp(norm2(x)); each branch through h2)
      self_attention(l, L, h, h2, false);
      residual_add();
    } else {
      self_attention(l, L, h, x);
    }
    if (sp.cross_attention) {
      norm_rows(W, x, h, L.cross_norm_w, L.cross_norm_b, T, st);
      cross_attention(l, L, h, x);
    }
    norm_rows(W, x, h, L.mlp_norm_w, L.mlp_norm_b, T, st);
    if (scaled) {
      mlp(L, h, h2, false);
      residual_add();
    } else {
      mlp(L, h, x);
    }
  }

  if (a.output == Output::None) {
    out_rows = 0;
    return nullptr;
  }
  const int64_t first = a.output == Output::LastLogits ? T - 1 : 0, nrows = T - first;
  out_rows = (int32_t)nrows;
  const float* fin = x + first * H;
  if (sp.final_norm) {
    norm_rows(W, fin, h, W.final_norm_w, W.final_norm_b, nrows, st);
    fin = h;
  }
  if (a.output == Output::Hidden) return fin;
  int64_t ld = H;
  if (sp.proj_dim > 0) {
    linear(W.proj_out, fin, H, nrows, nullptr, e, E, false, S.ws_linear, st);
    fin = e;
    ld = E;
  }
  if (sp.logits_scale != 1.f) {
    if (fin != h) {
      EF_CUDA_CHECK(cudaMemcpyAsync(h, fin, (size_t)nrows * ld * 4, cudaMemcpyDeviceToDevice, st));
      fin = h;
    }
    scale(h, sp.logits_scale, nrows * ld, st);
  }
  float* logits = S.logits_rows((int32_t)nrows);
  linear(W.lm_head, fin, ld, nrows, W.lm_head_b, logits, V, false, S.ws_linear, st);
  if (sp.logit_softcap > 0) softcap(logits, sp.logit_softcap, nrows * V, st);
  return logits;
}

void CudaModel::State::check(const ForwardArgs& a, bool batch) const {
  const State& S = *this;
  const ArchSpec& sp = S.w->spec;
  EF_CHECK(a.T > 0, "forward: no tokens");
  EF_CHECK(a.tokens != nullptr, "forward: no tokens");
  if (!batch && (int64_t)(sp.causal() ? S.n_past : 0) + a.T > S.w->max_ctx)
    throw ValueError("sequence of " + std::to_string((int64_t)(sp.causal() ? S.n_past : 0) + a.T) +
                     " tokens exceeds max_context=" + std::to_string(S.w->max_ctx) +
                     " (pass a larger max_context= to load, up to the memory you have)");
  EF_CHECK(!sp.cross_attention || S.enc_T > 0, "forward: the decoder has no encoder output (set_encoder_output)");
  EF_CHECK((a.output != Output::LastLogits && a.output != Output::AllLogits) || S.w->lm_head.data,
           "this model has no language-model head (an encoder, or a base model saved without one): ask for hidden "
           "states (hidden_states(), embed())");
}

void CudaModel::forward(const ForwardArgs& a) {
  State& S = *s_;
  S.check(a);
  EF_CHECK(a.output == Output::None || a.out, "forward: no output buffer");
  EF_CHECK(!a.seg_lens, "packed sequences (seg_lens) run on the CPU only: pass one sequence at a time");
  DeviceGuard guard(S.device);
  if (!S.w->spec.causal()) S.n_past = 0;  // an encoder sees each input whole
  int32_t rows = 0;
  const float* out = S.run(a, rows);
  if (out) {
    const int64_t width = a.output == Output::Hidden ? S.w->spec.hidden_size : S.w->spec.vocab_size;
    EF_CUDA_CHECK(cudaMemcpyAsync(a.out, out, (size_t)rows * width * 4, cudaMemcpyDeviceToHost, S.stream));
  }
  EF_CUDA_CHECK(cudaStreamSynchronize(S.stream));
  S.n_past += a.T;
}

// A one-token step of a causal decoder whose per-step inputs are all on the device: learned or rotary
// positions (tables for every position: not dynamic scaling), ALiBi or none; not T5's relative bias (its table
// is built per call), cross-attention, token types or key masks.
bool CudaModel::State::graph_eligible(const ForwardArgs& a) const {
  const ArchSpec& sp = w->spec;
  return graphs_on && a.T == 1 && a.output == Output::LastLogits && sp.causal() && !sp.cross_attention &&
         sp.n_experts == 0 &&  // (the experts' choice is made on the host: a step waits for it)
         sp.q_temp_beta == 0.f &&  // (the queries' factors are uploaded per call)
         sp.pos != PosKind::Relative && !(sp.pos == PosKind::Rotary && sp.rope.length_dependent()) &&
         sp.n_token_types == 0 && !a.key_mask && !a.token_types;
}

const float* CudaModel::State::graph_step(const ForwardArgs& a) {
  State& S = *this;
  const DeviceWeights& W = *S.w;
  const ArchSpec& sp = W.spec;
  if (take_interrupt()) throw Interrupted();
  check_ids(a.tokens, 1, W.tok_emb.rows);
  const int32_t pos = S.n_past;
  int32_t p[4] = {a.tokens[0], pos, pos + sp.pos_offset, 0};
  if (sp.pos == PosKind::Learned) check_ids(p + 2, 1, W.pos_emb.rows);
  int32_t cap = 256;
  while (cap < pos + 1 && cap < W.max_ctx) cap *= 2;
  cap = std::min(cap, W.max_ctx);
  if (!S.params.get()) S.params = DevBuffer(16);
  upload(S.params.get(), p, sizeof(p), S.stream);
  if (S.buffer_addrs() != S.graph_addrs) S.drop_graphs();  // a buffer moved since the capture
  for (const Graph& g : S.graphs)
    if (g.cap == cap) {
      EF_CUDA_CHECK(cudaGraphLaunch(g.exec, S.stream));
      S.graph_launches++;
      return S.logits.as<float>();
    }
  // No graph for this cap yet: this step runs as is (sizing every buffer and scratch), then the same calls
  // are captured (nothing runs) for the steps after it.
  int32_t rows = 0;
  const float* out = S.run(a, rows, cap);
  // a larger cap may have grown a scratch buffer (more splits): the graphs of smaller caps then hold freed memory
  if (S.buffer_addrs() != S.graph_addrs) S.drop_graphs();
  S.graph_addrs = S.buffer_addrs();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  bool ok = cudaStreamBeginCapture(S.stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  if (ok) {
    try {
      S.run(a, rows, cap);
    } catch (const std::exception&) {
      ok = false;
    }
    ok = cudaStreamEndCapture(S.stream, &graph) == cudaSuccess && ok;
    ok = ok && S.buffer_addrs() == S.graph_addrs && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  }
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // a refused capture leaves its error behind: this step already ran without it
  if (!ok) {
    if (exec) cudaGraphExecDestroy(exec);
    S.drop_graphs();
    S.graphs_on = false;  // this model decodes without graphs from now on
    return out;
  }
  S.graphs.push_back({cap, exec});
  S.graph_captures++;
  return out;
}

float* CudaModel::State::step_logits(const int32_t* tokens, int32_t T, State* const* seqs, float* raw_logits) {
  ForwardArgs a;
  a.tokens = tokens;
  a.T = T;
  a.output = seqs ? Output::AllLogits : Output::LastLogits;
  check(a, seqs != nullptr);
  int32_t rows = 0;
  float* logits = const_cast<float*>(!seqs && graph_eligible(a) ? graph_step(a) : run(a, rows, 0, seqs));
  if (raw_logits)  // before the sampler's kernel changes the rows (stream order: sample_rows waits for it)
    EF_CUDA_CHECK(cudaMemcpyAsync(raw_logits, logits, (size_t)(seqs ? T : 1) * w->spec.vocab_size * 4,
                                  cudaMemcpyDeviceToHost, stream));
  return logits;
}

std::vector<int32_t> CudaModel::State::sample_rows(float* logits, int32_t B, Sampler* const* samplers,
                                                  const int32_t* const* histories, const int64_t* n_histories) {
  State& S = *this;
  const int32_t V = S.w->spec.vocab_size;
  // every row's penalties in one upload: [repetition ids][counted ids][their penalties, as float bits] per row
  std::vector<SampleArgs> args(B);
  std::vector<int32_t> pen;
  std::vector<size_t> at(B);
  // a grammar's rows are sampled on the host (its automaton and token masks live there): their logits come back
  std::vector<uint8_t> host(B, 0);
  for (int32_t i = 0; i < B; i++) host[i] = samplers[i]->has_grammar();
  for (int32_t i = 0; i < B; i++) {
    if (host[i]) continue;
    SampleArgs& sa = args[i];
    sa = sample_args(samplers[i]->options());
    sa.logits = logits + (int64_t)i * V;
    sa.vocab = V;
    at[i] = pen.size();
    if (sa.repetition_penalty != 1.f) {
      const std::vector<int32_t> d = distinct_tokens(histories[i], n_histories[i]);
      sa.n_penalized = (int32_t)d.size();
      pen.insert(pen.end(), d.begin(), d.end());
    }
    const std::vector<std::pair<int32_t, float>> c = samplers[i]->penalties();
    sa.n_counted = (int32_t)c.size();
    for (const auto& tc : c) pen.push_back(tc.first);
    for (const auto& tc : c) {
      int32_t bits;
      std::memcpy(&bits, &tc.second, 4);
      pen.push_back(bits);
    }
    if (!sa.greedy) sa.u = samplers[i]->next_uniform();  // one draw per sampled token, as the CPU sampler
  }
  if (!pen.empty()) {
    if (S.penalized.size() < pen.size() * 4) S.penalized = DevBuffer(std::max<size_t>(pen.size() * 4, 4096));
    upload(S.penalized.get(), pen.data(), pen.size() * 4, S.stream);
  }
  if (S.token.size() < (size_t)B * 4) S.token = DevBuffer(std::max<size_t>((size_t)B * 4, 16));
  for (int32_t i = 0; i < B; i++) {
    if (host[i]) continue;
    SampleArgs& sa = args[i];
    const int32_t* p = S.penalized.as<int32_t>() + at[i];
    if (sa.n_penalized) sa.penalized = p;
    if (sa.n_counted) {
      sa.counted = p + sa.n_penalized;
      sa.count_penalty = reinterpret_cast<const float*>(p + sa.n_penalized + sa.n_counted);
    }
    sa.out = S.token.as<int32_t>() + i;
    sample(sa, S.ws_sample, S.stream);
  }
  std::vector<int32_t> toks(B, -1);
  std::vector<float> rows;
  for (int32_t i = 0; i < B; i++)
    if (host[i]) {
      rows.resize((size_t)B * V);
      EF_CUDA_CHECK(cudaMemcpyAsync(rows.data() + (size_t)i * V, logits + (int64_t)i * V, (size_t)V * 4,
                                    cudaMemcpyDeviceToHost, S.stream));
    }
  EF_CUDA_CHECK(cudaMemcpyAsync(toks.data(), S.token.get(), (size_t)B * 4, cudaMemcpyDeviceToHost, S.stream));
  EF_CUDA_CHECK(cudaStreamSynchronize(S.stream));
  for (int32_t i = 0; i < B; i++) {
    if (host[i]) {  // -1: the grammar allows no token
      toks[i] = samplers[i]->sample(rows.data() + (size_t)i * V, V, histories[i], n_histories[i]);
      continue;
    }
    EF_CHECK(toks[i] >= 0 && toks[i] < V, "CUDA sampler returned no token");  // a bug, never expected
    samplers[i]->record(toks[i]);
  }
  return toks;
}

int32_t CudaModel::step(const int32_t* tokens, int32_t T, Sampler& sampler, const int32_t* history, int64_t n_history,
                        float* raw_logits) {
  State& S = *s_;
  DeviceGuard guard(S.device);
  float* logits = S.step_logits(tokens, T, nullptr, raw_logits);
  Sampler* sp = &sampler;
  const int32_t tok = S.sample_rows(logits, 1, &sp, &history, &n_history)[0];
  S.n_past += T;
  return tok;
}

void CudaModel::decode_batch(const std::vector<CudaModel*>& seqs, const int32_t* tokens, Sampler* const* samplers,
                             const int32_t* const* histories, const int64_t* n_histories, float* raw_logits,
                             int32_t* next) {
  EF_CHECK(!seqs.empty(), "decode_batch: no sequences");
  State& S = *seqs[0]->s_;
  const ArchSpec& sp = S.w->spec;
  EF_CHECK(sp.causal() && !sp.cross_attention && sp.pos != PosKind::Relative,
           "decode_batch: only causal decoders without cross-attention or relative position bias");
  const int32_t B = (int32_t)seqs.size();
  check_batch(seqs, tokens, sp.vocab_size,
              [&](size_t i) { return seqs[i]->s_->w == S.w && seqs[i]->s_->kv_f16 == S.kv_f16; });
  std::vector<State*> states(B);
  for (int32_t i = 0; i < B; i++) {
    states[i] = seqs[i]->s_.get();
    if ((int64_t)states[i]->n_past + 1 > S.w->max_ctx)
      throw ValueError("sequence " + std::to_string(i) + " of the batch: sequence of " +
                       std::to_string((int64_t)states[i]->n_past + 1) + " tokens exceeds max_context=" +
                       std::to_string(S.w->max_ctx) + " (pass a larger max_context= to load, up to the memory you have)");
  }
  DeviceGuard guard(S.device);
  float* logits = S.step_logits(tokens, B, states.data(), raw_logits);
  if (samplers) {
    const std::vector<int32_t> toks = S.sample_rows(logits, B, samplers, histories, n_histories);
    std::copy(toks.begin(), toks.end(), next);
  } else {
    EF_CUDA_CHECK(cudaStreamSynchronize(S.stream));
  }
  for (State* st : states) st->n_past++;
}

}  // namespace cuda
}  // namespace ef
