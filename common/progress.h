// A one-line progress display for long jobs (prepare-data, training): on a terminal it redraws one
// line on stderr at most every `min_interval_s`; when stderr is not a terminal (CI, log files) it
// prints a plain line every `log_interval_s` instead, so logs stay readable. Not logging: messages
// that must be kept go through LT_INFO. Not thread-safe: one thread calls update().
#pragma once

#include <chrono>
#include <string>

namespace longtune {

class ProgressLine {
 public:
  explicit ProgressLine(bool enabled = true, double min_interval_s = 0.2, double log_interval_s = 10.0);
  ~ProgressLine();
  // Shows `text` (no newline), rate-limited unless `force`.
  void update(const std::string& text, bool force = false);
  // Ends the line (a terminal keeps the last text), so later output starts clean.
  void finish();

  // "1.2 GB", "350.0 MB" ...
  static std::string bytes(double count);
  // "3.4M", "12.0k" ...
  static std::string count(double value);
  // "1h02m", "4m05s", "12s"
  static std::string duration(double seconds);
  // "[#######.............]"
  static std::string bar(double fraction, int width = 24);

 private:
  bool enabled_;
  bool terminal_;
  double min_interval_s_;
  double log_interval_s_;
  bool drawn_ = false;
  size_t last_width_ = 0;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace longtune
