#include <cstring>

#include "bindings.h"
#include "edgeformer/errors.h"
#include "edgeformer/gguf.h"
#include "edgeformer/safetensors.h"
#include "edgeformer/tensor.h"

namespace ef_py {

namespace {
py::dtype numpy_dtype(ef::DType t) {
  switch (t) {
    case ef::DType::F32: return py::dtype::of<float>();
    case ef::DType::F16: return py::dtype("float16");
    case ef::DType::BF16: return py::dtype::of<uint16_t>();  // raw bits: NumPy has no bfloat16
    case ef::DType::I32: return py::dtype::of<int32_t>();
    case ef::DType::I64: return py::dtype::of<int64_t>();
    case ef::DType::U8: return py::dtype::of<uint8_t>();
    case ef::DType::I8: return py::dtype::of<int8_t>();
    case ef::DType::I16: return py::dtype::of<int16_t>();
    case ef::DType::F64: return py::dtype::of<double>();
    case ef::DType::BOOL: return py::dtype::of<bool>();
    case ef::DType::F8_E4M3: return py::dtype::of<uint8_t>();  // raw bytes (python/edgeformer/fp8.py decodes them)
    default:
      if (ef::dtype_block(t) > 1) return py::dtype::of<uint8_t>();  // raw blocks
  }
  throw ef::ValueError("no NumPy dtype");
}
}  // namespace

namespace {
py::object json_to_py(const ef::Json& j) {
  switch (j.kind) {
    case ef::Json::Null: return py::none();
    case ef::Json::Bool: return py::bool_(j.b);
    case ef::Json::Number: return j.is_int ? py::object(py::int_(j.i)) : py::object(py::float_(j.num));
    case ef::Json::String: return py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(j.str.data(), (py::ssize_t)j.str.size(), "replace"));
    case ef::Json::Array: {
      py::list l;
      for (auto& e : j.arr) l.append(json_to_py(e));
      return l;
    }
    case ef::Json::Object: {
      py::dict d;
      for (auto& kv : j.obj) d[py::str(kv.first)] = json_to_py(kv.second);
      return d;
    }
  }
  return py::none();
}
}  // namespace

