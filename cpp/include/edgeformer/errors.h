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

// Throw ValueError unless cond holds: EF_CHECK(n > 0, "argument 'n' must be positive, got " + ...)
#define EF_CHECK(cond, msg)                                      \
  do {                                                           \
    if (!(cond)) throw ::ef::ValueError(msg);                    \
  } while (0)

}  // namespace ef
