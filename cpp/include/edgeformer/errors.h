// Errors that cross into Python. ValueError: the caller's input (a file, a tensor, an argument) is wrong.
// Error: anything else that went wrong at run time. Nothing in the library aborts.
#pragma once
#include <stdexcept>
#include <string>

namespace ef {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// A long call stopped because an interrupt (Ctrl-C) was requested; the bindings raise KeyboardInterrupt.
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

// Set (async-signal-safe) by the SIGINT hook the bindings install around long calls; checked between layers.
void request_interrupt();
bool take_interrupt();     // true once per request, clearing it
bool interrupt_pending();  // true while a request is pending (long loops bail out early, then throw)

// Throw ValueError unless cond holds: EF_CHECK(n > 0, "argument 'n' must be positive, got " + ...)
#define EF_CHECK(cond, msg)                                      \
  do {                                                           \
    if (!(cond)) throw ::ef::ValueError(msg);                    \
  } while (0)

}  // namespace ef
