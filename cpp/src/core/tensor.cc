#include "edgeformer/tensor.h"

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <new>
#include <sstream>

#include "edgeformer/errors.h"

#if !defined(_WIN32)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace ef {

static std::atomic<bool> g_interrupt{false};
void request_interrupt() { g_interrupt.store(true, std::memory_order_relaxed); }
bool take_interrupt() { return g_interrupt.exchange(false, std::memory_order_relaxed); }
bool interrupt_pending() { return g_interrupt.load(std::memory_order_relaxed); }

Buffer::Buffer(size_t bytes) : size(bytes) {
  size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  if (rounded == 0) rounded = kAlign;
#if defined(_WIN32)
  data = _aligned_malloc(rounded, kAlign);
#else
  // Buffers of 1 MiB and more (weights, panels, the KV cache) are anonymous mappings of their own, unmapped when
  // freed: from malloc's heap, a weight freed at load (a copy made while loading) would stay resident behind the
  // ones allocated after it. Those of 4 MiB and more start on a 2 MiB boundary, as transparent huge pages where
  // the kernel allows: a decode step streams every weight once, and 4 KiB pages cost a TLB miss per row.
  const size_t huge = (size_t)2 << 20;
  if (rounded >= ((size_t)1 << 20)) {
    const bool big = rounded >= 2 * huge;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    rounded = (rounded + page - 1) / page * page;
    const size_t span = rounded + (big ? huge : 0);
    void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      const uintptr_t lo = (uintptr_t)p, start = big ? (lo + huge - 1) / huge * huge : lo;
      if (start > lo) munmap(p, start - lo);  // the slack before and after the aligned range
      if (lo + span > start + rounded) munmap((void*)(start + rounded), lo + span - start - rounded);
      data = (void*)start;
      mapped = rounded;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      // only the whole huge pages: a partly used one would be resident in full
      if (big) madvise(data, rounded / huge * huge, MADV_HUGEPAGE);
#endif
    }
  }
  // (small buffers; and large ones where the process has no mappings left, vm.max_map_count: a model of tens of
  // thousands of experts)
  if (!data && posix_memalign(&data, rounded >= 2 * huge ? huge : kAlign, rounded) != 0) data = nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (data && !mapped && rounded >= 2 * huge) madvise(data, rounded / huge * huge, MADV_HUGEPAGE);
#endif
#endif
  if (!data) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
}

Buffer::~Buffer() {
#if defined(_WIN32)
  _aligned_free(data);
#else
  if (mapped) munmap(data, mapped);
  else std::free(data);
#endif
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::Q8_0: return "q8_0";
    case DType::Q4_0: return "q4_0";
    case DType::Q4_K: return "q4_k";
    case DType::Q6_K: return "q6_k";
    case DType::Q4_1: return "q4_1";
    case DType::Q5_0: return "q5_0";
    case DType::Q5_1: return "q5_1";
    case DType::Q5_K: return "q5_k";
    case DType::Q3_K: return "q3_k";
    case DType::Q2_K: return "q2_k";
    case DType::IQ4_NL: return "iq4_nl";
    case DType::IQ4_XS: return "iq4_xs";
    case DType::IQ2_XXS: return "iq2_xxs";
    case DType::IQ2_XS: return "iq2_xs";
    case DType::IQ2_S: return "iq2_s";
    case DType::IQ3_XXS: return "iq3_xxs";
    case DType::IQ3_S: return "iq3_s";
    case DType::IQ1_S: return "iq1_s";
    case DType::IQ1_M: return "iq1_m";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
    case DType::I8: return "i8";
    case DType::I16: return "i16";
    case DType::F64: return "f64";
    case DType::BOOL: return "bool";
    case DType::MXFP4: return "mxfp4";
    case DType::F8_E4M3: return "f8_e4m3";
    case DType::TQ1_0: return "tq1_0";
    case DType::TQ2_0: return "tq2_0";
  }
  return "?";
}

DType parse_dtype(const std::string& s, const std::string& what) {
  if (s == "f32" || s == "float32" || s == "F32") return DType::F32;
  if (s == "f16" || s == "float16" || s == "F16" || s == "half") return DType::F16;
  if (s == "bf16" || s == "bfloat16" || s == "BF16") return DType::BF16;
  for (int i = kNumFloatDTypes; i < kNumWeightDTypes; i++) {  // the quantized types by name, either case
    std::string upper = dtype_name((DType)i);
    for (char& c : upper) c = (char)std::toupper((unsigned char)c);
    if (s == dtype_name((DType)i) || s == upper) return (DType)i;
  }
  throw ValueError(what + ": unknown dtype '" + s +
                   "' (expected f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, "
                   "iq4_xs, iq3_s, iq3_xxs, iq2_s, iq2_xs, iq2_xxs, iq1_m or iq1_s)");
}

std::string shape_to_string(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); i++) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

