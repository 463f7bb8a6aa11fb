// A small strict JSON reader for file headers (safetensors). Limits depth and sizes; throws ValueError.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ef {

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool b = false;
  double num = 0;
  bool is_int = false;
  int64_t i = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;  // in file order

  const Json* find(const std::string& key) const;
  static Json parse(const char* data, size_t size, const std::string& what);
};

}  // namespace ef
