// Test only (EF_CUDA_MOCK=ON): the contracts of cpp/src/cuda/kernels.h implemented with host loops over the
// host-memory stand-in of cuda_runtime_api.h beside this file. With it the CUDA path's host code (uploads, the
// model's buffers and strides, the kernels' arguments, the bindings, load(device="cuda")) runs the whole of
// tests/test_cuda.py on a machine without a GPU. The device kernels themselves are not exercised here.
#include <algorithm>
#include <cmath>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "edgeformer/quant.h"

namespace ef {
namespace cuda {

namespace {

float weight_at(const DevMatrix& W, int64_t r, int64_t k) {
  const uint8_t* base = static_cast<const uint8_t*>(W.data);
  switch (W.dtype) {
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(W.data)[r * W.ld + k]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(W.data)[r * W.ld + k]);
    case DType::Q8_0:
      return (float)static_cast<const int8_t*>(W.data)[r * W.cols + k] * f16_to_f32(W.scales[r * (W.cols / 32) + k / 32]);
    case DType::Q4_0: {
      const int64_t nb = W.cols / 32, b = k / 32;
      const int i = (int)(k % 32);
      const uint8_t byte = base[(r * nb + b) * 16 + (i & 15)];
      return f16_to_f32(W.scales[r * nb + b]) * (float)((i < 16 ? (byte & 15) : (byte >> 4)) - 8);
    }
    case DType::Q4_K:
    case DType::Q6_K: {  // the stored blocks: dequantize the super-block holding k
      float buf[256];
      const int64_t sb = k / 256, bytes = (int64_t)dtype_block_bytes(W.dtype);
      dequantize_row(W.dtype, base + r * W.ld + sb * bytes, buf, 256);
      return buf[k % 256];
    }
    default: throw ValueError("mock: bad weight type");
  }
}

float act_f(Act a, float x) {
  switch (a) {
    case Act::None: return x;
    case Act::ReLU: return x > 0.f ? x : 0.f;
    case Act::ReLU2: return x > 0.f ? x * x : 0.f;
    case Act::SiLU: return x / (1.f + std::exp(-x));
    case Act::GELU: return 0.5f * x * std::erfc(x * -0.70710678118654752f);
    case Act::GELUTanh: return 0.5f * x * (1.f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
  }
  return x;
}

float kv_get(const void* p, bool f16, int64_t i) {
  return f16 ? f16_to_f32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}
void kv_put(void* p, bool f16, int64_t i, float v) {
  if (f16) static_cast<uint16_t*>(p)[i] = f32_to_f16(v);
  else static_cast<float*>(p)[i] = v;
}

}  // namespace

void embedding(const DevMatrix& table, const int32_t* ids, int64_t T, float* out, int64_t ldo, bool accumulate,
               cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t t = 0; t < T; t++)
      for (int64_t k = 0; k < table.cols; k++) {
        const float v = weight_at(table, ids[t], k);
        out[t * ldo + k] = accumulate ? out[t * ldo + k] + v : v;
      }
  });
}

void rmsnorm_heads(const float* x, const float* w, float eps, float* y, int64_t rows, int64_t n, int64_t heads,
                   int64_t ld, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < rows; r++) {
      const int64_t at = (r / heads) * ld + (r % heads) * n;
      double ss = 0;
      for (int64_t i = 0; i < n; i++) ss += (double)x[at + i] * x[at + i];
      const float s = 1.f / std::sqrt((float)(ss / n) + eps);
      for (int64_t i = 0; i < n; i++) y[at + i] = x[at + i] * s * (w ? w[i] : 1.f);
    }
  });
}

void norm_heads(bool ln, const float* x, const float* w, int64_t w_head, float eps, float* y, int64_t rows, int64_t n,
                int64_t heads, int64_t ld, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < rows; r++) {
      const int64_t at = (r / heads) * ld + (r % heads) * n;
      const float* wr = w ? w + (r % heads) * w_head : nullptr;
      double mean = 0, v = 0;
      if (ln) {
        for (int64_t i = 0; i < n; i++) mean += x[at + i];
        mean /= n;
      }
      for (int64_t i = 0; i < n; i++) v += (x[at + i] - mean) * (x[at + i] - mean);
      const float s = 1.f / std::sqrt((float)(v / n) + eps);
      for (int64_t i = 0; i < n; i++) y[at + i] = (float)(x[at + i] - mean) * s * (wr ? wr[i] : 1.f);
    }
  });
}

