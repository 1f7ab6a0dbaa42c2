#include "common/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace longtune {

ProgressLine::ProgressLine(bool enabled, double min_interval_s, double log_interval_s)
    : enabled_(enabled),
      terminal_(::isatty(STDERR_FILENO) == 1),
      min_interval_s_(min_interval_s),
      log_interval_s_(log_interval_s),
      last_(std::chrono::steady_clock::now() - std::chrono::hours(1)) {}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::update(const std::string& text, bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (!force && since < (terminal_ ? min_interval_s_ : log_interval_s_)) return;
  last_ = now;
  if (terminal_) {
    const size_t pad = last_width_ > text.size() ? last_width_ - text.size() : 0;
    std::fprintf(stderr, "\r%s%s", text.c_str(), std::string(pad, ' ').c_str());
    last_width_ = text.size();
    drawn_ = true;
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::fflush(stderr);
}

void ProgressLine::finish() {
  if (enabled_ && terminal_ && drawn_) {
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }
  drawn_ = false;
  last_width_ = 0;
}

std::string ProgressLine::bytes(double count) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int unit = 0;
  while (count >= 1000.0 && unit < 4) {
    count /= 1000.0;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} B", count) : fmt::format("{:.1f} {}", count, units[unit]);
}

std::string ProgressLine::count(double value) {
  if (value >= 1e9) return fmt::format("{:.2f}G", value / 1e9);
  if (value >= 1e6) return fmt::format("{:.1f}M", value / 1e6);
  if (value >= 1e3) return fmt::format("{:.1f}k", value / 1e3);
  return fmt::format("{:.0f}", value);
}

std::string ProgressLine::duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const long total = static_cast<long>(seconds + 0.5);
  if (total >= 3600) return fmt::format("{}h{:02d}m", total / 3600, static_cast<int>(total % 3600 / 60));
  if (total >= 60) return fmt::format("{}m{:02d}s", total / 60, static_cast<int>(total % 60));
  return fmt::format("{}s", total);
}

std::string ProgressLine::bar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(fraction * width + 0.5);
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

}  // namespace longtune
