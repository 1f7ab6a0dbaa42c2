// eval/result_files: what the evaluation commands write reads back through the one reader (every
// field the study report uses, and the rest), older files without the newer fields read, and a
// missing or mistyped key is an error naming the file and the key.
#include "eval/result_files.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>

#include "tests/test_support.h"

namespace longtune::eval {
namespace {

PerplexityRun run(int64_t window, double ppl) {
  PerplexityRun r;
  r.result = {ppl, std::log(ppl), std::log(ppl) + 0.01, ppl * 1.01, 12, 3456, 3, 1.25};
  r.window = window;
  r.stride = 256;
  r.mode = "sliding";
  r.split = "test";
  return r;
}

TEST(PerplexityReport, RoundTripsThroughTheReader) {
  testing::TempDir dir;
  PerplexityReport report{"runs/pi", 2, "linear:4", "split test of data/pg19", "sliding window", {run(512, 77.5), run(128, 85.25)}};
  dir.write("ppl.json", perplexity_report_json(report));
  const PerplexityReport back = read_perplexity_report(dir.path() / "ppl.json");
  EXPECT_EQ(back.model, "runs/pi");
  EXPECT_EQ(back.ranks, 2);
  EXPECT_EQ(back.rope_scaling, "linear:4");
  ASSERT_EQ(back.results.size(), 2u);
  EXPECT_EQ(back.results[0].window, 512);
  EXPECT_EQ(back.results[0].result.ppl, 77.5);
  EXPECT_EQ(back.results[1].result.ppl, 85.25);
  EXPECT_EQ(back.results[1].result.scored_tokens, 3456);
  EXPECT_EQ(back.results[1].split, std::optional<std::string>("test"));
  // The printed line is one JSON object with the same fields.
  const auto line = nlohmann::json::parse(perplexity_run_json(run(512, 77.5)));
  EXPECT_EQ(line.at("window").get<int64_t>(), 512);
  EXPECT_EQ(line.at("ppl").get<double>(), 77.5);
}

TEST(PasskeyReport, RoundTripsSummaryAndDistances) {
  testing::TempDir dir;
  PasskeyReport report;
  report.model = "runs/pi";
  report.rope_scaling = "model's own";
  report.result.length = 512;
  report.result.k_max = 256;
  report.result.mean_accuracy = 0.625;
  report.result.distances = {{256, 250.5, 4, 5, 0.8, 0.9}, {512, 500.0, 1, 5, 0.2, 0.4}};
  report.result.trials.resize(10);
  dir.write("passkey.json", passkey_report_json(report, /*with_trials=*/true, 1));
  const PasskeyReport back = read_passkey_report(dir.path() / "passkey.json");
  EXPECT_EQ(back.result.k_max, 256);
  EXPECT_EQ(back.result.mean_accuracy, 0.625);
  ASSERT_EQ(back.result.distances.size(), 2u);
  EXPECT_EQ(back.result.distances[1].k, 512);
  EXPECT_EQ(back.result.distances[1].accuracy, 0.2);
  EXPECT_EQ(back.result.distances[0].digit_accuracy, 0.9);
  EXPECT_TRUE(back.result.trials.empty()) << "trials are not read back";
  EXPECT_EQ(nlohmann::json::parse(passkey_report_json(report, false)).count("trials"), 0u);
}

TEST(ResultFiles, OlderFilesReadAndBadOnesNameFileAndKey) {
  testing::TempDir dir;
  dir.write("old.json", R"({"k_max": 3, "mean_accuracy": 0.5, "distances": [{"k": 3, "accuracy": 1.0}]})");
  const PasskeyReport old = read_passkey_report(dir.path() / "old.json");
  EXPECT_TRUE(std::isnan(old.result.distances[0].digit_accuracy));
  dir.write("bad.json", R"({"k_max": "x", "mean_accuracy": 0.5, "distances": []})");
  testing::expect_error([&] { read_passkey_report(dir.path() / "bad.json"); }, {"bad.json", "k_max", "wrong type"});
  dir.write("ppl.json", R"({"results": [{"ppl": 3.0}]})");
  testing::expect_error([&] { read_perplexity_report(dir.path() / "ppl.json"); }, {"ppl.json", "window", "missing"});
  testing::expect_error([&] { read_perplexity_report(dir.path() / "none.json"); }, {"none.json", "missing"});
}

}  // namespace
}  // namespace longtune::eval
