// The JSON files the evaluations leave behind, each with one writer and one reader:
// `longtune eval perplexity --out` (a PerplexityReport: one result per window) and `eval passkey
// --out` (a PasskeyReport: accuracy per distance, optionally every trial). The CLI writes them
// (and prints a window's result as one JSON line); the study report (report/study_report) reads
// them back. Not the evaluations themselves (perplexity, passkey).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "eval/passkey.h"
#include "eval/perplexity.h"

namespace longtune::eval {

// One window's perplexity and how it was measured.
struct PerplexityRun {
  PerplexityResult result;
  int64_t window = 0;
  int64_t stride = 0;
  std::string mode;                  // "sliding" | "chunks"
  std::optional<std::string> split;  // the prepared split scored, if the documents came from one
};

struct PerplexityReport {
  std::string model;         // the model directory as given
  int64_t ranks = 1;         // processes the documents were split over
  std::string rope_scaling;  // "model's own" or the --rope-scaling spec
  std::string documents;     // what was scored, in words
  std::string protocol;      // the scoring rule, in words
  std::vector<PerplexityRun> results;
};

// One line (no newline) for a window's result, as `eval perplexity` prints it.
std::string perplexity_run_json(const PerplexityRun& run);
// The whole report as a file's text.
std::string perplexity_report_json(const PerplexityReport& report);
// Reads a report back; throws longtune::Error naming the file and the missing or mistyped key.
PerplexityReport read_perplexity_report(const std::filesystem::path& path);

struct PasskeyReport {
  std::string model;
  std::string rope_scaling;
  double threshold = 0.2;  // the success rate k_max asks of every distance up to it
  uint64_t seed = 0;
  PasskeyResult result;    // read back without its trials
};

// The report's text; with `with_trials` every trial is included (the --out file), else only the
// summary and the distances (the line printed on stdout).
std::string passkey_report_json(const PasskeyReport& report, bool with_trials, int indent = -1);
// Reads the summary and the distances back (not the trials; a report written before digit accuracy
// existed reads it as NaN). Throws longtune::Error naming the file and key.
PasskeyReport read_passkey_report(const std::filesystem::path& path);

}  // namespace longtune::eval