void rmsnorm(const float* x, const float* w, float eps, float* y, int64_t rows, int64_t n, cudaStream_t st) {
  rmsnorm_heads(x, w, eps, y, rows, n, 1, n, st);
}

void layernorm(const float* x, const float* w, const float* b, float eps, float* y, int64_t rows, int64_t n,
               cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = x + r * n;
      double m = 0, v = 0;
      for (int64_t i = 0; i < n; i++) m += xr[i];
      m /= n;
      for (int64_t i = 0; i < n; i++) v += (xr[i] - m) * (xr[i] - m);
      const float s = 1.f / std::sqrt((float)(v / n) + eps);
      for (int64_t i = 0; i < n; i++) y[r * n + i] = (float)(xr[i] - m) * s * (w ? w[i] : 1.f) + (b ? b[i] : 0.f);
    }
  });
}

void softmax_rows(float* x, int64_t rows, int64_t n, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < rows; r++) {
      float* p = x + r * n;
      const float m = *std::max_element(p, p + n);
      double s = 0;
      for (int64_t i = 0; i < n; i++) s += p[i] = std::exp(p[i] - m);
      for (int64_t i = 0; i < n; i++) p[i] = (float)(p[i] / s);
    }
  });
}

void act(Act a, float* x, int64_t rows, int64_t n, int64_t ld, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < rows; r++)
      for (int64_t i = 0; i < n; i++) x[r * ld + i] = act_f(a, x[r * ld + i]);
  });
}

void act_mul(Act a, float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int64_t n, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < rows; r++)
      for (int64_t i = 0; i < n; i++) g[r * ldg + i] = act_f(a, g[r * ldg + i]) * u[r * ldu + i];
  });
}

void add(float* y, const float* x, int64_t n, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
  });
}

void softcap(float* x, float cap, int64_t n, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t i = 0; i < n; i++) x[i] = cap * std::tanh(x[i] / cap);
  });
}

void scale(float* x, float a, int64_t n, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t i = 0; i < n; i++) x[i] *= a;
  });
}

void clamp(float* x, float lim, int64_t n, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t i = 0; i < n; i++) x[i] = std::min(std::max(x[i], -lim), lim);
  });
}

void scale_rows(float* x, int64_t ld, const float* f, int64_t rows, int64_t cols, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) x[r * ld + c] *= f[r];
  });
}

void linear_f32(const float* x, const float* w, const float* b, int64_t T, int64_t K, int64_t n, float* y,
                cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t t = 0; t < T; t++)
      for (int64_t o = 0; o < n; o++) {
        float dot = 0.f;
        for (int64_t k = 0; k < K; k++) dot += x[t * K + k] * w[o * K + k];
        y[t * n + o] = dot + (b ? b[o] : 0.f);
      }
  });
}

void gather_rows(const float* src, int64_t ld, const int32_t* idx, int64_t n, int64_t cols, float* dst, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < n; r++) std::memcpy(dst + r * cols, src + (int64_t)idx[r] * ld, cols * sizeof(float));
  });
}

void scatter_add_rows(float* dst, int64_t ld, const int32_t* idx, const float* w, const float* src, int64_t n,
                      int64_t cols, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < n; r++)
      for (int64_t c = 0; c < cols; c++) dst[(int64_t)idx[r] * ld + c] += w[r] * src[r * cols + c];
  });
}

void sigmoid_gate_add(float* dst, const float* y, const float* x, const float* v, int64_t rows, int64_t cols,
                      cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < rows; r++) {
      float dot = 0.f;
      for (int64_t c = 0; c < cols; c++) dot += x[r * cols + c] * v[c];
      const float g = 1.f / (1.f + std::exp(-dot));
      for (int64_t c = 0; c < cols; c++) dst[r * cols + c] += g * y[r * cols + c];
    }
  });
}

