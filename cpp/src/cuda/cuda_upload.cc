// The CUDA model's upload: a loaded host Model's weights copied once to the device (cuda.h: CudaModel), after
// refusing by name what the device path does not compute yet.
#include <cmath>
#include <map>

#include "edgeformer/cpu.h"
#include "edgeformer/rope.h"
#include "model_state.h"

namespace ef {
namespace cuda {

namespace {

// What the device path does not compute yet: each refused by name.
void refuse_cpu_only(const ArchSpec& sp) {
  const struct {
    bool missing;
    const char* what;
  } gaps[] = {
      {sp.v_head_dim != 0 || sp.mla(), "latent attention and values of another head size"},
      {sp.qk_norm && (sp.qk_norm_after_rope || (sp.qk_norm_full && sp.norm != NormKind::RMS)),
       "after-rotary or whole-width LayerNorm q/k norms"},
      {!sp.pre_norms && !sp.post_norms, "blocks without norms before or after their branches"},
      {sp.attn_sinks, "attention sinks"},
      {sp.sub_norms, "BitNet's sub-norms and ternary matrices"},
      {sp.rel_bias, "relative position bias beside learned positions (MPNet)"},

      {!sp.first_attn_norm || (!sp.causal() && (sp.sliding_window > 0 || !sp.layer_windows.empty())),
       "a first layer without its attention norm and encoder windows (ModernBERT)"},
      {sp.n_experts != 0 && (sp.moe_beside_mlp || sp.moe_router_norm || sp.swiglu_limit > 0.f ||
                             sp.norm_position == NormPosition::Post),
       "mixtures of experts beside a dense MLP, on a normalized router input or with a clamped SwiGLU"},
      {sp.residual_scale != 1.f && (sp.parallel_residual || sp.norm_position == NormPosition::Post),
       "scaled residual branches of parallel or post-norm blocks"},
      {sp.partial_layers(), "layers without a token mixer or an MLP"},
      {sp.per_layer_shapes() || !sp.layer_kv_source.empty() || sp.v_norm || sp.layer_scale || sp.ple_dim > 0 ||
           !sp.rope.freq_factors.empty() || !sp.rope_local.freq_factors.empty() || sp.altup > 0 ||
           !sp.layer_gate_sigma.empty(),
       "per-layer head sizes, shared keys and values, value norms, layer scales, per-layer inputs, rotary "
       "frequency factors, AltUp streams and activation sparsity"},
      {sp.recurrent() || sp.attn_out_gate, "recurrent layers (Gated DeltaNet, short convolution, Mamba, Mamba2) "
                                           "and gated attention outputs"},
  };
  for (const auto& g : gaps)
    EF_CHECK(!g.missing, std::string("device='cuda': ") + g.what + " (" + sp.model_type +
                             ") run on the CPU only for now; load with device='cpu'");
}

}  // namespace

CudaModel::CudaModel() : s_(std::make_unique<State>()) {}

CudaModel::CudaModel(const Model& host, const CudaOptions& opts) : s_(std::make_unique<State>()) {
  refuse_cpu_only(host.spec());
  check_device(opts.device);
  EF_CHECK(opts.kv_dtype == "f16" || opts.kv_dtype == "f32",
           "argument 'kv_dtype' must be 'f16' or 'f32', got '" + opts.kv_dtype + "'");
  DeviceGuard guard(opts.device);
  auto W = std::make_shared<DeviceWeights>();
  W->spec = host.spec();
  W->device = opts.device;
  W->max_ctx = host.max_context();
  W->host_threads = host.threads();
  const ArchSpec& sp = W->spec;
  std::map<std::string, Tensor> t;
  for (auto& kv : host.weights()) t.emplace(kv.first, kv.second);
  auto get = [&](const std::string& n) -> const Tensor* {
    auto it = t.find(n);
    return it == t.end() ? nullptr : &it->second;
  };
  cudaStream_t s;
  EF_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  struct StreamCloser {
    cudaStream_t s;
    ~StreamCloser() { cudaStreamDestroy(s); }
  } closer{s};
  Uploader up(s);
  auto& own = W->owned;
  auto matrix = [&](const std::string& n) -> DevMatrix {
    const Tensor* x = get(n);
    if (!x) return DevMatrix();
    DevMatrix m = up.matrix(*x, own);
    return m;
  };
  auto vec = [&](const std::string& n) -> const float* {
    const Tensor* x = get(n);
    return x ? up.vec(*x, own) : nullptr;
  };
  // a vector kept on the host (empty where the model has none)
  auto host_floats = [&](const std::string& n) {
    const Tensor* x = get(n);
    if (!x) return std::vector<float>();
    const Tensor c = x->to_contiguous_f32();
    return std::vector<float>((const float*)c.data, (const float*)c.data + c.numel());
  };
  // one f32 vector from several (fused biases); null when the first is absent
  auto cat = [&](const std::vector<std::string>& names) -> const float* {
    std::vector<float> all;
    for (auto& n : names) {
      if (!get(n)) return nullptr;
      const std::vector<float> v = host_floats(n);
      all.insert(all.end(), v.begin(), v.end());
    }
    const float* p = up.floats(all.data(), (int64_t)all.size(), own);
    up.finish();
    return p;
  };
  // matrices stacked by rows into one (one launch) when their types agree, else one part each
  auto parts = [&](const std::vector<std::string>& names) {
    std::vector<const Tensor*> ts;
    for (auto& n : names) {
      const Tensor* x = get(n);
      if (!x) throw ValueError("CUDA upload: the model has no weight '" + n + "'");
      ts.push_back(x);
    }
    std::vector<Part> out;
    bool same = true;
    for (const Tensor* x : ts) same = same && x->dtype == ts[0]->dtype;
    if (same) {
      out.push_back({up.stacked(ts, own), 0});
    } else {
      int64_t col = 0;
      for (const Tensor* x : ts) {
        out.push_back({up.matrix(*x, own), col});
        col += x->shape[0];
      }
    }
    return out;
  };

  // an MLP's matrices under prefix q ("...gate.weight" where gated, "up", "down", their biases)
  auto mlp_of = [&](const std::string& q) {
    DevMlp m;
    if (sp.gated_mlp) {
      m.gate_up = parts({q + "gate.weight", q + "up.weight"});
      m.b_gate_up = cat({q + "gate.bias", q + "up.bias"});
    } else {
      m.gate_up = parts({q + "up.weight"});
      m.b_gate_up = vec(q + "up.bias");
    }
    m.down = matrix(q + "down.weight");
    m.b_down = vec(q + "down.bias");
    return m;
  };
  W->tok_emb = matrix("tok_embeddings.weight");
  W->pos_emb = matrix("pos_embeddings.weight");
  W->type_emb = matrix("token_type_embeddings.weight");
  W->proj_in = matrix("proj_in.weight");
  W->proj_out = matrix("proj_out.weight");
  W->emb_norm_w = vec("emb_norm.weight");
  W->emb_norm_b = vec("emb_norm.bias");
  W->final_norm_w = vec("norm.weight");
  W->final_norm_b = vec("norm.bias");
  if (sp.causal()) {
    // tied: the embedding; none for a bare base model (ArchSpec::no_head: hidden states only)
    W->lm_head = get("lm_head.weight") ? matrix("lm_head.weight") : sp.no_head ? DevMatrix() : W->tok_emb;
    W->lm_head_b = vec("lm_head.bias");
  }
  W->rel_bias = host_floats("rel_bias.weight");
  if (sp.pos == PosKind::ALiBi) {
    std::vector<float> slopes(sp.alibi_slopes);
    if (sp.alibi_bf16)
      for (float& v : slopes) v = bf16_to_f32(f32_to_bf16(v));
    W->alibi = up.floats(slopes.data(), (int64_t)slopes.size(), own);
    up.finish();
  }
  W->layers.resize(sp.n_layers);
  for (int i = 0; i < sp.n_layers; i++) {
    DevLayer& L = W->layers[i];
    const std::string p = "layers." + std::to_string(i) + ".";
    L.attn_norm_w = vec(p + "attn_norm.weight");
    L.attn_norm_b = vec(p + "attn_norm.bias");
    L.mlp_norm_w = vec(p + "mlp_norm.weight");
    L.mlp_norm_b = vec(p + "mlp_norm.bias");
    L.qkv = parts({p + "attn.q.weight", p + "attn.k.weight", p + "attn.v.weight"});
    L.b_qkv = cat({p + "attn.q.bias", p + "attn.k.bias", p + "attn.v.bias"});
    L.wo = matrix(p + "attn.o.weight");
    L.bo = vec(p + "attn.o.bias");
    if (sp.qk_norm) {
      L.q_norm_w = vec(p + "attn.q_norm.weight");
      L.k_norm_w = vec(p + "attn.k_norm.weight");
    }
    if (sp.post_norms) {
      L.post_attn_norm_w = vec(p + "post_attn_norm.weight");
      L.post_mlp_norm_w = vec(p + "post_mlp_norm.weight");
    }
    if (sp.moe(i)) {
      L.moe = true;
      L.router = vec(p + "moe.router.weight");
      L.router_b = vec(p + "moe.router.bias");
      L.select_b = host_floats(p + "moe.router.select_bias");
      L.expert_scale = host_floats(p + "moe.router.expert_scale");
      for (int e = 0; e < sp.n_experts; e++) {
        L.experts.push_back(mlp_of(p + "moe.experts." + std::to_string(e) + "."));
        up.finish();
      }
      if (sp.shared_ffn_size > 0) L.shared = mlp_of(p + "moe.shared.");
      L.shared_scale = vec(p + "moe.shared_scale.weight");
    } else if (sp.has_mlp(i)) {
      L.mlp = mlp_of(p + "mlp.");
    }
    if (sp.cross_attention) {
      L.cross_norm_w = vec(p + "cross_norm.weight");
      L.cross_norm_b = vec(p + "cross_norm.bias");
      L.cq = matrix(p + "cross.q.weight");
      L.ck = matrix(p + "cross.k.weight");
      L.cv = matrix(p + "cross.v.weight");
      L.co = matrix(p + "cross.o.weight");
    }
    up.finish();  // bounds the host memory the pageable copies hold
  }
  // rotary tables for every position (the CPU computes the same values per call)
  auto rope_table = [&](const ArchSpec& rs, const float*& cos_out, const float*& sin_out) {
    std::vector<float> inv;
    float msc = 1.f;
    rope_inv_freq(rs, 0, inv, msc);
    const size_t half = inv.size();
    std::vector<float> c((size_t)W->max_ctx * half), sn((size_t)W->max_ctx * half);
    for (int32_t t = 0; t < W->max_ctx; t++) {
      const float pos = (float)t;
      for (size_t i = 0; i < half; i++) {
        const float f = pos * inv[i];
        c[t * half + i] = std::cos(f) * msc;
        sn[t * half + i] = std::sin(f) * msc;
      }
    }
    cos_out = up.floats(c.data(), (int64_t)c.size(), own);
    sin_out = up.floats(sn.data(), (int64_t)sn.size(), own);
    return (int32_t)half;
  };
  if (sp.pos == PosKind::Rotary && !sp.rope.length_dependent())
    W->rope_half = rope_table(sp, W->rope_cos, W->rope_sin);
  if (!sp.layer_rope.empty()) {
    ArchSpec local = sp;
    local.rope = sp.rope_local;
    rope_table(local, W->rope_cos_local, W->rope_sin_local);
  }
  up.finish();
  int64_t bytes = 0;
  auto count = [&](const DevMatrix& m) { bytes += m.data ? device_bytes(m) : 0; };
  count(W->tok_emb);
  if (W->lm_head.data != W->tok_emb.data) count(W->lm_head);
  for (const DevLayer& L : W->layers) {
    for (const Part& p : L.qkv) count(p.W);
    auto count_mlp = [&](const DevMlp& m) {
      for (const Part& p : m.gate_up) count(p.W);
      count(m.down);
    };
    count_mlp(L.mlp);
    count_mlp(L.shared);
    for (const DevMlp& e : L.experts) count_mlp(e);
    for (const DevMatrix* m : {&L.wo, &L.cq, &L.ck, &L.cv, &L.co}) count(*m);
  }
  W->weight_bytes = bytes;
  s_->init_stream_and_cache(W, opts.kv_dtype == "f16");
}

}  // namespace cuda
}  // namespace ef