void register_tensor(py::module_& m) {
  py::enum_<ef::DType>(m, "DType")
      .value("f32", ef::DType::F32)
      .value("f16", ef::DType::F16)
      .value("bf16", ef::DType::BF16)
      .value("q8_0", ef::DType::Q8_0)
      .value("q4_0", ef::DType::Q4_0)
      .value("q4_k", ef::DType::Q4_K)
      .value("q6_k", ef::DType::Q6_K)
      .value("q4_1", ef::DType::Q4_1)
      .value("q5_0", ef::DType::Q5_0)
      .value("q5_1", ef::DType::Q5_1)
      .value("q5_k", ef::DType::Q5_K)
      .value("q3_k", ef::DType::Q3_K)
      .value("q2_k", ef::DType::Q2_K)
      .value("iq4_nl", ef::DType::IQ4_NL)
      .value("iq4_xs", ef::DType::IQ4_XS)
      .value("iq2_xxs", ef::DType::IQ2_XXS)
      .value("iq2_xs", ef::DType::IQ2_XS)
      .value("iq2_s", ef::DType::IQ2_S)
      .value("iq3_xxs", ef::DType::IQ3_XXS)
      .value("iq3_s", ef::DType::IQ3_S)
      .value("iq1_s", ef::DType::IQ1_S)
      .value("iq1_m", ef::DType::IQ1_M)
      .value("i32", ef::DType::I32)
      .value("i64", ef::DType::I64)
      .value("u8", ef::DType::U8)
      .value("i8", ef::DType::I8)
      .value("i16", ef::DType::I16)
      .value("f64", ef::DType::F64)
      .value("bool", ef::DType::BOOL)
      .value("mxfp4", ef::DType::MXFP4)
      .value("f8_e4m3", ef::DType::F8_E4M3)
      .value("tq1_0", ef::DType::TQ1_0)
      .value("tq2_0", ef::DType::TQ2_0);

  py::class_<ef::Tensor>(m, "Tensor")
      .def_readonly("shape", &ef::Tensor::shape)
      .def_readonly("strides", &ef::Tensor::strides)
      .def_readonly("dtype", &ef::Tensor::dtype)
      .def_readonly("name", &ef::Tensor::name)
      .def_readonly("source", &ef::Tensor::source)
      .def_readonly("scale", &ef::Tensor::scale, "the matrix's values times this (BitNet's scale per matrix; 1 otherwise)")
      .def("numpy", [](py::object self) {
        // zero-copy view; bf16 comes back as its uint16 bits; keeps the tensor (and its file) alive
        const ef::Tensor& t = self.cast<const ef::Tensor&>();
        std::vector<py::ssize_t> shape(t.shape.begin(), t.shape.end()), strides(t.strides.begin(), t.strides.end());
        if (ef::dtype_block(t.dtype) > 1) {  // block types' rows come back as their raw bytes: [..., bytes per row]
          shape.back() = (py::ssize_t)ef::dtype_bytes(t.dtype, t.shape.back());
          strides.back() = 1;
        }
        py::array a(numpy_dtype(t.dtype), shape, strides, t.data, self);
        a.attr("setflags")(py::arg("write") = false);
        return a;
      }, "A read-only NumPy view of the tensor (bf16 as uint16 bits).")
      .def("__repr__", [](const ef::Tensor& t) {
        return "Tensor('" + t.name + "', " + ef::dtype_name(t.dtype) + ", " + t.shape_str() + ")";
      });

  py::class_<ef::TensorMap>(m, "TensorMap")
      .def(py::init<>())
      .def_static("open_safetensors", &ef::TensorMap::open_safetensors, py::arg("paths"),
                  py::call_guard<py::gil_scoped_release>(),
                  "Memory-maps safetensors files (the shards of one checkpoint) into one map of tensor views.")
      .def("add_array", [](ef::TensorMap& m, const std::string& name, py::array a, ef::DType dtype,
                           const std::string& source, bool consumable) {
        // copies a NumPy array (derived in Python: a transposed or regrouped checkpoint tensor) into the map
        // plain types: an array of those elements; quantized types: uint8 [..., bytes per row]
        py::array c = py::module_::import("numpy").attr("ascontiguousarray")(a);
        std::vector<int64_t> shape(c.shape(), c.shape() + c.ndim());
        if (ef::is_quantized(dtype)) {
          if (c.itemsize() != 1 || shape.empty() || shape.back() % (int64_t)ef::dtype_block_bytes(dtype))
            throw ef::ValueError("tensor '" + name + "': expected uint8 rows of whole " + ef::dtype_name(dtype) + " blocks");
          shape.back() = shape.back() / (int64_t)ef::dtype_block_bytes(dtype) * ef::dtype_block(dtype);
        } else if ((size_t)c.itemsize() != ef::dtype_size(dtype)) {
          throw ef::ValueError("tensor '" + name + "': array element size does not match " + ef::dtype_name(dtype));
        }
        ef::Tensor t = ef::Tensor::empty(dtype, shape);
        std::memcpy(t.data, c.data(), t.nbytes());
        t.name = name;
        t.source = source;
        m.add(name, std::move(t), consumable);
      }, py::arg("name"), py::arg("array"), py::arg("dtype"), py::arg("source") = "", py::arg("consumable") = false,
      "consumable: a Model built with consume=True may erase it once it holds its own copy")
      .def("add_rows_view", &ef::TensorMap::add_rows_view, py::arg("name"), py::arg("src"), py::arg("r0"), py::arg("r1"),
           "Adds name as a zero-copy view of rows [r0, r1) of src.")
      .def("add_index_view", &ef::TensorMap::add_index_view, py::arg("name"), py::arg("src"), py::arg("index"),
           "Adds name as a zero-copy view of src[index] (one matrix of a 3-D tensor).")
      .def("drop_pages", [](const ef::TensorMap& m, const std::string& name) {
        const ef::Tensor& t = m.get(name);
        if (t.mapped && t.contiguous()) t.mapped->drop_pages(t.data, t.nbytes());
      }, py::arg("name"),
      "Lets the OS drop the resident file pages of a memory-mapped tensor that has been copied (read again if "
      "touched), so that the copy and the file are not both counted in resident memory.")
      .def("names", &ef::TensorMap::names)
      .def("get", &ef::TensorMap::get, py::arg("name"), py::return_value_policy::copy)
      .def_static("open_gguf", [](const std::string& path) {
        // -> (TensorMap of the file's tensors, {metadata key: value}, tensor names in file order, version)
        ef::GGUFFile g;
        {
          py::gil_scoped_release nogil;
          g = ef::GGUFFile::open(path);
        }
        py::dict meta;
        for (auto& kv : g.metadata)
          meta[py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(kv.first.data(), (py::ssize_t)kv.first.size(), "replace"))] =
              json_to_py(kv.second);
        return py::make_tuple(std::move(g.tensors), meta, g.tensor_order, g.version);
      }, py::arg("path"), "Reads a GGUF file: its tensors (memory-mapped views) and its metadata.")
      .def("__contains__", &ef::TensorMap::contains)
      .def("__len__", &ef::TensorMap::size);
}

}  // namespace ef_py
