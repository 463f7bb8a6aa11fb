// Shared declarations for the pybind11 module: one register_<area>.cc each.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

namespace ef_py {
// While alive (around a long call with the GIL released), SIGINT also asks the C++ loops to stop between
// layers; Python's own handler still runs, so KeyboardInterrupt follows. Process-wide, reference-counted.
struct InterruptScope {
  InterruptScope();
  ~InterruptScope();
};

void register_cpu(py::module_& m);
void register_tensor(py::module_& m);
void register_ops(py::module_& m);
void register_model(py::module_& m);
void register_cuda(py::module_& m);
}  // namespace ef_py
