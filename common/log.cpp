#include "common/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <vector>

#include "common/check.h"

namespace longtune {

namespace {
spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarn: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}
}  // namespace

void init_logging(const LogOptions& options) {
  const auto level = spdlog::level::from_str(options.level);
  LT_CHECK(level != spdlog::level::off || options.level == "off", "unknown log level '{}'", options.level);
  std::vector<spdlog::sink_ptr> sinks;
  if (options.rank == 0 || options.console_all_ranks) {
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    console->set_pattern(options.console_all_ranks
                             ? "[%H:%M:%S rank " + std::to_string(options.rank) + "] %^%l%$ %v"
                             : "[%H:%M:%S] %^%l%$ %v");
    sinks.push_back(console);
  }
  if (!options.file.empty()) {
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.file, /*truncate=*/false);
    file->set_pattern("[%Y-%m-%d %H:%M:%S.%e rank " + std::to_string(options.rank) + "] %l %v");
    sinks.push_back(file);
  }
  if (sinks.empty()) sinks.push_back(std::make_shared<spdlog::sinks::null_sink_mt>());
  auto logger = std::make_shared<spdlog::logger>("longtune", sinks.begin(), sinks.end());
  logger->set_level(level);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void log_line(LogLevel level, const std::string& message) { spdlog::log(to_spdlog(level), "{}", message); }

bool log_enabled(LogLevel level) { return spdlog::should_log(to_spdlog(level)); }

}  // namespace longtune
