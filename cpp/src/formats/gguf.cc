// GGUF v2/v3, little-endian:
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv, n_kv x (string key, u32 type, value),
//   n_tensors x (string name, u32 n_dims, u64 dims[n_dims] (innermost first), u32 ggml type, u64 offset),
//   padding to `general.alignment` (default 32), tensor data (each at data start + offset, aligned).
// string = u64 length + bytes. Array value = u32 element type, u64 count, elements.
#include "edgeformer/gguf.h"

#include <cstring>
#include <limits>

#include "edgeformer/errors.h"

namespace ef {

namespace {

enum : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9,
  kU64 = 10, kI64 = 11, kF64 = 12
};

struct TypeEntry {
  int ggml;
  DType dtype;
};
const TypeEntry kTypes[] = {{0, DType::F32},   {1, DType::F16},   {2, DType::Q4_0},  {3, DType::Q4_1},  {6, DType::Q5_0},
                            {7, DType::Q5_1},  {8, DType::Q8_0},  {10, DType::Q2_K}, {11, DType::Q3_K}, {12, DType::Q4_K},
                            {13, DType::Q5_K}, {14, DType::Q6_K}, {20, DType::IQ4_NL}, {23, DType::IQ4_XS},
                            {16, DType::IQ2_XXS}, {17, DType::IQ2_XS}, {18, DType::IQ3_XXS}, {19, DType::IQ1_S},
                            {21, DType::IQ3_S}, {22, DType::IQ2_S}, {29, DType::IQ1_M},
                            {24, DType::I8},   {25, DType::I16},  {26, DType::I32}, {27, DType::I64},  {28, DType::F64},
                            {30, DType::BF16}, {39, DType::MXFP4},
                            {34, DType::TQ1_0}, {35, DType::TQ2_0}};

struct Cursor {
  const uint8_t* p;
  const uint8_t* begin;
  const uint8_t* end;
  const std::string& path;

  [[noreturn]] void fail(const std::string& msg) const {
    throw ValueError("'" + path + "': " + msg + " (at byte " + std::to_string(p - begin) + ")");
  }
  uint64_t left() const { return (uint64_t)(end - p); }
  template <typename T>
  T read(const char* what) {
    if (left() < sizeof(T)) fail(std::string("file truncated while reading ") + what);
    T v;
    std::memcpy(&v, p, sizeof(T));
    p += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    uint64_t n = read<uint64_t>(what);
    if (n > left()) fail(std::string(what) + ": string length " + std::to_string(n) + " runs past the end of the file");
    std::string s((const char*)p, (size_t)n);
    p += n;
    return s;
  }
  Json value(uint32_t type, const std::string& key, int depth) {
    Json j;
    switch (type) {
      case kU8: j.kind = Json::Number; j.is_int = true; j.i = read<uint8_t>("a value"); break;
      case kI8: j.kind = Json::Number; j.is_int = true; j.i = read<int8_t>("a value"); break;
      case kU16: j.kind = Json::Number; j.is_int = true; j.i = read<uint16_t>("a value"); break;
      case kI16: j.kind = Json::Number; j.is_int = true; j.i = read<int16_t>("a value"); break;
      case kU32: j.kind = Json::Number; j.is_int = true; j.i = read<uint32_t>("a value"); break;
      case kI32: j.kind = Json::Number; j.is_int = true; j.i = read<int32_t>("a value"); break;
      case kI64: j.kind = Json::Number; j.is_int = true; j.i = read<int64_t>("a value"); break;
      case kU64: {
        uint64_t v = read<uint64_t>("a value");
        j.kind = Json::Number;
        if (v <= (uint64_t)std::numeric_limits<int64_t>::max()) {
          j.is_int = true;
          j.i = (int64_t)v;
        } else {
          j.num = (double)v;
        }
        break;
      }
      case kF32: j.kind = Json::Number; j.num = read<float>("a value"); break;
      case kF64: j.kind = Json::Number; j.num = read<double>("a value"); break;
      case kBool: {
        uint8_t b = read<uint8_t>("a value");
        if (b > 1) fail("metadata '" + key + "': bool value " + std::to_string(b));
        j.kind = Json::Bool;
        j.b = b;
        break;
      }
      case kString: j.kind = Json::String; j.str = str("a string value"); break;
      case kArray: {
        if (depth > 3) fail("metadata '" + key + "': arrays nested too deep");
        uint32_t et = read<uint32_t>("an array type");
        uint64_t n = read<uint64_t>("an array length");
        static const uint64_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};  // minimum bytes per element
        if (et > kF64) fail("metadata '" + key + "': unknown array element type " + std::to_string(et));
        if (n > left() / sizes[et]) fail("metadata '" + key + "': array of " + std::to_string(n) + " elements does not fit the file");
        j.kind = Json::Array;
        j.arr.reserve((size_t)n);
        for (uint64_t i = 0; i < n; i++) j.arr.push_back(value(et, key, depth + 1));
        break;
      }
      default:
        fail("metadata '" + key + "': unknown value type " + std::to_string(type));
    }
    return j;
  }
};

}  // namespace

int ggml_type_of(DType t) {
  for (auto& e : kTypes)
    if (e.dtype == t) return e.ggml;
  return -1;
}

