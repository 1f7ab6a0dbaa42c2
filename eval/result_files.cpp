#include "eval/result_files.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/json_value.h"
#include "common/file_io.h"

namespace longtune::eval {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

nlohmann::json read_object(const fs::path& path) {
  LT_CHECK(fs::is_regular_file(path), "{} is missing", path.string());
  const nlohmann::json value = nlohmann::json::parse(read_file(path), nullptr, /*allow_exceptions=*/false);
  LT_CHECK(!value.is_discarded() && value.is_object(), "{} is not a JSON object", path.string());
  return value;
}

template <typename T>
T field(const nlohmann::json& object, const char* key, const fs::path& path) {
  const auto it = object.find(key);
  LT_CHECK(it != object.end(), "{}: key '{}' is missing", path.string(), key);
  try {
    return json_value<T>(*it, fmt::format("{}: key '{}'", path.string(), key));
  } catch (const Error&) {
    LT_FAIL("{}: key '{}' has the wrong type", path.string(), key);
  } catch (const nlohmann::json::exception&) {
    LT_FAIL("{}: key '{}' has the wrong type", path.string(), key);
  }
}

// An optional field: absent or null (how non-finite numbers are written) gives `fallback`.
template <typename T>
T field_or(const nlohmann::json& object, const char* key, T fallback, const fs::path& path) {
  const auto it = object.find(key);
  return it == object.end() || it->is_null() ? fallback : field<T>(object, key, path);
}

Json run_object(const PerplexityRun& run) {
  const PerplexityResult& r = run.result;
  Json out = {{"ppl", r.ppl},           {"mean_window_nll", r.mean_window_nll}, {"token_ppl", r.token_ppl},
              {"token_nll", r.token_nll}, {"windows", r.windows},               {"scored_tokens", r.scored_tokens},
              {"documents", r.documents}, {"window", run.window},               {"stride", run.stride},
              {"mode", run.mode},       {"seconds", r.seconds}};
  if (run.split) out["split"] = *run.split;
  return out;
}

}  // namespace

std::string perplexity_run_json(const PerplexityRun& run) { return run_object(run).dump(); }

std::string perplexity_report_json(const PerplexityReport& report) {
  Json results = Json::array();
  for (const PerplexityRun& run : report.results) results.push_back(run_object(run));
  const Json out = {{"model", report.model},       {"ranks", report.ranks},         {"rope_scaling", report.rope_scaling},
                    {"documents", report.documents}, {"protocol", report.protocol}, {"results", results}};
  return out.dump(1) + "\n";
}

PerplexityReport read_perplexity_report(const fs::path& path) {
  const nlohmann::json j = read_object(path);
  PerplexityReport report;
  report.model = field_or<std::string>(j, "model", "", path);
  report.ranks = field_or<int64_t>(j, "ranks", 1, path);
  report.rope_scaling = field_or<std::string>(j, "rope_scaling", "", path);
  report.documents = field_or<std::string>(j, "documents", "", path);
  report.protocol = field_or<std::string>(j, "protocol", "", path);
  for (const auto& r : field<nlohmann::json>(j, "results", path)) {
    PerplexityRun run;
    run.window = field<int64_t>(r, "window", path);
    run.result.ppl = field<double>(r, "ppl", path);
    run.result.mean_window_nll = field_or<double>(r, "mean_window_nll", std::nan(""), path);
    run.result.token_ppl = field_or<double>(r, "token_ppl", std::nan(""), path);
    run.result.token_nll = field_or<double>(r, "token_nll", std::nan(""), path);
    run.result.windows = field_or<int64_t>(r, "windows", 0, path);
    run.result.scored_tokens = field_or<int64_t>(r, "scored_tokens", 0, path);
    run.result.documents = field_or<int64_t>(r, "documents", 0, path);
    run.result.seconds = field_or<double>(r, "seconds", 0.0, path);
    run.stride = field_or<int64_t>(r, "stride", 0, path);
    run.mode = field_or<std::string>(r, "mode", "", path);
    if (r.contains("split")) run.split = field<std::string>(r, "split", path);
    report.results.push_back(std::move(run));
  }
  return report;
}

std::string passkey_report_json(const PasskeyReport& report, bool with_trials, int indent) {
  const PasskeyResult& r = report.result;
  Json distances = Json::array();
  for (const auto& d : r.distances)
    distances.push_back({{"k", d.k}, {"mean_distance", d.mean_distance}, {"successes", d.successes},
                         {"trials", d.trials}, {"accuracy", d.accuracy}, {"digit_accuracy", d.digit_accuracy}});
  Json out = {{"model", report.model},
              {"rope_scaling", report.rope_scaling},
              {"length", r.length},
              {"k_max", r.k_max},
              {"threshold", report.threshold},
              {"mean_accuracy", r.mean_accuracy},
              {"mean_digit_accuracy", r.mean_digit_accuracy},
              {"seed", report.seed},
              {"seconds", r.seconds},
              {"distances", distances}};
  if (with_trials) {
    Json trials = Json::array();
    for (const auto& t : r.trials)
      trials.push_back({{"target_distance", t.target_distance}, {"distance", t.distance}, {"key", t.key},
                        {"prefix_chars", t.prefix_chars}, {"suffix_chars", t.suffix_chars},
                        {"prompt_tokens", t.prompt_tokens}, {"generated", t.generated}, {"output", t.output},
                        {"success", t.success}, {"digit_accuracy", t.digit_accuracy}});
    out["trials"] = trials;
  }
  return out.dump(indent);
}

PasskeyReport read_passkey_report(const fs::path& path) {
  const nlohmann::json j = read_object(path);
  PasskeyReport report;
  report.model = field_or<std::string>(j, "model", "", path);
  report.rope_scaling = field_or<std::string>(j, "rope_scaling", "", path);
  report.threshold = field_or<double>(j, "threshold", 0.2, path);
  report.seed = field_or<uint64_t>(j, "seed", 0, path);
  PasskeyResult& r = report.result;
  r.length = field_or<int64_t>(j, "length", 0, path);
  r.k_max = field<int64_t>(j, "k_max", path);
  r.mean_accuracy = field<double>(j, "mean_accuracy", path);
  r.mean_digit_accuracy = field_or<double>(j, "mean_digit_accuracy", std::nan(""), path);
  r.seconds = field_or<double>(j, "seconds", 0.0, path);
  for (const auto& d : field<nlohmann::json>(j, "distances", path)) {
    PasskeyDistance distance;
    distance.k = field<int64_t>(d, "k", path);
    distance.accuracy = field<double>(d, "accuracy", path);
    distance.digit_accuracy = field_or<double>(d, "digit_accuracy", std::nan(""), path);
    distance.mean_distance = field_or<double>(d, "mean_distance", std::nan(""), path);
    distance.successes = field_or<int64_t>(d, "successes", 0, path);
    distance.trials = field_or<int64_t>(d, "trials", 0, path);
    r.distances.push_back(distance);
  }
  return report;
}

}  // namespace longtune::eval
