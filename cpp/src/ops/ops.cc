#include "edgeformer/ops.h"

#include <algorithm>
#include <vector>

#include "edgeformer/quant.h"

#include "edgeformer/errors.h"

namespace ef {
namespace ops {

void linear(ThreadPool* pool, const KernelTable& k, const float* x, int64_t ldx, int64_t T, const Tensor& W,
            const float* bias, float* y, int64_t ldy) {
  EF_CHECK(W.dim() == 2 && W.rows_contiguous(), W.describe() + ": linear needs a 2-D weight with contiguous rows");
  EF_CHECK(is_weight(W.dtype), W.describe() + ": unsupported weight dtype " + dtype_name(W.dtype));
  if (is_quantized(W.dtype)) {
    // activations quantized once per row to 8-bit blocks, shared by every thread
    const int64_t O = W.shape[0], K = W.shape[1], nb = K / kQ8Block;
    EF_CHECK(K % dtype_block(W.dtype) == 0, W.describe() + ": rows must be whole blocks");
    thread_local std::vector<BlockQ8> xq;
    if ((int64_t)xq.size() < T * nb) xq.resize(T * nb);
    BlockQ8* xw = xq.data();
    const bool par = pool && pool->size() > 1 && O * K * std::max<int64_t>(T, 1) >= (1 << 15);
    if (par && T >= 4)
      pool->parallel_for(T, 1, [&](int, int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; t++) k.quantize_q8(x + t * ldx, xw + t * nb, K);
      });
    else
      for (int64_t t = 0; t < T; t++) k.quantize_q8(x + t * ldx, xw + t * nb, K);
    // panels: this ISA's kernel, else the generic one (a model packed at load, then set_isa() to another)
    auto fn = W.packed ? (k.qmatmul_panel[(int)W.dtype] ? k.qmatmul_panel[(int)W.dtype]
                                                         : kernels_for(Isa::Generic).qmatmul_panel[(int)W.dtype])
                       : k.qmatmul[(int)W.dtype];
    EF_CHECK(fn, W.describe() + ": no kernel for " + dtype_name(W.dtype) + (W.packed ? " panels" : ""));
    const BlockQ8* xp = xw;
    const int64_t rb = W.packed ? 0 : W.row_bytes();
    if (!par) {
      fn(xp, nb, W.data, rb, bias, y, ldy, T, 0, O, K);
      return;
    }
    pool->parallel_for(O, kPanel, [&](int, int64_t o0, int64_t o1) { fn(xp, nb, W.data, rb, bias, y, ldy, T, o0, o1, K); });
    return;
  }
  const int64_t O = W.shape[0], K = W.shape[1], ldw = W.row_stride_elems();
  auto fn = k.matmul[(int)W.dtype];
  if (!pool || pool->size() == 1 || O * K * std::max<int64_t>(T, 1) < (1 << 15)) {
    fn(x, ldx, W.data, ldw, bias, y, ldy, T, 0, O, K);
    return;
  }
  // split the output rows; chunks are multiples of 16 rows so every ISA's register tile stays whole
  pool->parallel_for(O, 16, [&](int, int64_t o0, int64_t o1) { fn(x, ldx, W.data, ldw, bias, y, ldy, T, o0, o1, K); });
}

void embedding(const KernelTable& k, const Tensor& table, const int32_t* ids, int64_t T, float* out) {
  const int64_t rows = table.shape[0], H = table.shape[1];
  const int64_t stride = table.row_bytes();
  auto conv = k.to_f32[(int)table.dtype];
  for (int64_t t = 0; t < T; t++) {
    if (ids[t] < 0 || ids[t] >= rows)
      throw ValueError("token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                       " is outside the vocabulary [0, " + std::to_string(rows) + ")");
    conv((const uint8_t*)table.data + ids[t] * stride, out + t * H, H);
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
