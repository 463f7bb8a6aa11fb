// Op entry points on host memory (cuda.h, namespace testing): the tests compare each kernel with the CPU's.
// Each call uploads its inputs as the model would, runs one op on its own stream and copies the result back.
#include <cmath>
#include <cstring>

#include "edgeformer/cuda.h"
#include "host.h"
#include "kernels.h"

namespace ef {
namespace cuda {
namespace testing {

namespace {

// A device and a stream for one test call.
struct Session {
  DeviceGuard guard;
  cudaStream_t s = nullptr;
  explicit Session(int device) : guard((check_device(device), device)) {
    EF_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  }
  ~Session() { cudaStreamDestroy(s); }
  DevBuffer in(const void* host, size_t bytes) {
    DevBuffer b(bytes ? bytes : 4);
    if (bytes) EF_CUDA_CHECK(cudaMemcpyAsync(b.get(), host, bytes, cudaMemcpyHostToDevice, s));
    return b;
  }
  void out(void* host, const DevBuffer& b, size_t bytes) {
    if (bytes) EF_CUDA_CHECK(cudaMemcpyAsync(host, b.get(), bytes, cudaMemcpyDeviceToHost, s));
    EF_CUDA_CHECK(cudaStreamSynchronize(s));
  }
};

}  // namespace

void linear(int device, const Tensor& W, const float* x, int64_t T, const float* bias, float* y) {
  EF_CHECK(W.dim() == 2 && T > 0, "cuda linear: W must be [O, K] and T positive");
  Session S(device);
  std::vector<DevBuffer> owned;
  Uploader up(S.s);
  const DevMatrix m = up.matrix(W, owned);
  const int64_t O = W.shape[0], K = W.shape[1];
  DevBuffer xd = S.in(x, (size_t)(T * K) * 4), yd((size_t)(T * O) * 4);
  DevBuffer bd = S.in(bias, bias ? (size_t)O * 4 : 0);
  Scratch ws;
  cuda::linear(m, xd.as<float>(), K, T, bias ? bd.as<float>() : nullptr, yd.as<float>(), O, false, ws, S.s);
  S.out(y, yd, (size_t)(T * O) * 4);
}

void embedding(int device, const Tensor& table, const int32_t* ids, int64_t T, float* out) {
  EF_CHECK(table.dim() == 2 && T > 0, "cuda embedding: table must be [rows, cols] and T positive");
  for (int64_t t = 0; t < T; t++)
    EF_CHECK(ids[t] >= 0 && ids[t] < table.shape[0], "cuda embedding: id outside the table");
  Session S(device);
  std::vector<DevBuffer> owned;
  Uploader up(S.s);
  const DevMatrix m = up.matrix(table, owned);
  const int64_t H = table.shape[1];
  DevBuffer idd = S.in(ids, (size_t)T * 4), od((size_t)(T * H) * 4);
  cuda::embedding(m, idd.as<int32_t>(), T, od.as<float>(), H, false, S.s);
  S.out(out, od, (size_t)(T * H) * 4);
}

void rmsnorm(int device, const float* x, const float* w, float eps, float* y, int64_t rows, int64_t n) {
  Session S(device);
  DevBuffer xd = S.in(x, (size_t)(rows * n) * 4), wd = S.in(w, w ? (size_t)n * 4 : 0);
  cuda::rmsnorm(xd.as<float>(), w ? wd.as<float>() : nullptr, eps, xd.as<float>(), rows, n, S.s);  // in place
  S.out(y, xd, (size_t)(rows * n) * 4);
}

void layernorm(int device, const float* x, const float* w, const float* b, float eps, float* y, int64_t rows, int64_t n) {
  Session S(device);
  DevBuffer xd = S.in(x, (size_t)(rows * n) * 4), yd((size_t)(rows * n) * 4);
  DevBuffer wd = S.in(w, w ? (size_t)n * 4 : 0), bd = S.in(b, b ? (size_t)n * 4 : 0);
  cuda::layernorm(xd.as<float>(), w ? wd.as<float>() : nullptr, b ? bd.as<float>() : nullptr, eps, yd.as<float>(), rows,
                  n, S.s);
  S.out(y, yd, (size_t)(rows * n) * 4);
}

void softmax(int device, float* x, int64_t rows, int64_t n) {
  Session S(device);
  DevBuffer xd = S.in(x, (size_t)(rows * n) * 4);
  cuda::softmax_rows(xd.as<float>(), rows, n, S.s);
  S.out(x, xd, (size_t)(rows * n) * 4);
}

void act(int device, Act a, float* x, int64_t n) {
  Session S(device);
  DevBuffer xd = S.in(x, (size_t)n * 4);
  cuda::act(a, xd.as<float>(), 1, n, n, S.s);
  S.out(x, xd, (size_t)n * 4);
}

void act_mul(int device, Act a, float* g, const float* u, int64_t n) {
  Session S(device);
  DevBuffer gd = S.in(g, (size_t)n * 4), ud = S.in(u, (size_t)n * 4);
  cuda::act_mul(a, gd.as<float>(), n, ud.as<float>(), n, 1, n, S.s);
  S.out(g, gd, (size_t)n * 4);
}

void rope(int device, float* x, const float* cos, const float* sin, int64_t T, int64_t heads, int64_t head_dim,
          int64_t half, RopeStyle style) {
  EF_CHECK(2 * half <= head_dim, "cuda rope: 2 * half must be <= head_dim");
  Session S(device);
  const size_t n = (size_t)(T * heads * head_dim) * 4, nt = (size_t)(T * half) * 4;
  DevBuffer xd = S.in(x, n), cd = S.in(cos, nt), sd = S.in(sin, nt);
  cuda::rope_inplace(xd.as<float>(), T, heads, head_dim, cd.as<float>(), sd.as<float>(), half,
                     style == RopeStyle::Interleaved, S.s);
  S.out(x, xd, n);
}

void attention(int device, const AttentionArgs& t, const float* q, const float* k, const float* v, float* out) {
  EF_CHECK(t.T > 0 && t.n_keys > 0 && t.n_heads > 0 && t.n_kv_heads > 0 && t.n_heads % t.n_kv_heads == 0 &&
               t.head_dim > 0,
           "cuda attention: bad shapes");
  EF_CHECK(t.alibi_slopes.empty() || (int32_t)t.alibi_slopes.size() == t.n_heads, "cuda attention: one slope per head");
  EF_CHECK(t.rel.empty() || (int64_t)t.rel.size() == (int64_t)t.n_heads * t.rel_width, "cuda attention: rel is [heads][width]");
  EF_CHECK(t.key_mask.empty() || (int32_t)t.key_mask.size() == t.n_keys, "cuda attention: key_mask is [n_keys]");
  Session S(device);
  const int64_t hd = t.head_dim, QD = (int64_t)t.n_heads * hd, KD = (int64_t)t.n_kv_heads * hd;
  DevBuffer qd = S.in(q, (size_t)(t.T * QD) * 4), od((size_t)(t.T * QD) * 4);
  DevBuffer kd, vd;
  const size_t nkv = (size_t)(t.n_keys * KD);
  if (t.kv_f16) {  // the cache's rounding, done on the host
    std::vector<uint16_t> kh(nkv), vh(nkv);
    for (size_t i = 0; i < nkv; i++) kh[i] = f32_to_f16(k[i]), vh[i] = f32_to_f16(v[i]);
    kd = S.in(kh.data(), nkv * 2);
    vd = S.in(vh.data(), nkv * 2);
  } else {
    kd = S.in(k, nkv * 4);
    vd = S.in(v, nkv * 4);
  }
  std::vector<float> slopes(t.alibi_slopes);
  if (t.alibi_bf16)
    for (float& s : slopes) s = bf16_to_f32(f32_to_bf16(s));
  DevBuffer ad = S.in(slopes.data(), slopes.size() * 4), rd = S.in(t.rel.data(), t.rel.size() * 4);
  DevBuffer md = S.in(t.key_mask.data(), t.key_mask.size());
  AttnArgs A;
  A.q = qd.as<float>(), A.ldq = QD, A.out = od.as<float>(), A.ldo = QD;
  A.k = kd.get(), A.v = vd.get(), A.kv_f16 = t.kv_f16;
  A.head_stride = hd, A.pos_stride = KD;  // [n_keys][kv heads][head_dim]
  A.T = t.T, A.n_heads = t.n_heads, A.group = t.n_heads / t.n_kv_heads, A.head_dim = t.head_dim;
  A.pos0 = t.pos0, A.n_keys = t.n_keys, A.causal = t.causal, A.window = t.window;
  A.scale = t.scale > 0 ? t.scale : 1.f / std::sqrt((float)hd);
  A.alibi = slopes.empty() ? nullptr : ad.as<float>();
  A.alibi_bf16 = t.alibi_bf16, A.alibi_scaled = t.alibi_scaled;
  A.rel = t.rel.empty() ? nullptr : rd.as<float>(), A.rel_width = t.rel_width, A.rel_lo = t.rel_lo;
  A.key_mask = t.key_mask.empty() ? nullptr : md.as<uint8_t>();
  Scratch ws;
  cuda::attention(A, ws, S.s);
  S.out(out, od, (size_t)(t.T * QD) * 4);
}

int32_t sample(int device, const float* logits, int32_t vocab, const SamplerOptions& o, const int32_t* history,
               int64_t n_history, double u) {
  EF_CHECK(vocab > 0, "cuda sample: empty logits");
  Session S(device);
  SampleArgs a = sample_args(o);
  DevBuffer ld = S.in(logits, (size_t)vocab * 4), td(16);
  const std::vector<int32_t> pen = a.repetition_penalty != 1.f ? distinct_tokens(history, n_history) : std::vector<int32_t>();
  DevBuffer pd = S.in(pen.data(), pen.size() * 4);
  a.logits = ld.as<float>();
  a.vocab = vocab;
  a.penalized = pen.empty() ? nullptr : pd.as<int32_t>();
  a.n_penalized = (int32_t)pen.size();
  a.u = u;
  a.out = td.as<int32_t>();
  Scratch ws;
  cuda::sample(a, ws, S.s);
  int32_t tok = -1;
  EF_CUDA_CHECK(cudaMemcpyAsync(&tok, a.out, 4, cudaMemcpyDeviceToHost, S.s));
  EF_CUDA_CHECK(cudaStreamSynchronize(S.s));
  return tok;
}

}  // namespace testing
}  // namespace cuda
}  // namespace ef
