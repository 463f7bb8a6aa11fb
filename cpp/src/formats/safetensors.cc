// safetensors: [u64 little-endian header size N][N bytes of JSON][data]. Header entries:
//   "name": {"dtype": "F16", "shape": [rows, cols], "data_offsets": [begin, end]}  (offsets into data)
#include "edgeformer/safetensors.h"

#include <limits>

#include "edgeformer/errors.h"
#include "edgeformer/json.h"

namespace ef {

namespace {

constexpr uint64_t kMaxHeader = 100ull << 20;  // the format's own limit is 100 MB

bool parse_st_dtype(const std::string& s, DType& t) {
  static const std::pair<const char*, DType> table[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"I32", DType::I32},
      {"I64", DType::I64}, {"U8", DType::U8},   {"I8", DType::I8},     {"I16", DType::I16},
      {"F64", DType::F64}, {"BOOL", DType::BOOL}, {"F8_E4M3", DType::F8_E4M3}};
  for (auto& e : table)
    if (s == e.first) { t = e.second; return true; }
  return false;
}

void read_file(const std::shared_ptr<MappedFile>& file, std::map<std::string, Tensor>& out) {
  const std::string& path = file->path();
  const size_t size = file->size();
  if (size < 8) throw ValueError("'" + path + "' is not a safetensors file: " + std::to_string(size) + " bytes, too short for a header");
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | file->data()[i];
  if (n > kMaxHeader || n > size - 8)
    throw ValueError("'" + path + "': safetensors header size " + std::to_string(n) + " does not fit the file (" +
                     std::to_string(size) + " bytes); the file is truncated or not safetensors");
  const char* hdr = (const char*)file->data() + 8;
  Json j = Json::parse(hdr, (size_t)n, "'" + path + "' header");
  if (j.kind != Json::Object) throw ValueError("'" + path + "': safetensors header is not a JSON object");
  const uint8_t* base = file->data() + 8 + n;
  const uint64_t data_size = size - 8 - n;
  for (auto& kv : j.obj) {
    const std::string& name = kv.first;
    if (name == "__metadata__") continue;
    const Json& e = kv.second;
    std::string where = "'" + path + "': tensor '" + name + "'";
    if (e.kind != Json::Object) throw ValueError(where + ": header entry is not an object");
    const Json* jd = e.find("dtype");
    const Json* js = e.find("shape");
    const Json* jo = e.find("data_offsets");
    if (!jd || jd->kind != Json::String) throw ValueError(where + ": missing or non-string 'dtype'");
    if (!js || js->kind != Json::Array) throw ValueError(where + ": missing or non-array 'shape'");
    if (!jo || jo->kind != Json::Array || jo->arr.size() != 2) throw ValueError(where + ": 'data_offsets' must be [begin, end]");
    Tensor t;
    if (!parse_st_dtype(jd->str, t.dtype)) throw ValueError(where + ": unknown dtype '" + jd->str + "'");
    uint64_t numel = 1;
    for (auto& d : js->arr) {
      if (!d.is_int || d.i < 0) throw ValueError(where + ": shape entries must be non-negative integers");
      if (d.i != 0 && numel > std::numeric_limits<uint64_t>::max() / (uint64_t)d.i)
        throw ValueError(where + ": shape overflows");
      numel *= (uint64_t)d.i;
      t.shape.push_back(d.i);
    }
    for (auto& d : jo->arr)
      if (!d.is_int || d.i < 0) throw ValueError(where + ": data_offsets must be non-negative integers");
    uint64_t b = (uint64_t)jo->arr[0].i, en = (uint64_t)jo->arr[1].i;
    if (en < b) throw ValueError(where + ": data_offsets end < begin");
    if (en > data_size)
      throw ValueError(where + ": data_offsets [" + std::to_string(b) + ", " + std::to_string(en) +
                       "] point past the end of the data (" + std::to_string(data_size) + " bytes); the file is truncated");
    uint64_t esz = dtype_size(t.dtype);
    if (numel > std::numeric_limits<uint64_t>::max() / esz || numel * esz != en - b)
      throw ValueError(where + ": shape " + shape_to_string(t.shape) + " of " + jd->str + " needs " +
                       std::to_string(numel * esz) + " bytes but data_offsets span " + std::to_string(en - b));
    t.data = (void*)(base + b);
    t.owner = file;
    t.mapped = file.get();
    t.strides.resize(t.shape.size());
    int64_t st = (int64_t)esz;
    for (int64_t i = (int64_t)t.shape.size() - 1; i >= 0; i--) {
      t.strides[i] = st;
      st *= t.shape[i];
    }
    t.name = name;
    t.source = path;
    if (out.count(name)) throw ValueError(where + ": tensor appears twice (also in '" + out[name].source + "')");
    out.emplace(name, std::move(t));
  }
}

}  // namespace

TensorMap TensorMap::open_safetensors(const std::vector<std::string>& paths) {
  TensorMap m;
  for (auto& p : paths) read_file(std::make_shared<MappedFile>(p), m.tensors_);
  return m;
}

const Tensor& TensorMap::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw ValueError("tensor '" + name + "' is missing from the checkpoint");
  return it->second;
}

std::vector<std::string> TensorMap::names() const {
  std::vector<std::string> v;
  for (auto& kv : tensors_) v.push_back(kv.first);
  return v;
}

void TensorMap::add(const std::string& name, Tensor t, bool consumable) {
  tensors_[name] = std::move(t);
  if (consumable) consumable_.insert(name);
  else consumable_.erase(name);
}

void TensorMap::add_rows_view(const std::string& name, const std::string& src, int64_t r0, int64_t r1) {
  const Tensor& t = get(src);
  if (t.dim() < 1 || r0 < 0 || r1 < r0 || r1 > t.shape[0])
    throw ValueError(t.describe() + ": rows [" + std::to_string(r0) + ", " + std::to_string(r1) + ") are outside its shape " +
                     t.shape_str());
  Tensor v = t;
  v.data = (uint8_t*)t.data + r0 * t.strides[0];
  v.shape[0] = r1 - r0;
  v.name = t.name + "[" + std::to_string(r0) + ":" + std::to_string(r1) + "]";
  tensors_[name] = std::move(v);
}

void TensorMap::add_index_view(const std::string& name, const std::string& src, int64_t index) {
  const Tensor& t = get(src);
  if (t.dim() < 2 || index < 0 || index >= t.shape[0])
    throw ValueError(t.describe() + ": has no entry " + std::to_string(index) + " (shape " + t.shape_str() +
                     ", expected [n, ...])");
  Tensor v = t;
  v.data = (uint8_t*)t.data + index * t.strides[0];
  v.shape.erase(v.shape.begin());
  v.strides.erase(v.strides.begin());
  v.name = t.name + "[" + std::to_string(index) + "]";
  tensors_[name] = std::move(v);
}

}  // namespace ef
