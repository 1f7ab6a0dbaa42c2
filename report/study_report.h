// The report of a PI study: the miniature (scripts/study.sh, a base the study pretrains itself) or
// a released model (scripts/study_smollm2.sh, kind "pretrained"). It reads the evaluation results
// the study wrote under its output folder, judges the paper's claims against them (extrapolation
// explodes; PI with 0 fine-tuning steps is usable; PI after ~20% of the fine-tuning beats the base
// at L; direct fine-tuning adapts slowly; for a pretrained model also: PI keeps the quality inside
// the original window), and writes report/study.md with gnuplot charts. The thresholds of each
// verdict are stated in the report; a claim whose runs are absent is "not measured". Not the runs
// or the evaluations themselves.
//
// Input layout (all JSON as `longtune eval perplexity --out` / `eval passkey --out` write them):
//   study.json                 {"variant", "kind" (optional: "miniature" | "pretrained"), "L",
//                               "factor", "steps": [..] (may be empty when pretrained),
//                               "pretrain_steps": [..], "setup": {name: text, ...}}
//   eval/base.json             the pretrained base at every window
//   eval/base_step_N.json      base checkpoints during pretraining (optional; windows L and L')
//   eval/pi_step_N.json        PI (linear, factor) after N fine-tuning steps, N = 0 and each step
//   eval/ft_step_N.json        direct fine-tuning at L' without PI after N steps (N = 0 is the base)
//   passkey/{pi,ft}_step_N.json passkey at L' for the same models (N = 0 included)
//   timings.tsv                "phase<TAB>seconds" lines (optional)
// and, when pretrained (each optional):
//   eval/pi_xF_step_0.json      PI at factor F = W / L at window W, no fine-tuning (W between L and L')
//   passkey/step0_NAME.json     passkey at 0 steps at any length, with or without PI
//   runs/{pi,ft}/metrics.jsonl  throughput, MFU and the validation during fine-tuning
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

// A passkey run at 0 fine-tuning steps (passkey/step0_*.json).
struct PasskeyRun {
  std::string name;          // the file's stem
  std::string rope_scaling;  // "model's own" or the --rope-scaling spec
  int64_t length = 0;
  PasskeySummary summary;
};

// A fine-tuning run's speed and its validation, from its metrics file.
struct FinetuneMetrics {
  double tokens_per_s = 0;  // median over the logged steps after the first
  double mfu = 0;           // likewise
  int64_t device_peak_bytes = 0;
  double elapsed_s = 0;
  std::map<int64_t, PplByWindow> validation;  // step -> window -> PPL
};

struct StudyData {
  std::string variant;
  bool pretrained = false;  // a released model (no pretraining by the study)
  int64_t L = 0;       // pretraining window
  int64_t factor = 0;  // L' = factor * L
  std::vector<int64_t> steps;                           // fine-tuning step counts (ascending, > 0)
  std::vector<std::pair<std::string, std::string>> setup;  // shown as a table
  PplByWindow base;
  std::map<int64_t, PplByWindow> base_pretrain;         // pretraining step -> ppl
  std::map<int64_t, PplByWindow> pi, ft;                // fine-tuning step (0 included) -> ppl
  std::map<int64_t, PasskeySummary> pi_passkey, ft_passkey;
  std::vector<std::pair<std::string, double>> timings;  // phase, seconds
  PplByWindow pi_matched;                   // W -> PPL with PI at factor W / L, 0 steps (L < W < L')
  std::vector<PasskeyRun> passkey_step0;    // ordered by length, then name
  std::map<std::string, FinetuneMetrics> finetune;  // "pi" | "ft" -> its run's metrics

  bool fine_tuned() const { return !steps.empty(); }

  int64_t long_window() const { return L * factor; }
};

struct ClaimVerdict {
  std::string claim;      // the paper's claim in a few words
  std::string paper;      // the paper's numbers
  std::string miniature;  // ours
  std::string verdict;    // "agrees" | "partly agrees" | "disagrees" | "not measured"
  std::string rule;       // the test applied
};

// The report's number format: 2 decimals, 3 significant digits from 10^4, "n/a" if not finite.
std::string format_ppl(double value);
// ppl[window]; throws longtune::Error naming `what` if it was not measured.
double ppl_at(const PplByWindow& ppl, int64_t window, const std::string& what);

// Throws longtune::Error naming the file on a missing or malformed input.
StudyData load_study(const std::filesystem::path& dir);

// The claims, in the order above (four; five when pretrained). Needs base at L and L' and PI at
// step 0; those about fine-tuning are "not measured" without steps.
std::vector<ClaimVerdict> judge_claims(const StudyData& study);

// The Markdown report; `images` are file names relative to the report (shown in order).
std::string study_markdown(const StudyData& study, const std::vector<ClaimVerdict>& claims,
                           const std::vector<std::string>& images);

// Writes dir/report/study.md and its PNGs; returns the Markdown path.
std::filesystem::path write_study_report(const std::filesystem::path& dir);

}  // namespace longtune::report
