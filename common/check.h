// Error checking for library code: LT_CHECK throws longtune::Error carrying file:line and a message
// built from its arguments (fmt-style). Library code never exits; only main() turns an Error into
// an exit code. Not for hot loops over elements: checks here are for inputs, configs and shapes.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace longtune {

// The one exception type longtune throws for bad input, bad config or a failed invariant.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
}  // namespace detail

}  // namespace longtune

// LT_CHECK(cond, "format {}", args...): throws longtune::Error("message (at file:line)") if !cond.
#define LT_CHECK(cond, ...)                                                                  \
  do {                                                                                       \
    if (!(cond)) [[unlikely]] {                                                              \
      ::longtune::detail::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__));       \
    }                                                                                        \
  } while (0)

// LT_FAIL("format {}", args...): unconditional throw.
#define LT_FAIL(...) ::longtune::detail::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
