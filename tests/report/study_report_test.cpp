// report/study_report: reading a study folder, the verdict rules on hand-made numbers (each claim
// agreeing, partly agreeing and disagreeing), the Markdown tables, the charts, and named errors.
#include "report/study_report.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include "tests/test_support.h"

namespace longtune::report {
namespace {

namespace fs = std::filesystem;

std::string ppl_json(const std::map<int64_t, double>& ppl) {
  nlohmann::json results = nlohmann::json::array();
  for (const auto& [w, p] : ppl) results.push_back({{"window", w}, {"ppl", p}, {"token_ppl", p}});
  return nlohmann::json{{"results", results}}.dump();
}

std::string passkey_json(int64_t k_max, double acc_short, double acc_long, double digits_long = 0.5) {
  nlohmann::json d = nlohmann::json::array();
  d.push_back({{"k", 64}, {"accuracy", acc_short}, {"digit_accuracy", 1.0}});
  d.push_back({{"k", 128}, {"accuracy", acc_short}, {"digit_accuracy", 1.0}});
  d.push_back({{"k", 256}, {"accuracy", acc_long}, {"digit_accuracy", digits_long}});
  d.push_back({{"k", 512}, {"accuracy", acc_long}, {"digit_accuracy", digits_long}});
  return nlohmann::json{{"k_max", k_max}, {"mean_accuracy", (acc_short + acc_long) / 2}, {"distances", d}}.dump();
}

// A study with L = 128, factor 4, steps 10..40. The numbers follow the paper unless overridden.
struct FakeStudy {
  double base_L = 20, base_2L = 200, base_Lp = 5000;
  double pi0 = 45;
  std::vector<double> pi = {19, 18, 17, 16};     // at L' after 10, 20, 30, 40 steps
  std::vector<double> ft = {60, 40, 30, 25};
  int64_t pi_kmax = 512, ft_kmax = 128;
  double pi_digits = 0.9, ft_digits = 0.2;  // key digits right at k > L after fine-tuning

