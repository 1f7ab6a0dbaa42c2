// The report of the PI study in miniature (scripts/study.sh): reads the evaluation results the
// study wrote under its output folder, judges the paper's four claims against them (extrapolation
// explodes; PI with 0 fine-tuning steps is usable; PI after ~20% of the fine-tuning beats the base
// at L; direct fine-tuning adapts slowly), and writes report/study.md with gnuplot charts. The
// thresholds of each verdict are stated in the report. Not the runs or the evaluations themselves.
//
// Input layout (all JSON as `longtune eval perplexity --out` / `eval passkey --out` write them):
//   study.json                 {"variant", "L", "factor", "steps": [..], "pretrain_steps": [..],
//                               "setup": {name: text, ...}}
//   eval/base.json             the pretrained base at every window
//   eval/base_step_N.json      base checkpoints during pretraining (optional; windows L and L')
//   eval/pi_step_N.json        PI (linear, factor) after N fine-tuning steps, N = 0 and each step
//   eval/ft_step_N.json        direct fine-tuning at L' without PI after N steps (N = 0 is the base)
//   passkey/{pi,ft}_step_N.json passkey at L' for the same models (N = 0 included)
//   timings.tsv                "phase<TAB>seconds" lines (optional)
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace longtune::report {

struct PasskeySummary {
  int64_t k_max = 0;
  double mean_accuracy = 0;
  std::vector<std::pair<int64_t, double>> accuracy;        // (k, accuracy) ascending in k
  std::vector<std::pair<int64_t, double>> digit_accuracy;  // (k, key digits right), when recorded

  // Mean fraction of key digits right over the distances k > `beyond` (NaN if not recorded).
  double digits_beyond(int64_t beyond) const;
};

using PplByWindow = std::map<int64_t, double>;  // window -> the paper's PPL

struct StudyData {
  std::string variant;
  int64_t L = 0;       // pretraining window
  int64_t factor = 0;  // L' = factor * L
  std::vector<int64_t> steps;                           // fine-tuning step counts (ascending, > 0)
  std::vector<std::pair<std::string, std::string>> setup;  // shown as a table
  PplByWindow base;
  std::map<int64_t, PplByWindow> base_pretrain;         // pretraining step -> ppl
  std::map<int64_t, PplByWindow> pi, ft;                // fine-tuning step (0 included) -> ppl
  std::map<int64_t, PasskeySummary> pi_passkey, ft_passkey;
  std::vector<std::pair<std::string, double>> timings;  // phase, seconds

  int64_t long_window() const { return L * factor; }
};

struct ClaimVerdict {
  std::string claim;      // the paper's claim in a few words
  std::string paper;      // the paper's numbers
  std::string miniature;  // ours
  std::string verdict;    // "agrees" | "partly agrees" | "disagrees"
  std::string rule;       // the test applied
};

// Throws longtune::Error naming the file on a missing or malformed input.
StudyData load_study(const std::filesystem::path& dir);

// The four claims, in the order above. Needs base at L and L', pi/ft at every step and 0.
std::vector<ClaimVerdict> judge_claims(const StudyData& study);

// The Markdown report; `images` are file names relative to the report (shown in order).
std::string study_markdown(const StudyData& study, const std::vector<ClaimVerdict>& claims,
                           const std::vector<std::string>& images);

// Writes dir/report/study.md and its PNGs; returns the Markdown path.
std::filesystem::path write_study_report(const std::filesystem::path& dir);

}  // namespace longtune::report
