// Rank-aware logging: rank 0 writes to the console, every rank may also write to its own file.
// Call init_logging once from main(); library code uses LT_DEBUG / LT_INFO / LT_WARN / LT_ERROR with
// fmt-style arguments. spdlog does the writing but stays out of this header: LibTorch ships its own
// (newer) fmt, which Debian's spdlog cannot be compiled against, so messages are formatted here and
// handed over as strings.
#pragma once

#include <fmt/format.h>

#include <string>

namespace longtune {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

struct LogOptions {
  int rank = 0;                // this process's rank; only rank 0 (or console_all_ranks) prints
  bool console_all_ranks = false;
  std::string file;            // if non-empty, this rank also logs (everything) to this file
  std::string level = "info";  // debug|info|warn|error
};

// Installs the process-wide logger. Safe to call again (replaces the previous one).
void init_logging(const LogOptions& options);
// Writes one message at `level` (dropped if below the configured level).
void log_line(LogLevel level, const std::string& message);
// Whether a message at `level` would be written (to skip expensive formatting).
bool log_enabled(LogLevel level);

}  // namespace longtune

#define LT_LOG_AT(level, ...)                                                            \
  do {                                                                                   \
    if (::longtune::log_enabled(level)) ::longtune::log_line(level, ::fmt::format(__VA_ARGS__)); \
  } while (0)
#define LT_DEBUG(...) LT_LOG_AT(::longtune::LogLevel::kDebug, __VA_ARGS__)
#define LT_INFO(...) LT_LOG_AT(::longtune::LogLevel::kInfo, __VA_ARGS__)
#define LT_WARN(...) LT_LOG_AT(::longtune::LogLevel::kWarn, __VA_ARGS__)
#define LT_ERROR(...) LT_LOG_AT(::longtune::LogLevel::kError, __VA_ARGS__)
