#include "host.h"

#include <algorithm>
#include <string>

#include "edgeformer/quant.h"

namespace ef {
namespace cuda {

namespace {
constexpr size_t kStagingBytes = 64u << 20;
}

DType device_dtype(DType host) {
  switch (host) {
    case DType::F32: return DType::F16;
    case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0: case DType::Q4_K: case DType::Q6_K:
      return host;
    case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q5_K: case DType::Q3_K: case DType::Q2_K:
    case DType::IQ4_NL: case DType::IQ4_XS: case DType::IQ2_XXS: case DType::IQ2_XS: case DType::IQ2_S:
    case DType::IQ3_XXS: case DType::IQ3_S: case DType::IQ1_S: case DType::IQ1_M:
      return DType::F16;  // no device kernels of their own yet: dequantized at upload (as f32 weights are)
    default: throw ValueError(std::string("CUDA: no device layout for weights of type ") + dtype_name(host));
  }
}

DevMatrix Uploader::allocate(DType host, int64_t rows, int64_t cols, std::vector<DevBuffer>& owned) {
  DevMatrix m;
  m.dtype = device_dtype(host);
  m.rows = rows;
  m.cols = cols;
  EF_CHECK(rows > 0 && cols > 0, "CUDA upload: empty matrix");
  EF_CHECK(dtype_block(m.dtype) == 1 || cols % dtype_block(m.dtype) == 0,
           std::string("CUDA upload: ") + dtype_name(m.dtype) + " rows must be whole blocks");
  auto add = [&](size_t bytes) {
    owned.emplace_back(bytes);
    EF_CUDA_CHECK(cudaMemsetAsync(owned.back().get(), 0, bytes, s_));
    return owned.back().get();
  };
  switch (m.dtype) {
    case DType::F16:
    case DType::BF16:
      m.ld = (cols + 7) / 8 * 8;
      m.data = add((size_t)(rows * m.ld * 2));
      break;
    case DType::Q8_0:
    case DType::Q4_0:
      m.ld = cols;
      m.data = add((size_t)(rows * (m.dtype == DType::Q8_0 ? cols : cols / 2)));
      m.scales = static_cast<const uint16_t*>(add((size_t)(rows * (cols / 32) * 2)));
      break;
    default:  // q4_k, q6_k: as stored
      m.ld = (int64_t)dtype_bytes(m.dtype, cols);
      m.data = add((size_t)(rows * m.ld));
      break;
  }
  return m;
}

void Uploader::rows(const Tensor& t, const DevMatrix& dst, int64_t row0) {
  EF_CHECK(t.dim() == 2 && t.rows_contiguous(), t.describe() + ": CUDA upload needs a 2-D matrix with contiguous rows");
  const int64_t n = t.shape[0], cols = t.shape[1];
  EF_CHECK(cols == dst.cols && row0 >= 0 && row0 + n <= dst.rows && device_dtype(t.dtype) == dst.dtype,
           t.describe() + ": does not fit the device matrix");
  // quantized types without a device layout are dequantized here, then go up as f32 rows do
  const bool host_f32 = is_quantized(t.dtype) && dst.dtype == DType::F16;
  const size_t src_pitch = (size_t)t.row_bytes(), packed = host_f32 ? (size_t)cols * 4 : dtype_bytes(t.dtype, cols);
  const uint8_t* src = static_cast<const uint8_t*>(t.data);
  uint8_t* out = static_cast<uint8_t*>(const_cast<void*>(dst.data));
  switch (t.dtype) {
    case DType::F16:
    case DType::BF16:  // straight into the padded rows
      EF_CUDA_CHECK(cudaMemcpy2DAsync(out + (size_t)row0 * dst.ld * 2, (size_t)dst.ld * 2, src, src_pitch, packed,
                                      (size_t)n, cudaMemcpyHostToDevice, s_));
      return;
    case DType::Q4_K:
    case DType::Q6_K:
      EF_CUDA_CHECK(cudaMemcpy2DAsync(out + (size_t)row0 * dst.ld, (size_t)dst.ld, src, src_pitch, packed, (size_t)n,
                                      cudaMemcpyHostToDevice, s_));
      return;
    default:
      break;
  }
  // f32 -> f16, and q8_0 / q4_0 -> quants + scales: through a staging buffer, a chunk of rows at a time
  const int64_t chunk = std::max<int64_t>(1, (int64_t)(kStagingBytes / packed));
  uint8_t* stage = staging_.ensure_as<uint8_t>((size_t)std::min(chunk, n) * packed);
  std::vector<float> deq;
  for (int64_t r = 0; r < n; r += chunk) {
    const int64_t m = std::min(chunk, n - r);
    const uint8_t* from = src + (size_t)r * src_pitch;
    size_t pitch = src_pitch;
    if (host_f32) {
      deq.resize((size_t)(m * cols));
      for (int64_t i = 0; i < m; i++) dequantize_row(t.dtype, from + (size_t)i * src_pitch, deq.data() + i * cols, cols);
      from = reinterpret_cast<const uint8_t*>(deq.data());
      pitch = packed;
    }
    EF_CUDA_CHECK(cudaMemcpy2DAsync(stage, packed, from, pitch, packed, (size_t)m, cudaMemcpyHostToDevice, s_));
    if (host_f32) finish();  // deq is refilled by the next chunk
    const int64_t row = row0 + r;
    if (t.dtype == DType::F32 || host_f32) {
      f32_to_f16_rows(reinterpret_cast<const float*>(stage), cols, m, cols,
                      reinterpret_cast<uint16_t*>(out) + (size_t)row * dst.ld, dst.ld, s_);
    } else {
      const int64_t nb = cols / 32, qbytes = t.dtype == DType::Q8_0 ? 32 : 16;
      split_blocks(t.dtype, stage, m * nb, out + (size_t)(row * nb * qbytes),
                   const_cast<uint16_t*>(dst.scales) + (size_t)(row * nb), s_);
    }
  }
}

DevMatrix Uploader::matrix(const Tensor& t, std::vector<DevBuffer>& owned) {
  EF_CHECK(t.dim() == 2, t.describe() + ": expected a matrix");
  DevMatrix m = allocate(t.dtype, t.shape[0], t.shape[1], owned);
  rows(t, m, 0);
  return m;
}

DevMatrix Uploader::stacked(const std::vector<const Tensor*>& ts, std::vector<DevBuffer>& owned) {
  int64_t total = 0;
  for (const Tensor* t : ts) {
    EF_CHECK(t->dim() == 2 && t->shape[1] == ts[0]->shape[1] && t->dtype == ts[0]->dtype,
             t->describe() + ": cannot be stacked with " + ts[0]->describe());
    total += t->shape[0];
  }
  DevMatrix m = allocate(ts[0]->dtype, total, ts[0]->shape[1], owned);
  int64_t r = 0;
  for (const Tensor* t : ts) {
    rows(*t, m, r);
    r += t->shape[0];
  }
  return m;
}

const float* Uploader::floats(const float* host, int64_t n, std::vector<DevBuffer>& owned) {
  if (n <= 0) return nullptr;
  owned.emplace_back((size_t)n * sizeof(float));
  EF_CUDA_CHECK(cudaMemcpyAsync(owned.back().get(), host, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, s_));
  return owned.back().as<float>();
}

const float* Uploader::vec(const Tensor& t, std::vector<DevBuffer>& owned) {
  if (!t.data) return nullptr;
  if (t.dtype == DType::F32 && t.contiguous()) return floats(static_cast<const float*>(t.data), t.numel(), owned);
  const Tensor c = t.to_contiguous_f32();
  const float* p = floats(static_cast<const float*>(c.data), c.numel(), owned);
  finish();  // c is freed on return: the copy must be done
  return p;
}

void Uploader::finish() { EF_CUDA_CHECK(cudaStreamSynchronize(s_)); }

int64_t device_bytes(const DevMatrix& m) {
  switch (m.dtype) {
    case DType::F16: case DType::BF16: return m.rows * m.ld * 2;
    case DType::Q8_0: return m.rows * m.cols + m.rows * (m.cols / 32) * 2;
    case DType::Q4_0: return m.rows * m.cols / 2 + m.rows * (m.cols / 32) * 2;
    default: return m.rows * m.ld;
  }
}

SampleArgs sample_args(const SamplerOptions& o) {
  o.validate();
  SampleArgs a;
  a.repetition_penalty = o.repetition_penalty;
  a.greedy = o.temperature == 0.f;
  a.inv_temperature = a.greedy ? 1.f : 1.f / o.temperature;
  a.top_k = o.top_k;
  a.top_p = o.top_p;
  a.min_p = o.min_p;
  return a;
}

std::vector<int32_t> distinct_tokens(const int32_t* history, int64_t n) {
  std::vector<int32_t> seen(history, history + std::max<int64_t>(n, 0));
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  return seen;
}

}  // namespace cuda
}  // namespace ef
