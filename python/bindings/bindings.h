// Shared declarations for the pybind11 module: one register_<area>.cc each.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

namespace ef_py {
void register_cpu(py::module_& m);
void register_tensor(py::module_& m);
void register_ops(py::module_& m);
void register_model(py::module_& m);
}  // namespace ef_py