  void write(const testing::TempDir& dir) const {
    dir.write("study.json", R"({"variant": "test", "L": 128, "factor": 4, "steps": [10, 20, 30, 40],
      "pretrain_steps": [100, 200], "setup": {"model": "tiny", "tokens": 12345}})");
    dir.write("eval/base.json", ppl_json({{128, base_L}, {256, base_2L}, {512, base_Lp}}));
    dir.write("eval/base_step_100.json", ppl_json({{128, 30}, {512, 90}}));
    dir.write("eval/base_step_200.json", ppl_json({{128, base_L}, {512, base_Lp}}));
    dir.write("eval/pi_step_0.json", ppl_json({{128, 25}, {256, 30}, {512, pi0}}));
    dir.write("passkey/pi_step_0.json", passkey_json(512, 1.0, 0.5));
    dir.write("passkey/ft_step_0.json", passkey_json(128, 1.0, 0.0));
    for (size_t i = 0; i < 4; ++i) {
      const int64_t step = 10 * static_cast<int64_t>(i + 1);
      dir.write("eval/pi_step_" + std::to_string(step) + ".json", ppl_json({{128, 21}, {256, 19}, {512, pi[i]}}));
      dir.write("eval/ft_step_" + std::to_string(step) + ".json", ppl_json({{128, 22}, {256, 30}, {512, ft[i]}}));
      dir.write("passkey/pi_step_" + std::to_string(step) + ".json", passkey_json(pi_kmax, 1.0, 1.0, pi_digits));
      dir.write("passkey/ft_step_" + std::to_string(step) + ".json", passkey_json(ft_kmax, 1.0, 0.0, ft_digits));
    }
    dir.write("timings.tsv", "pretrain\t100.25\nevaluate\t20\n");
  }
};

std::vector<std::string> verdicts(const FakeStudy& fake) {
  testing::TempDir dir;
  fake.write(dir);
  std::vector<std::string> out;
  for (const auto& c : judge_claims(load_study(dir.path()))) out.push_back(c.verdict);
  return out;
}

TEST(StudyReport, ThePapersNumbersAgreeWithEveryClaim) {
  EXPECT_EQ(verdicts(FakeStudy{}), (std::vector<std::string>{"agrees", "agrees", "agrees", "agrees"}));
}

TEST(StudyReport, VerdictRules) {
  FakeStudy mild;  // 4x extrapolation only 1.6x worse; PI at 0 worse than extrapolating but near the base
  mild.base_Lp = 32;
  mild.pi0 = 40;
  EXPECT_EQ(verdicts(mild)[0], "partly agrees");
  EXPECT_EQ(verdicts(mild)[1], "partly agrees");
  FakeStudy flat;
  flat.base_Lp = 21;
  flat.pi0 = 100;
  EXPECT_EQ(verdicts(flat)[0], "disagrees");
  EXPECT_EQ(verdicts(flat)[1], "disagrees");
  FakeStudy late;  // below the base's 20 only from step 30
  late.pi = {25, 22, 19, 18};
  EXPECT_EQ(verdicts(late)[2], "partly agrees");
  late.pi = {25, 22, 21, 20.5};
  late.ft = {60, 40, 30, 30};
  EXPECT_EQ(verdicts(late)[2], "disagrees");
  FakeStudy ft_fast;  // FT as good as PI in PPL, but worse passkey
  ft_fast.ft = {15, 14, 13, 12};
  EXPECT_EQ(verdicts(ft_fast)[3], "partly agrees");
  ft_fast.ft_kmax = 512;
  EXPECT_EQ(verdicts(ft_fast)[3], "disagrees");
  FakeStudy no_retrieval;  // neither retrieves exactly: the key digits right beyond L decide
  no_retrieval.pi_kmax = 0;
  no_retrieval.ft_kmax = 0;
  EXPECT_EQ(verdicts(no_retrieval)[3], "agrees");
  no_retrieval.ft_digits = 0.95;
  EXPECT_EQ(verdicts(no_retrieval)[3], "partly agrees");
}

TEST(StudyReport, MarkdownHoldsTheTablesAndCharts) {
  testing::TempDir dir;
  FakeStudy{}.write(dir);
  const StudyData study = load_study(dir.path());
  EXPECT_EQ(study.long_window(), 512);
  EXPECT_EQ(study.ft.at(0), study.base);  // FT at 0 steps is the base
  EXPECT_EQ(study.base_pretrain.size(), 2u);
  const std::string md = study_markdown(study, judge_claims(study), {"a.png"});
  for (const char* part : {"| base (L = 128) | 20.00 | 200.00 | 5000.00 |", "| PI | 512 | 45.00 | 19.00 | 18.00 |",
                           "| FT | 512 | 5000.00 | 60.00 |", "| PI | 512 (75%) | 512 (100%) |",
                           "| FT, key digits right at k > L | 50% | 20% |", "| 100 | 30.00 | 90.00 | 3.00 |",
                           "![a.png](a.png)", "| total | 120 |", "| model | tiny |", "**agrees**"})
    EXPECT_NE(md.find(part), std::string::npos) << part << "\n" << md;

  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  bool gnuplot = false;
  for (std::string d; std::getline(dirs, d, ':');) gnuplot |= !d.empty() && ::access((fs::path(d) / "gnuplot").c_str(), X_OK) == 0;
  if (!gnuplot) GTEST_SKIP() << "gnuplot is not installed";
  const fs::path md_path = write_study_report(dir.path());
  EXPECT_EQ(md_path, dir.path() / "report" / "study.md");
  for (const char* png : {"ppl_vs_window.png", "ppl_vs_steps.png", "passkey_pi.png", "passkey_ft.png",
                          "passkey_digits_pi.png", "passkey_digits_ft.png"})
    EXPECT_GT(fs::file_size(dir.path() / "report" / png), 1000u) << png;
}

// A released model (kind "pretrained"): L = 128 stands in for its window, L' = 512.
struct FakePretrained {
  std::vector<int64_t> steps;  // empty: the step-0 part only
  double pi_short_after = 10.1;  // PI at the shortest window after the last step (the model: 10)