Tensor Tensor::empty(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : t.shape) {
    if (d < 0) throw ValueError("negative dimension in " + shape_to_string(t.shape));
    n *= d;
  }
  const int64_t blk = dtype_block(dtype);
  if (blk > 1 && (t.shape.empty() || t.shape.back() % blk != 0))
    throw ValueError(std::string("a ") + dtype_name(dtype) + " tensor needs rows of a multiple of " + std::to_string(blk) +
                     " elements, got shape " + shape_to_string(t.shape));
  auto buf = std::make_shared<Buffer>(dtype_bytes(dtype, n));
  t.data = buf->data;
  t.owner = buf;
  t.strides = contiguous_strides(dtype, t.shape);
  return t;
}

std::vector<int64_t> contiguous_strides(DType dtype, const std::vector<int64_t>& shape) {
  // block types: the last dimension's "stride" is the bytes of one block over its elements, rounded: only
  // whole rows are addressed, so what matters is the row stride (bytes of one row)
  std::vector<int64_t> strides(shape.size());
  if (shape.empty()) return strides;
  int64_t st = (int64_t)dtype_bytes(dtype, shape.back());
  strides.back() = dtype_block(dtype) == 1 ? (int64_t)dtype_size(dtype) : 0;
  for (int64_t i = (int64_t)shape.size() - 2; i >= 0; i--) {
    strides[i] = st;
    st *= shape[i];
  }
  return strides;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool Tensor::contiguous() const {
  if (dtype_block(dtype) > 1) return strides == contiguous_strides(dtype, shape);
  int64_t st = (int64_t)dtype_size(dtype);
  for (int64_t i = (int64_t)shape.size() - 1; i >= 0; i--) {
    if (shape[i] != 1 && strides[i] != st) return false;
    st *= shape[i];
  }
  return true;
}

bool Tensor::rows_contiguous() const {
  if (dtype_block(dtype) > 1) return true;  // blocks are always packed within a row
  return shape.empty() || shape.back() == 1 || strides.back() == (int64_t)dtype_size(dtype);
}

int64_t Tensor::row_stride_elems() const {
  if (shape.size() < 2) return shape.empty() ? 1 : shape[0];
  return strides[shape.size() - 2] / (int64_t)dtype_size(dtype);
}

int64_t Tensor::row_bytes() const {
  if (shape.size() < 2) return (int64_t)dtype_bytes(dtype, shape.empty() ? 1 : shape[0]);
  return strides[shape.size() - 2];
}

std::string Tensor::shape_str() const { return shape_to_string(shape); }

std::string Tensor::describe() const {
  std::string s = "tensor '" + (name.empty() ? std::string("<unnamed>") : name) + "'";
  if (!source.empty()) s += " in '" + source + "'";
  return s;
}

static float load_as_f32(const void* p, DType t) {
  switch (t) {
    case DType::F32: { float f; std::memcpy(&f, p, 4); return f; }
    case DType::F16: { uint16_t h; std::memcpy(&h, p, 2); return f16_to_f32(h); }
    case DType::BF16: { uint16_t h; std::memcpy(&h, p, 2); return bf16_to_f32(h); }
    default: throw ValueError("expected a float tensor");
  }
}

// Visits every element of a strided tensor in row-major order.
template <typename F>
static void for_each_elem(const Tensor& t, F f) {
  int64_t n = t.numel();
  if (n == 0) return;
  std::vector<int64_t> idx(t.shape.size(), 0);
  for (int64_t i = 0; i < n; i++) {
    int64_t off = 0;
    for (size_t d = 0; d < idx.size(); d++) off += idx[d] * t.strides[d];
    f(i, (const uint8_t*)t.data + off);
    for (int64_t d = (int64_t)idx.size() - 1; d >= 0; d--) {
      if (++idx[d] < t.shape[d]) break;
      idx[d] = 0;
    }
  }
}

Tensor Tensor::to_contiguous_f32() const {
  if (!is_float_weight(dtype)) throw ValueError(describe() + ": expected a float tensor, got " + dtype_name(dtype));
  Tensor out = Tensor::empty(DType::F32, shape);
  out.name = name;
  out.source = source;
  float* o = (float*)out.data;
  for_each_elem(*this, [&](int64_t i, const uint8_t* p) { o[i] = load_as_f32(p, dtype); });
  return out;
}

Tensor Tensor::converted(DType to) const {
  if (!is_float_weight(dtype) || !is_float_weight(to))
    throw ValueError(describe() + ": cannot convert " + dtype_name(dtype) + " to " + dtype_name(to));
  Tensor out = Tensor::empty(to, shape);
  out.name = name;
  out.source = source;
  uint8_t* o = (uint8_t*)out.data;
  for_each_elem(*this, [&](int64_t i, const uint8_t* p) {
    float f = load_as_f32(p, dtype);
    if (to == DType::F32) std::memcpy(o + 4 * i, &f, 4);
    else {
      uint16_t h = to == DType::F16 ? f32_to_f16(f) : f32_to_bf16(f);
      std::memcpy(o + 2 * i, &h, 2);
    }
  });
  return out;
}

}  // namespace ef
