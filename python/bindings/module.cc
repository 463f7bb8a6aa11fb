// The _core extension module. ef::ValueError derives from std::invalid_argument and becomes Python's
// ValueError; ef::Error (std::runtime_error) becomes RuntimeError (pybind11's standard translation).
#include "bindings.h"

#include <cstring>
#include <mutex>

#include "edgeformer/errors.h"

#if !defined(_WIN32)
#include <signal.h>
#endif

namespace ef_py {

namespace {
std::mutex g_mu;
int g_depth = 0;
#if !defined(_WIN32)
struct sigaction g_old;
extern "C" void on_sigint(int sig) {
  ef::request_interrupt();
  // chain to Python's handler so its KeyboardInterrupt is pending when the call returns
  if (!(g_old.sa_flags & SA_SIGINFO) && g_old.sa_handler != SIG_IGN && g_old.sa_handler != SIG_DFL && g_old.sa_handler)
    g_old.sa_handler(sig);
}
#endif
}  // namespace

InterruptScope::InterruptScope() {
#if !defined(_WIN32)
  std::lock_guard<std::mutex> lk(g_mu);
  if (g_depth++ == 0) {
    ef::take_interrupt();  // a stale request from before this call does not count
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &g_old);
  }
#endif
}

InterruptScope::~InterruptScope() {
#if !defined(_WIN32)
  std::lock_guard<std::mutex> lk(g_mu);
  if (--g_depth == 0) sigaction(SIGINT, &g_old, nullptr);
#endif
}

}  // namespace ef_py

PYBIND11_MODULE(_core, m) {
  m.doc() = "edgeformer C++ core";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ef::Interrupted&) {
      if (PyErr_CheckSignals() == 0) PyErr_SetNone(PyExc_KeyboardInterrupt);
    }
  });
  ef_py::register_cpu(m);
  ef_py::register_tensor(m);
  ef_py::register_ops(m);
  ef_py::register_model(m);
  ef_py::register_cuda(m);
}
