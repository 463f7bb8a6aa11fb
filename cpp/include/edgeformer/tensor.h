// Tensors are views: a data pointer, a dtype, a shape and byte strides, plus a shared owner that keeps
// the memory alive (an aligned heap buffer or a memory-mapped file). A view never copies.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "edgeformer/dtype.h"

namespace ef {

class MappedFile;
class ThreadPool;
constexpr size_t kAlign = 64;

// 64-byte aligned heap buffer. Pages are not touched on allocation, so a large, mostly unused buffer
// (a KV cache sized for the full context) costs address space, not resident memory.
struct Buffer {
  explicit Buffer(size_t bytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data = nullptr;
  size_t size = 0;
  size_t mapped = 0;  // bytes mapped for it (large buffers are their own anonymous mappings), 0 if malloc'd
};

struct Tensor {
  std::shared_ptr<const void> owner;  // keeps the memory alive
  void* data = nullptr;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in bytes
  std::string name;              // where it came from, for error messages: "model.layers.0.mlp.up_proj.weight"
  std::string source;            // the file it came from, if any
  const MappedFile* mapped = nullptr;  // the memory-mapped file the data lies in (owner keeps it alive), if any
  bool packed = false;           // quantized rows repacked into panels (quant.h); shape stays [rows, K]
  bool row_scaled = false;       // packed q8_0 whose rows each share one scale: the row-scaled layout (quant.h)
  bool ternary = false;          // row_scaled whose values are all -1, 0 or 1: at 2 bits (the ternary layout, quant.h)
  // the matrix's values times this (BitNet's one scale per matrix, kept in f32 beside the rows' f16 scales of 1):
  // applied to the products' outputs (ops::linear_group)
  float scale = 1.f;

  static Tensor empty(DType dtype, std::vector<int64_t> shape);  // owned, contiguous, uninitialized
  int64_t dim() const { return (int64_t)shape.size(); }
  int64_t numel() const;
  size_t nbytes() const { return dtype_bytes(dtype, numel()); }
  bool contiguous() const;
  bool rows_contiguous() const;  // last dim has unit stride (rows may be strided)
  int64_t row_stride_elems() const;  // for a 2-D view with contiguous rows (plain types)
  int64_t row_bytes() const;         // bytes from one row to the next (any type)
  std::string shape_str() const;
  std::string describe() const;  // "tensor 'name' in 'file'"
  Tensor to_contiguous_f32() const;  // converts/copies into an owned f32 tensor
  Tensor converted(DType to) const;  // owned contiguous copy in another float dtype
  size_t storage_bytes() const;      // bytes of memory the data occupies (panels included)
};

// Quantized [rows, K] matrix <-> panels (quant.h). pack_panels needs packable(); a q8_0 matrix whose rows each
// share one scale (K <= kRowScaledMaxK) takes the row-scaled layout, at 2 bits a value where they are all -1, 0, 1. unpack_panels gives the stored row layout
// back, bit for bit.
Tensor pack_panels(const Tensor& t, ThreadPool* pool = nullptr);
Tensor unpack_panels(const Tensor& t);
// One row of a packed matrix in the stored row layout (row_bytes() bytes at dst): a tied head's embedding lookups.
void panel_row(const Tensor& t, int64_t row, uint8_t* dst);

std::string shape_to_string(const std::vector<int64_t>& s);
// A tensor's f32 data, or null where it has none (an optional bias or norm weight).
inline const float* fptr(const Tensor& t) { return t.data ? (const float*)t.data : nullptr; }
std::vector<int64_t> contiguous_strides(DType dtype, const std::vector<int64_t>& shape);

}  // namespace ef
