// `longtune plot` on a synthetic metrics.jsonl: the PNGs appear and are non-empty. Skipped where
// gnuplot is not installed.
#include "report/plot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "tests/test_support.h"

namespace longtune::report {
namespace {

namespace fs = std::filesystem;

bool have_gnuplot() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');)
    if (!dir.empty() && ::access((fs::path(dir) / "gnuplot").c_str(), X_OK) == 0) return true;
  return false;
}

std::string synthetic_metrics(bool with_eval) {
  std::string text;
  for (int step = 1; step <= 40; ++step) {
    text += "{\"kind\": \"train\", \"step\": " + std::to_string(step) +
            ", \"loss\": " + std::to_string(6.0 * std::exp(-step / 15.0) + 2.0) +
            ", \"lr\": " + std::to_string(step < 5 ? 2e-5 * (0.1 + 0.9 * step / 5.0) : 2e-5) +
            ", \"grad_norm\": 1.5, \"tokens\": 4096}\n";
    if (with_eval && step % 10 == 0) {
      const double val_loss = 6.0 * std::exp(-step / 15.0) + 2.2;
      text += "{\"kind\": \"eval\", \"step\": " + std::to_string(step) + ", \"val_loss\": " +
              std::to_string(val_loss) + ", \"val_ppl\": " + std::to_string(std::exp(val_loss)) +
              ", \"val_tokens\": 2048}\n";
    }
  }
  return text + "{\"kind\": \"tra";  // a torn last line is skipped
}

void expect_non_empty(const fs::path& path) {
  ASSERT_TRUE(fs::exists(path)) << path;
  EXPECT_GT(fs::file_size(path), 1000u) << path;
  EXPECT_EQ(testing::read_bytes(path).substr(1, 3), "PNG") << path;
}

TEST(Plot, WritesLossLrAndPerplexityCharts) {
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot is not installed (apt-get install gnuplot-nox)";
  testing::TempDir dir;
  dir.write("metrics.jsonl", synthetic_metrics(/*with_eval=*/true));
  const PlotOutput out = plot_run(dir.path());
  EXPECT_EQ(out.images.size(), 3u);
  EXPECT_TRUE(out.notes.empty());
  for (const char* name : {"loss.png", "lr.png", "val_ppl.png"}) expect_non_empty(dir.path() / "plots" / name);
  EXPECT_TRUE(fs::exists(dir.path() / "plots" / "plots.gp"));
  // 40 train rows plus the header.
  const std::string train_dat = testing::read_bytes(dir.path() / "plots" / "train.dat");
  EXPECT_EQ(std::count(train_dat.begin(), train_dat.end(), '\n'), 41);
}

TEST(Plot, WithoutEvalRecordsSkipsPerplexity) {
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot is not installed (apt-get install gnuplot-nox)";
  testing::TempDir dir;
  dir.write("metrics.jsonl", synthetic_metrics(/*with_eval=*/false));
  const PlotOutput out = plot_run(dir.path());
  EXPECT_EQ(out.images.size(), 2u);
  ASSERT_EQ(out.notes.size(), 1u);
  EXPECT_NE(out.notes[0].find("val_ppl.png"), std::string::npos);
  expect_non_empty(dir.path() / "plots" / "loss.png");
  expect_non_empty(dir.path() / "plots" / "lr.png");
  EXPECT_FALSE(fs::exists(dir.path() / "plots" / "val_ppl.png"));
}

TEST(Plot, MissingMetricsIsAnErrorNamingTheFile) {
  testing::TempDir dir;
  testing::expect_error([&] { plot_run(dir.path()); }, {"metrics.jsonl", "not found"});
  dir.write("metrics.jsonl", "{\"kind\": \"other\", \"step\": 1}\n");
  testing::expect_error([&] { plot_run(dir.path()); }, {"metrics.jsonl", "no train or eval records"});
}

}  // namespace
}  // namespace longtune::report