  void write(const testing::TempDir& dir) const {
    std::string list;
    for (int64_t s : steps) list += (list.empty() ? "" : ", ") + std::to_string(s);
    dir.write("study.json", R"({"variant": "smol", "kind": "pretrained", "L": 128, "factor": 4, "steps": [)" + list +
                                R"(], "setup": {"model": "released"}})");
    dir.write("eval/base.json", ppl_json({{32, 10}, {64, 9.5}, {128, 9}, {256, 40}, {512, 300}}));
    dir.write("eval/pi_x2_step_0.json", ppl_json({{256, 30}}));
    dir.write("eval/pi_step_0.json", ppl_json({{32, 12}, {512, 35}}));
    nlohmann::json pk = nlohmann::json::parse(passkey_json(128, 1.0, 0.0));
    pk["length"] = 256;
    pk["rope_scaling"] = "model's own";
    dir.write("passkey/step0_base_256.json", pk.dump());
    pk["rope_scaling"] = "linear:2";
    pk["k_max"] = 512;
    dir.write("passkey/step0_pi_x2_256.json", pk.dump());
    pk["length"] = 128;
    pk["rope_scaling"] = "model's own";
    dir.write("passkey/step0_base_128.json", pk.dump());
    if (steps.empty()) return;
    dir.write("passkey/pi_step_0.json", passkey_json(128, 1.0, 0.0));
    dir.write("passkey/ft_step_0.json", passkey_json(128, 1.0, 0.0));
    for (int64_t step : steps) {
      const std::string n = std::to_string(step);
      dir.write("eval/pi_step_" + n + ".json", ppl_json({{32, pi_short_after}, {128, 8.9}, {512, 8.5}}));
      dir.write("eval/ft_step_" + n + ".json", ppl_json({{32, 10.2}, {128, 9.0}, {512, 9.5}}));
      dir.write("passkey/pi_step_" + n + ".json", passkey_json(512, 1.0, 1.0));
      dir.write("passkey/ft_step_" + n + ".json", passkey_json(256, 1.0, 0.5));
    }
    dir.write("runs/pi/metrics.jsonl",
              "{\"kind\": \"train\", \"step\": 1, \"loss\": 3, \"tokens_per_s\": 10, \"mfu\": 0.1, \"elapsed_s\": 1}\n"
              "{\"kind\": \"train\", \"step\": 2, \"loss\": 3, \"tokens_per_s\": 1000, \"mfu\": 0.3, \"elapsed_s\": 2}\n"
              "{\"kind\": \"train\", \"step\": 3, \"loss\": 3, \"tokens_per_s\": 2000, \"mfu\": 0.4, \"elapsed_s\": 3}\n"
              "{\"kind\": \"eval\", \"step\": 3, \"val_loss\": 2, \"val_ppl\": 7.5, \"val_tokens\": 9, \"window\": 512}\n");
  }
};

TEST(StudyReport, PretrainedStepZeroOnly) {
  testing::TempDir dir;
  FakePretrained{}.write(dir);
  const StudyData study = load_study(dir.path());
  EXPECT_TRUE(study.pretrained);
  EXPECT_FALSE(study.fine_tuned());
  EXPECT_EQ(study.pi_matched, (PplByWindow{{256, 30}}));
  ASSERT_EQ(study.passkey_step0.size(), 3u);
  EXPECT_EQ(study.passkey_step0[0].length, 128);  // ordered by length
  const auto claims = judge_claims(study);
  std::vector<std::string> got;
  for (const auto& c : claims) got.push_back(c.verdict);
  // x33 at L' explodes; PI at 0 steps (35) beats extrapolating (300) but is over 3 x 9.
  EXPECT_EQ(got, (std::vector<std::string>{"agrees", "partly agrees", "not measured", "not measured", "not measured"}));
  EXPECT_NE(claims[0].miniature.find("x4.44 at 256"), std::string::npos) << claims[0].miniature;
  EXPECT_NE(claims[1].miniature.find("at 256: PI x2 30.00 vs 40.00 extrapolating"), std::string::npos);
  EXPECT_NE(claims[4].miniature.find("PI x4 at 0 steps: 12.00 at 32 vs the model's 10.00"), std::string::npos);
  const std::string md = study_markdown(study, claims, {});
  for (const char* part : {"| as is (pretrained at L = 128) | 10.00 | 9.50 | 9.00 | 40.00 | 300.00 |",
                           "| PI at factor W / L, 0 steps |  |  |  | 30.00 | 35.00 |", "| PI x4, 0 steps | 12.00 |  |  |  | 35.00 |",
                           "| PI linear:2 | 256 | 512 | 50% |", "| as is | 128 | 512 |", "**not measured**",
                           "| claim | paper | this model |"})
    EXPECT_NE(md.find(part), std::string::npos) << part << "\n" << md;
  EXPECT_EQ(md.find("## Table 3"), std::string::npos);

  // A subset that stops at L (study_smollm2.sh --ci) measures no claim but still reports.
  testing::TempDir subset;
  FakePretrained{}.write(subset);
  subset.write("eval/base.json", ppl_json({{32, 10}, {64, 9.5}, {128, 9}}));
  subset.write("eval/pi_step_0.json", ppl_json({{32, 12}, {128, 11}}));
  fs::remove(subset.path() / "eval" / "pi_x2_step_0.json");
  const StudyData short_study = load_study(subset.path());
  for (const auto& c : judge_claims(short_study)) EXPECT_EQ(c.verdict, "not measured") << c.claim;
  EXPECT_NE(study_markdown(short_study, judge_claims(short_study), {}).find("| PI x4, 0 steps | 12.00 |  | 11.00 |"),
            std::string::npos);
}

TEST(StudyReport, PretrainedWithFineTuning) {
  testing::TempDir dir;
  FakePretrained fake{{10, 20}};
  fake.write(dir);
  const StudyData study = load_study(dir.path());
  ASSERT_TRUE(study.fine_tuned());
  ASSERT_EQ(study.finetune.count("pi"), 1u);
  EXPECT_EQ(study.finetune.at("pi").tokens_per_s, 1500);  // the median after the first logged step
  EXPECT_EQ(study.finetune.at("pi").validation.at(3).at(512), 7.5);
  const auto claims = judge_claims(study);
  ASSERT_EQ(claims.size(), 5u);
  EXPECT_EQ(claims[2].verdict, "agrees");  // 8.5 at L' after 10 of 20 steps, below the model's 9 at L
  EXPECT_EQ(claims[3].verdict, "agrees");
  EXPECT_EQ(claims[4].verdict, "agrees");  // 10.1 vs 10: +1%
  fake.pi_short_after = 10.5;
  fake.write(dir);
  EXPECT_EQ(judge_claims(load_study(dir.path()))[4].verdict, "partly agrees");
  fake.pi_short_after = 12;
  fake.write(dir);
  EXPECT_EQ(judge_claims(load_study(dir.path()))[4].verdict, "disagrees");
  const std::string md = study_markdown(study, claims, {});
  for (const char* part : {"| PI | 512 | 35.00 | 8.50 | 8.50 |", "| PI | 32 | 12.00 | 10.10 |", "| PI | 1500 | 35.0% |",
                           "| 3 | 7.50 |", "FT at step 0 is the model as is"})
    EXPECT_NE(md.find(part), std::string::npos) << part << "\n" << md;
}

TEST(StudyReport, MissingOrMalformedInputsAreNamed) {
  testing::TempDir dir;
  FakeStudy{}.write(dir);
  fs::remove(dir.path() / "passkey" / "ft_step_20.json");
  testing::expect_error([&] { load_study(dir.path()); }, {"ft_step_20.json", "missing"});
  dir.write("passkey/ft_step_20.json", "{\"k_max\": \"x\"}");
  testing::expect_error([&] { load_study(dir.path()); }, {"ft_step_20.json", "k_max", "wrong type"});
  dir.write("study.json", R"({"variant": "t", "L": 128, "factor": 4, "steps": [20, 10]})");
  testing::expect_error([&] { load_study(dir.path()); }, {"study.json", "ascending"});
}

}  // namespace
}  // namespace longtune::report
