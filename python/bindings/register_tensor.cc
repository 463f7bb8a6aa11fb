#include <cstring>

#include "bindings.h"
#include "edgeformer/errors.h"
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
    case ef::DType::Q8_0: case ef::DType::Q4_0: case ef::DType::Q4_K: case ef::DType::Q6_K:
      return py::dtype::of<uint8_t>();  // raw blocks
  }
  throw ef::ValueError("no NumPy dtype");
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
      .value("i32", ef::DType::I32)
      .value("i64", ef::DType::I64)
      .value("u8", ef::DType::U8)
      .value("i8", ef::DType::I8)
      .value("i16", ef::DType::I16)
      .value("f64", ef::DType::F64)
      .value("bool", ef::DType::BOOL);

  py::class_<ef::Tensor>(m, "Tensor")
      .def_readonly("shape", &ef::Tensor::shape)
      .def_readonly("strides", &ef::Tensor::strides)
      .def_readonly("dtype", &ef::Tensor::dtype)
      .def_readonly("name", &ef::Tensor::name)
      .def_readonly("source", &ef::Tensor::source)
      .def("numpy", [](py::object self) {
        // zero-copy view; bf16 comes back as its uint16 bits; keeps the tensor (and its file) alive
        const ef::Tensor& t = self.cast<const ef::Tensor&>();
        std::vector<py::ssize_t> shape(t.shape.begin(), t.shape.end()), strides(t.strides.begin(), t.strides.end());
        if (ef::is_quantized(t.dtype)) {  // quantized rows come back as their raw bytes: [..., bytes per row]
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
                           const std::string& source) {
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
        m.add(name, std::move(t));
      }, py::arg("name"), py::arg("array"), py::arg("dtype"), py::arg("source") = "")
      .def("names", &ef::TensorMap::names)
      .def("get", &ef::TensorMap::get, py::arg("name"), py::return_value_policy::copy)
      .def("__contains__", &ef::TensorMap::contains)
      .def("__len__", &ef::TensorMap::size);
}

}  // namespace ef_py