void f32_to_f16_rows(const float* src, int64_t lds, int64_t rows, int64_t cols, uint16_t* dst, int64_t ldd,
                     cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < cols; c++) dst[r * ldd + c] = f32_to_f16(src[r * lds + c]);
  });
}

void split_blocks(DType t, const uint8_t* src, int64_t nblocks, uint8_t* quants, uint16_t* scales, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    const int qb = t == DType::Q8_0 ? 32 : 16;
    for (int64_t b = 0; b < nblocks; b++) {
      const uint8_t* p = src + b * (qb + 2);
      scales[b] = (uint16_t)(p[0] | (p[1] << 8));
      std::memcpy(quants + b * qb, p + 2, qb);
    }
  });
}

// No cuBLAS under the stand-ins: prompts take the same (exact, here) product.
void set_blas_path(const std::string&) {}
int blas_version() { return 0; }
int64_t blas_calls() { return 0; }

void linear(const DevMatrix& W, const float* x, int64_t ldx, int64_t T, const float* bias, float* y, int64_t ldy,
            bool accumulate, Scratch&, cudaStream_t st) {
  EF_CHECK(W.cols > 0 && ldx >= W.cols && ldy >= W.rows, "CUDA linear: bad strides");
  ef_mock_submit(st, [=] {
    if (W.dtype == DType::F16 || W.dtype == DType::BF16)
      EF_CHECK(W.ld % 8 == 0, "CUDA linear: f16/bf16 rows must be padded to 8 elements and 16-byte aligned");
    std::vector<float> row(W.cols);
    // As gemm.cu's GEMV: with quantized weights, a decode step's activations are quantized to 8 bits per block
    // of 32 (q = round(x / d), d = max|x| / 127), and q8_0 also multiplies the rounding residual quantized so.
    const bool xq = T <= kGemvMaxT && is_quantized(W.dtype);
    std::vector<float> xs((size_t)T * W.cols);
    for (int64_t t = 0; t < T; t++) {
      for (int64_t k0 = 0; k0 < W.cols; k0 += 32) {
        float* out = xs.data() + t * W.cols + k0;
        const float* in = x + t * ldx + k0;
        const int64_t n = std::min<int64_t>(32, W.cols - k0);
        if (!xq) {
          std::copy(in, in + n, out);
          continue;
        }
        auto q8 = [&](const float* v, float* vq, float* res) {  // vq = q d, res = v - q d
          float amax = 0.f;
          for (int64_t i = 0; i < n; i++) amax = std::max(amax, std::fabs(v[i]));
          const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
          for (int64_t i = 0; i < n; i++) {
            const float q = std::round(v[i] * id);
            vq[i] = q * d;
            if (res) res[i] = std::fma(-q, d, v[i]);
          }
        };
        float res[32], rq[32];
        q8(in, out, res);
        if (W.dtype == DType::Q8_0) {
          q8(res, rq, nullptr);
          for (int64_t i = 0; i < n; i++) out[i] += rq[i];
        }
      }
    }
    for (int64_t o = 0; o < W.rows; o++) {
      for (int64_t k = 0; k < W.cols; k++) row[k] = weight_at(W, o, k);
      for (int64_t t = 0; t < T; t++) {
        double s = 0;
        for (int64_t k = 0; k < W.cols; k++) s += (double)xs[t * W.cols + k] * row[k];
        const float v = (float)s + (bias ? bias[o] : 0.f);
        y[t * ldy + o] = accumulate ? y[t * ldy + o] + v : v;
      }
    }
  });
}

