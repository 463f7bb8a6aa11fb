// The generic transformer on one CUDA device: the same stack as cpp/src/model/model.cc (read that file's
// header for the block structure), each step a kernel of kernels.h on the model's stream. The weights come
// from a loaded host Model (its loader applied the checkpoint's names, shapes and the dtype policy), are
// uploaded once and may be shared by forks; each model has its own KV cache and activation buffers.
//
// Activation buffers, per token row:  x [H] residual stream   h, h2 [max(H, E)] normalized inputs
//   qkv [QD + 2 KD] (q | k | v)   att [QD]   gu [2F] (gate | up) or [F]   e [E] embeddings of width proj_dim
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

#include "edgeformer/cpu.h"
#include "edgeformer/cuda.h"
#include "edgeformer/rope.h"
#include "host.h"
#include "kernels.h"
#include "model/batch_checks.h"

namespace ef {
namespace cuda {

namespace {

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

const float* fp(const DevBuffer& b) { return b.as<float>(); }

}  // namespace

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

namespace {

// Per-forward inputs the CPU model also computes on the host: token checks, rotary tables for dynamic
// scaling, the relative-bias table.
void check_ids(const int32_t* ids, int32_t T, int64_t rows) {
  for (int32_t t = 0; t < T; t++)
    if (ids[t] < 0 || ids[t] >= rows)
      throw ValueError("token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                       " is outside the vocabulary [0, " + std::to_string(rows) + ")");
}

void upload(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  if (bytes) EF_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
}

// What the device path does not compute yet: each refused by name.
void refuse_cpu_only(const ArchSpec& sp) {
  const bool rms_qk = sp.norm == NormKind::RMS && !sp.qk_norm_per_head && !sp.qk_norm_after_rope;
  const struct {
    bool missing;
    const char* what;
  } gaps[] = {
      {sp.v_head_dim != 0 || sp.mla(), "latent attention and values of another head size"},
      {sp.qk_norm && !rms_qk, "per-head, LayerNorm or after-rotary q/k norms"},
      {!sp.pre_norms && !sp.post_norms, "blocks without norms before or after their branches"},
      {sp.attn_sinks, "attention sinks"},
      {sp.sub_norms, "BitNet's sub-norms and ternary matrices"},
      {sp.rel_bias, "relative position bias beside learned positions (MPNet)"},

      {sp.no_head, "a decoder saved without its language-model head (a bare base model)"},
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
  // one f32 vector from several (fused biases); null when the first is absent
  auto cat = [&](const std::vector<std::string>& names) -> const float* {
    std::vector<float> all;
    for (auto& n : names) {
      const Tensor* x = get(n);
      if (!x) return nullptr;
      const Tensor c = x->to_contiguous_f32();
      all.insert(all.end(), (const float*)c.data, (const float*)c.data + c.numel());
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
  // a vector kept on the host (empty where the model has none)
  auto host_floats = [&](const std::string& n) {
    const Tensor* x = get(n);
    if (!x) return std::vector<float>();
    const Tensor c = x->to_contiguous_f32();
    return std::vector<float>((const float*)c.data, (const float*)c.data + c.numel());
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
    W->lm_head = get("lm_head.weight") ? matrix("lm_head.weight") : W->tok_emb;  // tied: the embedding
    W->lm_head_b = vec("lm_head.bias");
  }
  if (const Tensor* rb = get("rel_bias.weight")) {
    const Tensor c = rb->to_contiguous_f32();
    W->rel_bias.assign((const float*)c.data, (const float*)c.data + c.numel());
  }
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
           "this model has no language-model head (an encoder): ask for hidden states");
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
