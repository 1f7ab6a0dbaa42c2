// Running gnuplot (Debian package gnuplot-nox) to draw PNG charts: find it on PATH, pick the PNG
// terminal this build has, run a script as a child process (posix_spawn, no shell) with its output
// in a log, and check that every promised image was written. Not the charts themselves (plot.h,
// passkey and study reports build their own scripts and data files).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace longtune::report {

struct Gnuplot {
  std::filesystem::path program;
  std::string png_terminal;  // "pngcairo size 1000,600 ..." when available, else the libgd "png ..."
};

// Throws longtune::Error when gnuplot is not on PATH (naming the package to install). `scratch_log`
// receives the output of the terminal probe.
Gnuplot find_gnuplot(const std::filesystem::path& scratch_log);

// A gnuplot single-quoted string (a quote inside is doubled).
std::string gnuplot_quoted(const std::filesystem::path& path);

// Writes `script` to `script_path`, deletes stale `images`, runs gnuplot on it with output to
// `log_path`, and throws longtune::Error (with the log) if it fails or leaves an image missing/empty.
void run_gnuplot(const Gnuplot& gnuplot, const std::filesystem::path& script_path, const std::string& script,
                 const std::vector<std::filesystem::path>& images, const std::filesystem::path& log_path);

}  // namespace longtune::report