void rope_store(const RopeStoreArgs& a, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    const int hd = a.head_dim, half = a.half;
    const int32_t p0 = a.dyn_pos ? *a.dyn_pos : a.pos0, row0 = a.dyn_pos ? p0 : a.tab_row0;
    for (int t = 0; t < a.T; t++) {
      const int64_t pos = p0 + t;
      const float* c = a.cos ? a.cos + (int64_t)(row0 + t) * half : nullptr;
      const float* s = a.sin ? a.sin + (int64_t)(row0 + t) * half : nullptr;
      auto rot = [&](float* p) {
        for (int i = 0; i < half; i++) {
          const int i0 = a.interleaved ? 2 * i : i, i1 = a.interleaved ? 2 * i + 1 : i + half;
          const float x0 = p[i0], x1 = p[i1];
          p[i0] = x0 * c[i] - x1 * s[i];
          p[i1] = x1 * c[i] + x0 * s[i];
        }
      };
      for (int h = 0; h < a.n_heads && c; h++) rot(a.q + t * a.ldq + (int64_t)h * hd);
      for (int g = 0; g < a.n_kv; g++) {
        std::vector<float> k(a.k + t * a.ldk + (int64_t)g * hd, a.k + t * a.ldk + (int64_t)(g + 1) * hd);
        if (c) rot(k.data());
        for (int d = 0; d < hd; d++) {
          const int64_t off = g * a.head_stride + pos * a.pos_stride + d;
          kv_put(a.kc, a.kv_f16, off, k[d]);
          kv_put(a.vc, a.kv_f16, off, a.v[t * a.ldv + (int64_t)g * hd + d]);
        }
      }
    }
  });
}

void rope_inplace(float* x, int64_t T, int64_t heads, int64_t head_dim, const float* cos, const float* sin, int64_t half,
                  bool interleaved, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    for (int64_t t = 0; t < T; t++)
      for (int64_t h = 0; h < heads; h++) {
        float* p = x + (t * heads + h) * head_dim;
        for (int64_t i = 0; i < half; i++) {
          const int64_t i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
          const float x0 = p[i0], x1 = p[i1], c = cos[t * half + i], s = sin[t * half + i];
          p[i0] = x0 * c - x1 * s;
          p[i1] = x1 * c + x0 * s;
        }
      }
  });
}

void attention(const AttnArgs& a, Scratch& ws, cudaStream_t st) {
  EF_CHECK(a.head_dim > 0 && a.head_dim <= 256 && a.n_keys > 0, "CUDA attention: bad arguments");
  // the scratch grows with the keys as the real split-K decode's does (a graph captured with an older buffer
  // would hold freed memory): the scores go through it
  double* scores = a.T == 1 ? ws.ensure_as<double>((size_t)a.n_keys + 1) : nullptr;
  EF_CHECK(!a.dyn_pos || (a.T == 1 && a.causal), "CUDA attention: a device-side position needs one causal query");
  ef_mock_submit(st, [=] {
    const int hd = a.head_dim;
    std::vector<double> own(scores ? 0 : a.n_keys);
    double* sc = scores ? scores : own.data();
    const int32_t p0 = a.dyn_pos ? *a.dyn_pos : a.pos0;  // dyn_pos: n_keys is an upper bound on p0 + 1
    if (a.dyn_pos && p0 >= a.n_keys) throw ValueError("mock attention: the device-side position exceeds n_keys");
    const int32_t n_keys = a.dyn_pos ? p0 + 1 : a.n_keys;
    for (int t = 0; t < a.T; t++) {
      const int32_t pos = p0 + t;
      const int32_t hi = a.causal ? std::min(pos, n_keys - 1) : n_keys - 1;
      const int32_t lo = a.window > 0 ? std::max(0, pos - a.window + 1) : 0;
      for (int h = 0; h < a.n_heads; h++) {
        const int64_t kv0 = (int64_t)(h / a.group) * a.head_stride;
        const float* q = a.q + t * a.ldq + (int64_t)h * hd;
        double m = -INFINITY;
        for (int32_t j = lo; j <= hi; j++) {
          if (a.key_mask && !a.key_mask[j]) {
            sc[j] = -INFINITY;
            continue;
          }
          float dot = 0.f;
          for (int d = 0; d < hd; d++) dot += q[d] * kv_get(a.k, a.kv_f16, kv0 + (int64_t)j * a.pos_stride + d);
          float s = dot * a.scale;
          if (a.softcap > 0) s = a.softcap * std::tanh(s / a.softcap);
          if (a.alibi) {
            float b = a.alibi[h] * (float)j;
            if (a.alibi_bf16) b = bf16_to_f32(f32_to_bf16(b));
            s += a.alibi_scaled ? b * a.scale : b;
          } else if (a.rel) {
            s += a.rel[(int64_t)h * a.rel_width + (j - pos - a.rel_lo)];
          }
          sc[j] = s;
          m = std::max(m, (double)s);
        }
        float* o = a.out + t * a.ldo + (int64_t)h * hd;
        std::fill(o, o + hd, 0.f);
        if (m == -INFINITY) continue;
        double l = 0;
        std::vector<double> acc(hd, 0.0);
        for (int32_t j = lo; j <= hi; j++) {
          if (sc[j] == -INFINITY) continue;
          const double p = std::exp(sc[j] - m);
          l += p;
          for (int d = 0; d < hd; d++) acc[d] += p * kv_get(a.v, a.kv_f16, kv0 + (int64_t)j * a.pos_stride + d);
        }
        for (int d = 0; d < hd; d++) o[d] = (float)(acc[d] / l);
      }
    }
  });
}

