// GGUF (llama.cpp's file format) reader: metadata and memory-mapped tensor views. Every count, length,
// offset and size is checked against the file before use; nothing is allocated from a size the file claims
// until it has been checked to fit.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "edgeformer/json.h"
#include "edgeformer/safetensors.h"

namespace ef {

struct GGUFFile {
  std::string path;
  uint32_t version = 0;
  uint64_t alignment = 32;
  std::vector<std::pair<std::string, Json>> metadata;  // in file order; integers keep is_int
  std::vector<std::string> tensor_order;               // tensor names in file order
  TensorMap tensors;                                   // views into the mapped file

  static GGUFFile open(const std::string& path);
};

// GGML type ids of the tensor types edgeformer reads and writes.
int ggml_type_of(DType t);  // -1 if none

}  // namespace ef
