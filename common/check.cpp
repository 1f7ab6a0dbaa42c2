#include "common/check.h"

#include <cstring>

namespace longtune::detail {

void throw_error(const char* file, int line, const std::string& message) {
  const char* base = std::strrchr(file, '/');
  throw Error(fmt::format("{} (at {}:{})", message, base ? base + 1 : file, line));
}

}  // namespace longtune::detail