GGUFFile GGUFFile::open(const std::string& path) {
  auto file = std::make_shared<MappedFile>(path);
  GGUFFile g;
  g.path = path;
  Cursor c{file->data(), file->data(), file->data() + file->size(), path};
  if (file->size() < 4 || std::memcmp(file->data(), "GGUF", 4) != 0)
    throw ValueError("'" + path + "' is not a GGUF file (wrong magic)");
  c.p += 4;
  g.version = c.read<uint32_t>("the version");
  if (g.version != 2 && g.version != 3) {
    if (g.version == 0x02000000u || g.version == 0x03000000u)
      throw ValueError("'" + path + "': a big-endian GGUF file; edgeformer reads little-endian GGUF only");
    throw ValueError("'" + path + "': GGUF version " + std::to_string(g.version) + " is not supported (2 and 3 are)");
  }
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  if (n_kv > c.left() / 13) c.fail("metadata count " + std::to_string(n_kv) + " does not fit the file");
  for (uint64_t i = 0; i < n_kv; i++) {
    std::string key = c.str("a metadata key");
    uint32_t type = c.read<uint32_t>("a metadata type");
    Json v = c.value(type, key, 0);
    if (key == "general.alignment") {
      if (type != kU32 || v.i == 0 || (v.i & (v.i - 1)) != 0)
        c.fail("metadata 'general.alignment' must be a u32 power of two");
      g.alignment = (uint64_t)v.i;
    }
    g.metadata.emplace_back(std::move(key), std::move(v));
  }
  if (n_tensors > c.left() / 24) c.fail("tensor count " + std::to_string(n_tensors) + " does not fit the file");
  struct Info {
    std::string name;
    std::vector<int64_t> shape;
    DType dtype;
    uint64_t offset;
  };
  std::vector<Info> infos;
  infos.reserve((size_t)n_tensors);
  for (uint64_t i = 0; i < n_tensors; i++) {
    Info t;
    t.name = c.str("a tensor name");
    uint32_t nd = c.read<uint32_t>("a tensor's dimension count");
    if (nd == 0 || nd > 4) c.fail("tensor '" + t.name + "': " + std::to_string(nd) + " dimensions (1 to 4 allowed)");
    std::vector<int64_t> ne(nd);
    for (uint32_t d = 0; d < nd; d++) {
      uint64_t v = c.read<uint64_t>("a tensor dimension");
      if (v > (uint64_t)std::numeric_limits<int32_t>::max() * 16ull) c.fail("tensor '" + t.name + "': dimension too large");
      ne[d] = (int64_t)v;
    }
    uint32_t type = c.read<uint32_t>("a tensor type");
    bool known = false;
    for (auto& e : kTypes)
      if ((uint32_t)e.ggml == type) {
        t.dtype = e.dtype;
        known = true;
      }
    if (!known)
      c.fail("tensor '" + t.name + "': GGML type " + std::to_string(type) +
             " is not supported (supported: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, "
             "q6_k, iq4_nl, iq4_xs, iq3_s, iq3_xxs, iq2_s, iq2_xs, iq2_xxs, iq1_m, iq1_s, mxfp4, tq1_0, tq2_0 and integer types)");
    t.offset = c.read<uint64_t>("a tensor offset");
    t.shape.assign(ne.rbegin(), ne.rend());  // outermost first
    infos.push_back(std::move(t));
  }
  const uint64_t header_end = (uint64_t)(c.p - c.begin);
  const uint64_t data_start = (header_end + g.alignment - 1) / g.alignment * g.alignment;
  if (data_start > file->size() && n_tensors > 0) c.fail("the tensor data section starts past the end of the file");
  const uint64_t data_size = file->size() > data_start ? file->size() - data_start : 0;
  for (auto& t : infos) {
    const std::string where = "'" + path + "': tensor '" + t.name + "'";
    const int64_t blk = dtype_block(t.dtype);
    if (t.shape.back() % blk != 0)
      throw ValueError(where + ": rows of " + std::to_string(t.shape.back()) + " elements are not whole " +
                       dtype_name(t.dtype) + " blocks");
    uint64_t n = 1;
    for (int64_t d : t.shape) {
      if (d != 0 && n > std::numeric_limits<uint64_t>::max() / 256 / (uint64_t)d) throw ValueError(where + ": size overflows");
      n *= (uint64_t)d;
    }
    const uint64_t bytes = (uint64_t)dtype_bytes(t.dtype, (int64_t)n);
    if (t.offset % g.alignment != 0)
      throw ValueError(where + ": data offset " + std::to_string(t.offset) + " is not aligned to " + std::to_string(g.alignment));
    if (t.offset > data_size || bytes > data_size - t.offset)
      throw ValueError(where + ": data [" + std::to_string(t.offset) + ", +" + std::to_string(bytes) +
                       ") runs past the end of the file; the file is truncated");
    Tensor x;
    x.dtype = t.dtype;
    x.shape = t.shape;
    x.strides = contiguous_strides(t.dtype, t.shape);
    x.data = (void*)(file->data() + data_start + t.offset);
    x.owner = file;
    x.mapped = file.get();
    x.name = t.name;
    x.source = path;
    if (g.tensors.contains(t.name)) throw ValueError(where + ": appears twice");
    g.tensor_order.push_back(t.name);
    g.tensors.add(t.name, std::move(x));
  }
  return g;
}

}  // namespace ef