// The device sampler's semantics (sample.cu): value thresholds, then the draw in vocabulary order.
void sample(const SampleArgs& a, Scratch&, cudaStream_t st) {
  ef_mock_submit(st, [=] {
    const int32_t V = a.vocab;
    float* l = a.logits;
    for (int32_t i = 0; i < a.n_penalized; i++) {
      const int32_t t = a.penalized[i];
      if (t >= 0 && t < V) l[t] = l[t] > 0.f ? l[t] / a.repetition_penalty : l[t] * a.repetition_penalty;
    }
    for (int32_t i = 0; i < a.n_counted; i++) {
      const int32_t t = a.counted[i];
      if (t >= 0 && t < V) l[t] -= a.count_penalty[i];
    }
    const int32_t argmax = (int32_t)(std::max_element(l, l + V) - l);  // the first maximum
    if (a.greedy) {
      *a.out = argmax;
      return;
    }
    float kth = -INFINITY;
    if (a.top_k > 0 && a.top_k < V) {
      std::vector<float> s(l, l + V);
      std::nth_element(s.begin(), s.begin() + (a.top_k - 1), s.end(), std::greater<float>());
      kth = s[a.top_k - 1];
    }
    const float mx = l[argmax] * a.inv_temperature;
    std::vector<double> w(V);
    for (int32_t i = 0; i < V; i++) w[i] = l[i] >= kth ? std::exp(l[i] * a.inv_temperature - mx) : 0.0;
    auto total = [&] { double s = 0; for (double v : w) s += v; return s; };
    if (a.top_p < 1.f) {  // drop the largest set of least likely tokens (by value) whose mass stays <= 1 - top_p
      std::vector<double> s(w);
      std::sort(s.begin(), s.end());
      const double thr = (1.0 - a.top_p) * total();
      double below = 0, cut = s.back();
      for (size_t i = 0; i < s.size(); i++) {
        if (s[i] == 0) continue;
        size_t j = i;
        double grp = 0;
        while (j < s.size() && s[j] == s[i]) grp += s[j++];
        if (below + grp > thr) {
          cut = s[i];
          break;
        }
        below += grp;
        i = j - 1;
      }
      for (double& v : w)
        if (v < cut) v = 0;
    }
    if (a.min_p > 0.f) {
      const double m = *std::max_element(w.begin(), w.end());
      for (double& v : w)
        if (v < a.min_p * m) v = 0;
    }
    const double target = a.u * total();
    double c = 0;
    for (int32_t i = 0; i < V; i++) {
      c += w[i];
      if (w[i] > 0 && c > target) {
        *a.out = i;
        return;
      }
    }
    *a.out = argmax;
  });
}

}  // namespace cuda
}  // namespace ef
