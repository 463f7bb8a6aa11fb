#include "edgeformer/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "edgeformer/quant.h"

#include "edgeformer/errors.h"

namespace ef {
namespace ops {

void mlp(ThreadPool* pool, const KernelTable& k, Act act, const float* x, int64_t H, int64_t T, const Tensor& gate,
         const Tensor& up, const Tensor& down, const float* bg, const float* bu, const float* bd, int64_t F, float* g,
         float* u, float* y, float gate_sigma, const float* hidden_norm, float eps) {
  if (!gate.data) {  // (a plain MLP: GPT-2's, Nemotron-H's experts)
    linear(pool, k, x, H, T, up, bu, u, F);
    each_rows(pool, T, F, [&](int64_t t0, int64_t t1) { k.act(act, u + t0 * F, (t1 - t0) * F); });
    linear(pool, k, u, F, T, down, bd, y, H);
    return;
  }
  const LinearOut gu[2] = {{&gate, bg, g, F}, {&up, bu, u, F}};
  linear_group(pool, k, x, H, T, gu, 2);
  if (!std::isnan(gate_sigma))  // (the mean and the population deviation of each row, in double)
    for (int64_t t = 0; t < T; t++) {
      float* r = g + t * F;
      double s = 0, s2 = 0;
      for (int64_t i = 0; i < F; i++) s += r[i];
      const double mean = s / F;
      for (int64_t i = 0; i < F; i++) s2 += (r[i] - mean) * (r[i] - mean);
      const float cut = (float)mean + (float)std::sqrt(s2 / F) * gate_sigma;
      for (int64_t i = 0; i < F; i++) r[i] = std::max(r[i] - cut, 0.f);
    }
  each_rows(pool, T, F, [&](int64_t t0, int64_t t1) {
    k.act_mul(act, g + t0 * F, u + t0 * F, (t1 - t0) * F);
    if (hidden_norm)
      for (int64_t t = t0; t < t1; t++) k.rmsnorm(g + t * F, hidden_norm, eps, g + t * F, F);
  });
  linear(pool, k, g, F, T, down, bd, y, H);
}

void linear_group(ThreadPool* pool, const KernelTable& k, const float* x, int64_t ldx, int64_t T, const LinearOut* outs,
                  int n) {
  EF_CHECK(n >= 1, "linear_group: no outputs");
  const int64_t K = outs[0].W->shape.size() == 2 ? outs[0].W->shape[1] : -1;
  const bool quant = is_quantized(outs[0].W->dtype), row_scaled = outs[0].W->row_scaled;
  for (int i = 0; i < n; i++) {
    const Tensor& W = *outs[i].W;
    EF_CHECK(W.dim() == 2 && W.rows_contiguous(), W.describe() + ": linear needs a 2-D weight with contiguous rows");
    EF_CHECK(is_weight(W.dtype), W.describe() + ": unsupported weight dtype " + dtype_name(W.dtype));
    if (is_quantized(W.dtype))
      EF_CHECK(W.shape[1] % dtype_block(W.dtype) == 0, W.describe() + ": rows must be whole blocks");
    const bool own_x = outs[i].x && outs[i].x != x;
    if (W.shape[1] != K || is_quantized(W.dtype) != quant || W.row_scaled != row_scaled || (own_x && row_scaled)) {
      for (int j = 0; j < n; j++) {  // not one group: one product at a time
        LinearOut o = outs[j];
        const float* xj = o.x ? o.x : x;
        o.x = nullptr;
        linear_group(pool, k, xj, ldx, T, &o, 1);
      }
      return;
    }
  }
  // each output's input: the group's x or its own, quantized once per distinct input
  std::vector<const float*> xs(n);
  std::vector<int> slot(n);
  int distinct = 0;
  for (int i = 0; i < n; i++) {
    xs[i] = outs[i].x ? outs[i].x : x;
    slot[i] = distinct;
    for (int j = 0; j < i; j++)
      if (xs[j] == xs[i]) {
        slot[i] = slot[j];
        break;
      }
    if (slot[i] == distinct) distinct++;
  }
  // one index space over every output's rows, each padded to whole panels, so that a chunk of the pool
  // never splits a panel; one parallel region for the group
  std::vector<int64_t> off(n + 1, 0);
  for (int i = 0; i < n; i++) off[i + 1] = off[i] + (outs[i].W->shape[0] + kPanel - 1) / kPanel * kPanel;
  const int64_t total = off[n];
  const bool par = pool && pool->size() > 1 && total * K * std::max<int64_t>(T, 1) >= (1 << 15);
  // f(slot, row, t) for every row t of each distinct input (a shared x converted once for all its outputs), over
  // the pool where the rows are many
  const auto each_input_row = [&](auto&& f) {
    for (int i = 0, done = 0; i < n; i++) {
      if (slot[i] != done) continue;  // (an input seen before)
      const float* xi = xs[i];
      const int s = slot[i];
      const auto rows = [&](int, int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; t++) f(s, xi + t * ldx, t);
      };
      if (par && T >= 4) pool->parallel_for(T, 1, rows);
      else rows(0, 0, T);
      done++;
    }
  };
  // block-quantized panels of a long prompt where the ISA decodes them to bf16 (KernelTable::qmatmul_panel_bf16x):
  // the activations rounded to bf16 tiles as bf16 weights take them, not quantized to 8 bits
  bool qbf16 = quant && !row_scaled && k.qbf16x_from > 0 && T >= k.qbf16x_from && K % 32 == 0;
  for (int i = 0; qbf16 && i < n; i++) qbf16 = outs[i].W->packed && k.qmatmul_panel_bf16x[(int)outs[i].W->dtype];
  const BlockQ8* xp = nullptr;
  const int8_t* rq = nullptr;  // row-scaled weights: activations in token groups (quant.h: quantize_rows_q8)
  const float* rd = nullptr;
  const int32_t* rs = nullptr;
  if (quant && row_scaled) {
    const int64_t groups = (T + kRowGroup - 1) / kRowGroup;
    thread_local std::vector<int8_t> q;
    thread_local std::vector<float> d;
    thread_local std::vector<int32_t> s;
    if ((int64_t)q.size() < groups * kRowGroup * K) q.resize(groups * kRowGroup * K);
    if ((int64_t)d.size() < T) {
      d.resize(T);
      s.resize(T);
    }
    // pointers, not the thread_local vectors: a worker naming them would reach its own, empty ones
    int8_t* qw = q.data();
    float* dw = d.data();
    int32_t* sw = s.data();
    auto run = [&](int, int64_t g0, int64_t g1) {
      k.quantize_q8_rows(x, ldx, g0 * kRowGroup, std::min(T, g1 * kRowGroup), K, qw, dw, sw);
    };
    if (par && groups > 1) pool->parallel_for(groups, 1, run);
    else run(0, 0, groups);
    rq = qw;
    rd = dw;
    rs = sw;
  } else if (quant && !qbf16) {
    // activations quantized once per row to 8-bit blocks, shared by every thread and every output of that input
    const int64_t nb = K / kQ8Block;
    thread_local std::vector<BlockQ8> xq;
    if ((int64_t)xq.size() < distinct * T * nb) xq.resize(distinct * T * nb);
    BlockQ8* xw = xq.data();
    each_input_row([&](int s, const float* row, int64_t t) { k.quantize_q8(row, xw + ((int64_t)s * T + t) * nb, K); });
    xp = xw;
  }
  // bf16 panels where the ISA multiplies bf16 activations: each distinct input rounded once for the group (each
  // product of each thread rounded all its rows again: 15% of a 512-token bf16 prompt on AMX)
  const uint16_t* xb = nullptr;
  int64_t xb_rows = T;  // (per distinct input: T, or whole blocks of tiles)
  if ((!quant && k.matmul_panel_bf16x && T > 1) || qbf16) {
    bool all = true;
    for (int i = 0; i < n; i++) all = all && outs[i].W->packed && (qbf16 || outs[i].W->dtype == DType::BF16);
    if (all) {
      const bool tiles = qbf16 || (k.bf16x_tiles_from > 0 && T >= k.bf16x_tiles_from && K % 32 == 0);
      if (tiles) xb_rows = (T + kBf16TileTokens - 1) / kBf16TileTokens * kBf16TileTokens;
      thread_local std::vector<uint16_t> xbuf;  // (on a 64-byte line: a tile row read across two lines costs two)
      if ((int64_t)xbuf.size() < distinct * xb_rows * K + 32) xbuf.resize(distinct * xb_rows * K + 32);
      uint16_t* xw = xbuf.data() + (64 - (uintptr_t)xbuf.data() % 64) % 64 / 2;
      each_input_row([&](int s, const float* row, int64_t t) {
        uint16_t* dst = xw + (int64_t)s * xb_rows * K;
        if (!tiles) return k.f32_to_bf16(row, dst + t * K, K);
        for (int64_t j = 0; j < K / 32; j++) k.f32_to_bf16(row + 32 * j, dst + bf16_tile_at(t, j, K), 32);
      });
      if (tiles)  // (the last block's rows past T: zero)
        for (int s = 0; s < distinct; s++)
          for (int64_t t = T; t < xb_rows; t++)
            for (int64_t j = 0; j < K / 32; j++)
              std::memset(xw + (int64_t)s * xb_rows * K + bf16_tile_at(t, j, K), 0, 64);
      xb = xw;
    }
  }
  auto product = [&](int i, int64_t o0, int64_t o1) {
    const LinearOut& o = outs[i];
    const Tensor& W = *o.W;
    const bool scaled = W.scale != 1.f;  // (BitNet's scale per matrix: the product scaled, then the bias added)
    const float* bias = scaled ? nullptr : o.bias;
    if (W.row_scaled) {
      const KernelTable& kr = k.q8_0_rows ? k : kernels_for(Isa::Generic);
      (W.ternary ? kr.q8_0_rows_ternary : kr.q8_0_rows)(rq, rd, rs, W.data, bias, o.y, o.ldy, T, o0, o1, K);
    } else if (qbf16) {
      k.qmatmul_panel_bf16x[(int)W.dtype](xb + (int64_t)slot[i] * xb_rows * K, K, W.data, 0, bias, o.y, o.ldy, T, o0,
                                          o1, K);
    } else if (quant) {
      auto fn = W.packed ? panel_kernel(k, &KernelTable::qmatmul_panel, W.dtype) : k.qmatmul[(int)W.dtype];
      EF_CHECK(fn, W.describe() + ": no kernel for " + dtype_name(W.dtype) + (W.packed ? " panels" : ""));
      fn(xp + (int64_t)slot[i] * T * (K / kQ8Block), K / kQ8Block, W.data, W.packed ? 0 : W.row_bytes(), bias, o.y,
         o.ldy, T, o0, o1, K);
    } else if (xb) {
      k.matmul_panel_bf16x(xb + (int64_t)slot[i] * xb_rows * K, K, W.data, 0, bias, o.y, o.ldy, T, o0, o1, K);
    } else if (W.packed) {
      auto fn = panel_kernel(k, &KernelTable::matmul_panel, W.dtype);
      EF_CHECK(fn, W.describe() + ": no kernel for " + dtype_name(W.dtype) + " panels");
      fn(xs[i], ldx, W.data, 0, bias, o.y, o.ldy, T, o0, o1, K);
    } else {
      k.matmul[(int)W.dtype](xs[i], ldx, W.data, W.row_stride_elems(), bias, o.y, o.ldy, T, o0, o1, K);
    }
    if (scaled)
      for (int64_t t = 0; t < T; t++) {
        float* yt = o.y + t * o.ldy;
        for (int64_t r = o0; r < o1; r++) yt[r] = yt[r] * W.scale + (o.bias ? o.bias[r] : 0.f);
      }
  };
  auto range = [&](int64_t b, int64_t e) {
    for (int i = 0; i < n; i++) {
      const int64_t lo = std::max(b, off[i]) - off[i], hi = std::min(e, off[i + 1]) - off[i];
      const int64_t O = outs[i].W->shape[0];
      if (lo < std::min(hi, O)) product(i, lo, std::min(hi, O));
    }
  };
  if (!par) range(0, total);
  else pool->parallel_for(total, kPanel, [&](int, int64_t b, int64_t e) { range(b, e); });
}

void linear(ThreadPool* pool, const KernelTable& k, const float* x, int64_t ldx, int64_t T, const Tensor& W,
            const float* bias, float* y, int64_t ldy) {
  const LinearOut o{&W, bias, y, ldy};
  linear_group(pool, k, x, ldx, T, &o, 1);
}

void embedding(const KernelTable& k, const Tensor& table, const int32_t* ids, int64_t T, float* out) {
  const int64_t rows = table.shape[0], H = table.shape[1];
  const int64_t stride = table.row_bytes();
  auto conv = k.to_f32[(int)table.dtype];
  std::vector<uint8_t> row(table.packed ? dtype_bytes(table.dtype, H) : 0);  // (a tied head's panels: one row back)
  for (int64_t t = 0; t < T; t++) {
    if (ids[t] < 0 || ids[t] >= rows)
      throw ValueError("token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                       " is outside the vocabulary [0, " + std::to_string(rows) + ")");
    if (table.packed) {
      panel_row(table, ids[t], row.data());
      conv(row.data(), out + t * H, H);
    } else {
      conv((const uint8_t*)table.data + ids[t] * stride, out + t * H, H);
    }
  }
}

void rope(float* x, const float* c, const float* s, size_t half, RopeStyle style) {
  const size_t step = style == RopeStyle::Half ? 1 : 2, other = style == RopeStyle::Half ? half : 1;
  for (size_t i = 0; i < half; i++) {
    float* p = x + i * step;
    const float a = p[0], b = p[other];
    p[0] = a * c[i] - b * s[i];
    p[other] = b * c[i] + a * s[i];
  }
}

}  // namespace ops
}  // namespace ef
