// Memory-mapped safetensors reader: one file or the shards of a checkpoint merged into one map.
// Every offset and size is checked against the file's length before use; tensors are zero-copy views.
#pragma once
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "edgeformer/tensor.h"

namespace ef {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Lets the OS drop the resident pages wholly inside [p, p + n) (read again from the file if touched):
  // for data copied elsewhere at load, so that it is not counted twice in resident memory.
  void drop_pages(const void* p, size_t n) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  void* handle_ = nullptr;  // platform mapping handle
};

class TensorMap {
 public:
  // Opens and validates each file; a tensor name present in two files is an error.
  static TensorMap open_safetensors(const std::vector<std::string>& paths);
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const Tensor& get(const std::string& name) const;  // throws ValueError naming the missing tensor
  std::vector<std::string> names() const;
  // consumable: an owned copy (a weight derived at load) that a Model may erase once it has made its own
  // (Model's `consume` argument), so that the two are not held at once.
  void add(const std::string& name, Tensor t, bool consumable = false);
  bool consumable(const std::string& name) const { return consumable_.count(name) != 0; }
  void erase(const std::string& name) {
    tensors_.erase(name);
    consumable_.erase(name);
  }
  // Adds `name` as a zero-copy view of rows [r0, r1) of tensor `src` (fused QKV matrices of GGUF files).
  void add_rows_view(const std::string& name, const std::string& src, int64_t r0, int64_t r1);
  // Adds name as a zero-copy view of src[index]: one matrix (or vector) of a stacked tensor (GGUF's experts,
  // [n, rows, K], and their biases, [n, rows]).
  void add_index_view(const std::string& name, const std::string& src, int64_t index);
  size_t size() const { return tensors_.size(); }

 private:
  std::map<std::string, Tensor> tensors_;
  std::set<std::string> consumable_;
};

}  // namespace ef
