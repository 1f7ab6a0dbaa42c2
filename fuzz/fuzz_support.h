// What every fuzz target shares: the input as a file where the code under test reads files (a
// per-process scratch directory, rewritten each run), and the rule that outside input may only end
// in our Error. Any other exception escapes to libFuzzer, which reports it as a crash, as it does
// aborts, hangs, leaks and sanitizer findings. Test-only; built with -DLONGTUNE_FUZZ=ON (clang).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>

#include "common/check.h"

namespace longtune::fuzz {

// A directory of this process's own, created once.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::filesystem::path path = std::filesystem::path(base ? base : "/tmp") /
                                 ("longtune-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
    return path;
  }();
  return dir;
}

// Writes the input to scratch_dir()/name and returns the path.
inline std::filesystem::path input_file(const uint8_t* data, size_t size, const std::string& name) {
  const std::filesystem::path path = scratch_dir() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

inline std::string input_text(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// Runs `parse`; our Error (a message for the user) is the one allowed failure.
template <class Fn>
void errors_only(Fn&& parse) {
  try {
    parse();
  } catch (const Error&) {
  }
}

// What `parse` accepted, or nullopt if it refused the input with our Error. What follows with an
// accepted value (printing it, reading it back) runs outside: there even our Error is a bug.
template <class Fn>
auto accepted(Fn&& parse) -> std::optional<decltype(parse())> {
  try {
    return parse();
  } catch (const Error&) {
    return std::nullopt;
  }
}

// An invariant of accepted input (a round trip, say); a broken one is a crash libFuzzer keeps.
inline void require(bool holds) {
  if (!holds) std::abort();
}

}  // namespace longtune::fuzz
