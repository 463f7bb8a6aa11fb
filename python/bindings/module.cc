// The _core extension module. ef::ValueError derives from std::invalid_argument and becomes Python's
// ValueError; ef::Error (std::runtime_error) becomes RuntimeError (pybind11's standard translation).
#include "bindings.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "edgeformer C++ core";
  ef_py::register_cpu(m);
  ef_py::register_tensor(m);
  ef_py::register_ops(m);
  ef_py::register_model(m);
}
