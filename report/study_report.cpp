// The study report: JSON results -> verdicts on the paper's claims -> Markdown + gnuplot charts.
#include "report/study_report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "common/check.h"
#include "common/file_io.h"
#include "eval/result_files.h"
#include "report/gnuplot.h"

namespace longtune::report {

namespace fs = std::filesystem;

namespace {

nlohmann::json read_json(const fs::path& path) {
  LT_CHECK(fs::is_regular_file(path), "study report: {} is missing", path.string());
  const nlohmann::json value = nlohmann::json::parse(read_file(path), nullptr, /*allow_exceptions=*/false);
  LT_CHECK(!value.is_discarded() && value.is_object(), "study report: {} is not a JSON object", path.string());
  return value;
}

template <typename T>
T field(const nlohmann::json& object, const char* key, const fs::path& path) {
  const auto it = object.find(key);
  LT_CHECK(it != object.end(), "study report: {}: key '{}' is missing", path.string(), key);
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    LT_FAIL("study report: {}: key '{}' has the wrong type", path.string(), key);
  }
}

// The results of `eval perplexity --out` and `eval passkey --out`, through their reader.
PplByWindow read_perplexity(const fs::path& path) {
  PplByWindow out;
  for (const eval::PerplexityRun& run : eval::read_perplexity_report(path).results) out[run.window] = run.result.ppl;
  LT_CHECK(!out.empty(), "study report: {} holds no results", path.string());
  return out;
}

PasskeySummary read_passkey(const fs::path& path) {
  const eval::PasskeyReport report = eval::read_passkey_report(path);
  PasskeySummary out;
  out.k_max = report.result.k_max;
  out.mean_accuracy = report.result.mean_accuracy;
  for (const eval::PasskeyDistance& d : report.result.distances) {
    out.accuracy.emplace_back(d.k, d.accuracy);
    if (!std::isnan(d.digit_accuracy)) out.digit_accuracy.emplace_back(d.k, d.digit_accuracy);
  }
  return out;
}

double ppl_at(const PplByWindow& ppl, int64_t window, const std::string& what) {
  const auto it = ppl.find(window);
  LT_CHECK(it != ppl.end(), "study report: no perplexity of {} at window {}", what, window);
  return it->second;
}

std::string num(double value) {
  if (!std::isfinite(value)) return "n/a";
  if (value >= 1e4) return fmt::format("{:.3g}", value);
  return fmt::format("{:.2f}", value);
}

}  // namespace

double PasskeySummary::digits_beyond(int64_t beyond) const {
  double sum = 0;
  int64_t n = 0;
  for (const auto& [k, acc] : digit_accuracy)
    if (k > beyond) {
      sum += acc;
      ++n;
    }
  return n > 0 ? sum / static_cast<double>(n) : std::nan("");
}

StudyData load_study(const fs::path& dir) {
  const fs::path index = dir / "study.json";
  const nlohmann::json j = read_json(index);
  StudyData s;
  s.variant = field<std::string>(j, "variant", index);
  s.L = field<int64_t>(j, "L", index);
  s.factor = field<int64_t>(j, "factor", index);
  s.steps = field<std::vector<int64_t>>(j, "steps", index);
  LT_CHECK(s.L >= 2 && s.factor >= 2, "study report: {}: L and factor must be >= 2", index.string());
  LT_CHECK(!s.steps.empty() && std::is_sorted(s.steps.begin(), s.steps.end()) && s.steps.front() > 0,
           "study report: {}: steps must be positive and ascending", index.string());
  if (j.contains("setup"))
    for (const auto& [key, value] : j["setup"].items())
      s.setup.emplace_back(key, value.is_string() ? value.get<std::string>() : value.dump());
  s.base = read_perplexity(dir / "eval" / "base.json");
  if (j.contains("pretrain_steps"))
    for (int64_t step : field<std::vector<int64_t>>(j, "pretrain_steps", index))
      s.base_pretrain[step] = read_perplexity(dir / "eval" / fmt::format("base_step_{}.json", step));
  std::vector<int64_t> all_steps = {0};
  all_steps.insert(all_steps.end(), s.steps.begin(), s.steps.end());
  for (int64_t step : all_steps) {
    s.pi[step] = read_perplexity(dir / "eval" / fmt::format("pi_step_{}.json", step));
    s.ft[step] = step == 0 ? s.base : read_perplexity(dir / "eval" / fmt::format("ft_step_{}.json", step));
    s.pi_passkey[step] = read_passkey(dir / "passkey" / fmt::format("pi_step_{}.json", step));
    s.ft_passkey[step] = read_passkey(dir / "passkey" / fmt::format("ft_step_{}.json", step));
  }
  if (fs::is_regular_file(dir / "timings.tsv")) {
    std::istringstream lines(read_file(dir / "timings.tsv"));
    for (std::string line; std::getline(lines, line);) {
      const size_t tab = line.find('\t');
      if (tab == std::string::npos) continue;
      s.timings.emplace_back(line.substr(0, tab), std::atof(line.c_str() + tab + 1));
    }
  }
  return s;
}

std::vector<ClaimVerdict> judge_claims(const StudyData& s) {
  const int64_t L = s.L, Lp = s.long_window();
  const double base_L = ppl_at(s.base, L, "the base"), base_Lp = ppl_at(s.base, Lp, "the base");
  std::vector<ClaimVerdict> out;

  // 1. Extrapolation explodes: the paper's 7B goes from 7.20 at 2048 to > 10^3 at 8192 (ratio > 100).
  {
    const double ratio = base_Lp / base_L;
    ClaimVerdict v{"Extrapolation beyond L explodes", "LLaMA-7B: 7.20 at L = 2048, > 10^3 at 4L = 8192 (Table 1)",
                   fmt::format("base: {} at L = {}, {} at L' = {} (x{:.2f})", num(base_L), L, num(base_Lp), Lp, ratio),
                   ratio >= 10 ? "agrees" : ratio >= 1.5 ? "partly agrees" : "disagrees",
                   "agrees if PPL(L') / PPL(L) >= 10; partly if >= 1.5 (worse, but no explosion)"};
    if (s.base_pretrain.size() >= 2) {
      std::vector<std::string> trend;
      for (const auto& [step, ppl] : s.base_pretrain) {
        const auto at_l = ppl.find(L), at_lp = ppl.find(Lp);
        if (at_l != ppl.end() && at_lp != ppl.end())
          trend.push_back(fmt::format("x{:.2f} at pretraining step {}", at_lp->second / at_l->second, step));
      }
      v.miniature += "; during pretraining: " + fmt::format("{}", fmt::join(trend, ", "));
    }
    out.push_back(v);
  }
  // 2. PI with no fine-tuning is usable: 16.10 at 8192 vs 7.20 at 2048 and > 10^3 extrapolating.
  {
    const double pi0 = ppl_at(s.pi.at(0), Lp, "PI at step 0");
    const bool beats_extrapolation = pi0 < base_Lp, near_base = pi0 <= 3 * base_L;
    out.push_back({"PI with 0 fine-tuning steps is usable",
                   "16.10 at L' = 8192 vs 7.20 at L and > 10^3 extrapolating (Table 3, step 0)",
                   fmt::format("PI step 0: {} at L' = {}; base {} at L, {} extrapolating", num(pi0), Lp, num(base_L),
                               num(base_Lp)),
                   beats_extrapolation && near_base ? "agrees"
                   : beats_extrapolation || near_base ? "partly agrees"
                                                      : "disagrees",
                   "agrees if PI(step 0, L') < base(L') and <= 3 x base(L) (the paper's ratio is 2.2); partly if one "
                   "holds"});
  }
  // 3. After ~200 of 1000 steps, PI at L' beats the base at L (7.12 vs 7.20).
  {
    const int64_t last = s.steps.back();
    int64_t early = s.steps.front();
    for (int64_t step : s.steps)
      if (step * 5 >= last) {
        early = step;
        break;
      }
    const double pi_early = ppl_at(s.pi.at(early), Lp, "PI");
    int64_t first_beating = -1;
    for (int64_t step : s.steps)
      if (first_beating < 0 && ppl_at(s.pi.at(step), Lp, "PI") < base_L) first_beating = step;
    out.push_back({"PI after ~20% of the fine-tuning beats the base at L",
                   "7.12 at L' = 8192 after 200 of 1000 steps vs the base's 7.20 at 2048 (Table 3)",
                   fmt::format("PI after {} of {} steps: {} at L' vs base {} at L{}", early, last, num(pi_early),
                               num(base_L),
                               first_beating < 0 ? "; never below it" : fmt::format("; first below at step {}", first_beating)),
                   pi_early < base_L ? "agrees" : first_beating > 0 ? "partly agrees" : "disagrees",
                   "agrees if PI(L') < base(L) at the first checkpoint >= 20% of the run; partly if at a later one"});
  }
  // 4. Direct fine-tuning adapts slowly: worse PPL at L' (7.69 vs 6.95 after 10000 vs 1000 steps) and
  //    k_max stuck near L (1792..2560) while PI reaches L'.
  {
    int64_t ft_worse = 0;
    std::vector<std::string> pairs;
    for (int64_t step : s.steps) {
      const double pi = ppl_at(s.pi.at(step), Lp, "PI"), ft = ppl_at(s.ft.at(step), Lp, "FT");
      ft_worse += ft > pi ? 1 : 0;
      pairs.push_back(fmt::format("{}: FT {} / PI {}", step, num(ft), num(pi)));
    }
    const int64_t last = s.steps.back();
    const PasskeySummary &pk_pi = s.pi_passkey.at(last), &pk_ft = s.ft_passkey.at(last);
    const int64_t k_pi = pk_pi.k_max, k_ft = pk_ft.k_max;
    const bool ppl_slow = ft_worse == static_cast<int64_t>(s.steps.size());
    // Exact retrieval decides; where neither model retrieves a single key, the key digits right at
    // k > L (a diagnostic of partial retrieval) stand in, if recorded.
    const bool exact = k_pi > 0 || k_ft > 0;
    const double digits_pi = pk_pi.digits_beyond(L), digits_ft = pk_ft.digits_beyond(L);
    const bool digits = !exact && std::isfinite(digits_pi) && std::isfinite(digits_ft);
    const bool passkey_informative = exact || digits;
    const bool passkey_slow = exact ? k_ft < k_pi : digits && digits_ft < digits_pi;
    std::string passkey_text = fmt::format("passkey k_max after {} steps: FT {} / PI {}", last, k_ft, k_pi);
    if (digits)
      passkey_text += fmt::format(" (no exact retrieval; key digits right at k > L: FT {:.0f}% / PI {:.0f}%)",
                                  100 * digits_ft, 100 * digits_pi);
    else if (!exact)
      passkey_text += " (neither retrieves: the passkey part says nothing)";
    std::string verdict;
    if (passkey_informative)
      verdict = ppl_slow && passkey_slow ? "agrees" : ppl_slow || passkey_slow ? "partly agrees" : "disagrees";
    else
      verdict = ppl_slow ? "partly agrees" : "disagrees";
    out.push_back({"Direct fine-tuning at L' adapts slowly",
                   "FT: 7.69 at 8192 after 10000 steps vs PI 6.95 after 1000; FT k_max 1792..2560 vs PI 8192 (Tables 1, 4)",
                   fmt::format("PPL at L' by step ({}); {}", fmt::join(pairs, "; "), passkey_text), verdict,
                   "agrees if FT's PPL at L' is above PI's at every step count and FT's final k_max is below PI's "
                   "(without exact retrieval: fewer key digits right at k > L); partly if one holds"});
  }
  return out;
}

std::string study_markdown(const StudyData& s, const std::vector<ClaimVerdict>& claims,
                           const std::vector<std::string>& images) {
  const int64_t L = s.L, Lp = s.long_window();
  std::vector<int64_t> windows;
  for (const auto& [w, p] : s.base) windows.push_back(w);
  std::string md = fmt::format("# PI in miniature ({}): L = {}, L' = {} (x{})\n\n", s.variant, L, Lp, s.factor);
  md += "Generated by `longtune study-report` from the evaluation results of `scripts/study.sh`.\n\n## Setup\n\n";
  md += "| | |\n|---|---|\n";
  for (const auto& [k, v] : s.setup) md += fmt::format("| {} | {} |\n", k, v);

  md += "\n## The paper's claims\n\n| claim | paper | miniature | verdict | rule |\n|---|---|---|---|---|\n";
  for (const auto& c : claims)
    md += fmt::format("| {} | {} | {} | **{}** | {} |\n", c.claim, c.paper, c.miniature, c.verdict, c.rule);

  const auto window_header = [&](std::string first) {
    std::string h = "| " + first + " |", sep = "|---|";
    for (int64_t w : windows) {
      h += fmt::format(" {} |", w);
      sep += "---|";
    }
    return h + "\n" + sep + "\n";
  };
  const auto window_row = [&](const std::string& name, const PplByWindow& ppl) {
    std::string row = "| " + name + " |";
    for (int64_t w : windows) {
      const auto it = ppl.find(w);
      row += " " + (it == ppl.end() ? std::string("") : num(it->second)) + " |";
    }
    return row + "\n";
  };
  const int64_t last = s.steps.back();
  md += "\n## Table 1 in miniature: test PPL by evaluation window (sliding window)\n\n" + window_header("model");
  md += window_row(fmt::format("base (L = {})", L), s.base);
  md += window_row(fmt::format("PI x{}, 0 steps", s.factor), s.pi.at(0));
  md += window_row(fmt::format("FT at L' = {}, {} steps", Lp, last), s.ft.at(last));
  md += window_row(fmt::format("PI x{}, {} steps", s.factor, last), s.pi.at(last));

  md += fmt::format("\n## Table 3 in miniature: test PPL by fine-tuning steps (the base: {} at L, {} at L')\n\n",
                    num(ppl_at(s.base, L, "base")), num(ppl_at(s.base, Lp, "base")));
  md += "| method | window |";
  std::string sep = "|---|---|";
  std::vector<int64_t> all_steps = {0};
  all_steps.insert(all_steps.end(), s.steps.begin(), s.steps.end());
  for (int64_t step : all_steps) {
    md += fmt::format(" {} |", step);
    sep += "---|";
  }
  md += "\n" + sep + "\n";
  for (const auto& [name, series] : {std::pair<std::string, const std::map<int64_t, PplByWindow>*>{"PI", &s.pi},
                                     {"FT", &s.ft}}) {
    for (int64_t w : {Lp, L}) {
      md += fmt::format("| {} | {} |", name, w);
      for (int64_t step : all_steps) {
        const auto it = series->at(step).find(w);
        md += " " + (it == series->at(step).end() ? std::string("") : num(it->second)) + " |";
      }
      md += "\n";
    }
  }

  md += "\n## Table 4 in miniature: passkey k_max (mean accuracy) at L' by fine-tuning steps\n\n| method |";
  for (int64_t step : all_steps) md += fmt::format(" {} |", step);
  md += "\n" + sep.substr(4) + "\n";
  for (const auto& [name, series] :
       {std::pair<std::string, const std::map<int64_t, PasskeySummary>*>{"PI", &s.pi_passkey}, {"FT", &s.ft_passkey}}) {
    md += "| " + name + " |";
    for (int64_t step : all_steps)
      md += fmt::format(" {} ({:.0f}%) |", series->at(step).k_max, 100 * series->at(step).mean_accuracy);
    md += "\n";
  }
  if (!s.pi_passkey.at(0).digit_accuracy.empty()) {
    for (const auto& [name, series] : {std::pair<std::string, const std::map<int64_t, PasskeySummary>*>{
                                           "PI, key digits right at k > L", &s.pi_passkey},
                                       {"FT, key digits right at k > L", &s.ft_passkey}}) {
      md += "| " + name + " |";
      for (int64_t step : all_steps) md += fmt::format(" {:.0f}% |", 100 * series->at(step).digits_beyond(L));
      md += "\n";
    }
    md += "\nKey digits right: the share of the key's 5 digits that the answer has at the right place (a random "
          "number scores about 10%); a diagnostic of partial retrieval, not the paper's metric.\n";
  }
  md += "\nFT at step 0 is the base model itself (no PI) reading L'.\n";

  if (!s.base_pretrain.empty()) {
    md += "\n## Extrapolation during pretraining (base checkpoints)\n\n| pretraining step | PPL at L | PPL at L' | ratio |\n"
          "|---|---|---|---|\n";
    for (const auto& [step, ppl] : s.base_pretrain) {
      const auto a = ppl.find(L), b = ppl.find(Lp);
      if (a == ppl.end() || b == ppl.end()) continue;
      md += fmt::format("| {} | {} | {} | {:.2f} |\n", step, num(a->second), num(b->second), b->second / a->second);
    }
  }
  if (!images.empty()) {
    md += "\n## Charts\n\n";
    for (const auto& image : images) md += fmt::format("![{}]({})\n\n", image, image);
  }
  if (!s.timings.empty()) {
    md += "## Timings\n\n| phase | seconds |\n|---|---|\n";
    double total = 0;
    for (const auto& [phase, seconds] : s.timings) {
      md += fmt::format("| {} | {:.0f} |\n", phase, seconds);
      total += seconds;
    }
    md += fmt::format("| total | {:.0f} |\n", total);
  }
  return md;
}

namespace {

// The charts: PPL vs window, PPL vs steps, passkey accuracy (and key digits right, when recorded)
// vs distance for PI and FT; returns their file names.
std::vector<std::string> plot_study(const StudyData& s, const fs::path& out) {
  const int64_t L = s.L, Lp = s.long_window();
  const int64_t last = s.steps.back();
  const auto window_block = [](const PplByWindow& ppl) {
    std::string text;
    for (const auto& [w, p] : ppl) text += fmt::format("{} {}\n", w, p);
    return text + "\n\n";
  };
  std::string windows_dat = "# window ppl; blocks: base, PI 0 steps, PI last, FT last\n";
  windows_dat += window_block(s.base) + window_block(s.pi.at(0)) + window_block(s.pi.at(last)) +
                 window_block(s.ft.at(last));
  write_file_atomic(out / "ppl_vs_window.dat", windows_dat);
  std::string steps_dat = "# step ppl_at_L'; blocks: PI, FT\n";
  for (const auto* series : {&s.pi, &s.ft}) {
    for (const auto& [step, ppl] : *series) steps_dat += fmt::format("{} {}\n", step, ppl_at(ppl, Lp, "study"));
    steps_dat += "\n\n";
  }
  write_file_atomic(out / "ppl_vs_steps.dat", steps_dat);
  std::string passkey_dat = "# k accuracy key_digits_right; blocks: PI at each step, then FT at each step\n";
  for (const auto* series : {&s.pi_passkey, &s.ft_passkey})
    for (const auto& [step, summary] : *series) {
      for (size_t i = 0; i < summary.accuracy.size(); ++i) {
        const double digits = i < summary.digit_accuracy.size() ? summary.digit_accuracy[i].second : std::nan("");
        passkey_dat += fmt::format("{} {} {}\n", summary.accuracy[i].first, summary.accuracy[i].second,
                                   std::isfinite(digits) ? fmt::format("{}", digits) : std::string("NaN"));
      }
      passkey_dat += "\n\n";
    }
  write_file_atomic(out / "passkey.dat", passkey_dat);

  const Gnuplot gnuplot = find_gnuplot(out / "gnuplot.log");
  const auto q = [&](const char* name) { return gnuplot_quoted(out / name); };
  std::vector<std::string> window_tics;  // one x tic per evaluated window, on the log axis
  for (const auto& [w, p] : s.base) window_tics.push_back(fmt::format("'{}' {}", w, w));
  std::string script = fmt::format("set terminal {}\nset grid\nset key top left\n", gnuplot.png_terminal);
  script += fmt::format(
      "set output {}\nset title 'test PPL by evaluation window (L = {}, L'' = {})'\nset xlabel 'window (tokens)'\n"
      "set ylabel 'perplexity'\nset logscale xy\nset xtics ({})\n"
      "plot {} index 0 with linespoints pt 7 title 'base (L = {})', '' index 1 with linespoints pt 5 title 'PI, 0 "
      "steps', '' index 2 with linespoints pt 9 title 'PI, {} steps', '' index 3 with linespoints pt 11 title 'FT at "
      "L'', {} steps'\nunset logscale\nunset xtics\nset xtics\n",
      q("ppl_vs_window.png"), L, Lp, fmt::join(window_tics, ", "), q("ppl_vs_window.dat"), L, last, last);
  script += fmt::format(
      "set output {}\nset title 'test PPL at L'' = {} by fine-tuning steps'\nset xlabel 'fine-tuning steps'\n"
      "set ylabel 'perplexity'\nset logscale y\nset key top right\n"
      "plot {} index 0 with linespoints pt 7 title 'PI x{}', '' index 1 with linespoints pt 5 title 'FT (no PI)', "
      "{} with lines dt 2 title 'base at L = {}', {} with lines dt 3 title 'base extrapolating to L'''\n"
      "unset logscale\n",
      q("ppl_vs_steps.png"), Lp, q("ppl_vs_steps.dat"), s.factor, ppl_at(s.base, L, "base"), L,
      ppl_at(s.base, Lp, "base"));
  const bool with_digits = !s.pi_passkey.at(0).digit_accuracy.empty();
  std::vector<std::string> names = {"ppl_vs_window.png", "ppl_vs_steps.png"};
  for (const auto& [column, what] : {std::pair<int, std::string>{2, "accuracy"}, {3, "key digits right"}}) {
    if (column == 3 && !with_digits) break;
    int64_t index = 0;
    for (const auto& [name, series] : {std::pair<std::string, const std::map<int64_t, PasskeySummary>*>{
                                           "pi", &s.pi_passkey},
                                       {"ft", &s.ft_passkey}}) {
      std::vector<std::string> lines;
      for (const auto& [step, summary] : *series)
        lines.push_back(fmt::format("{} index {} using 1:{} with linespoints title '{} steps (k_max {})'",
                                    q("passkey.dat"), index++, column, step, summary.k_max));
      const std::string png = fmt::format("passkey_{}{}.png", column == 3 ? "digits_" : "", name);
      script += fmt::format(
          "set output {}\nset title 'passkey {} at L'' = {}: {}'\nset xlabel 'distance of the key from the end "
          "k (tokens)'\nset ylabel '{}'\nset yrange [-0.05:1.05]\nset xrange [0:{}]\nset key top right\n"
          "set arrow 1 from {},-0.05 to {},1.05 nohead dt 2\nplot {}\nunset arrow 1\nset autoscale\n",
          gnuplot_quoted(out / png), what, Lp,
          name == "pi" ? fmt::format("PI x{}", s.factor) : std::string("direct fine-tuning"), what, Lp, L, L,
          fmt::join(lines, ", "));
      names.push_back(png);
    }
  }
  script += "unset output\n";
  std::vector<fs::path> images;
  for (const auto& n : names) images.push_back(out / n);
  run_gnuplot(gnuplot, out / "study.gp", script, images, out / "gnuplot.log");
  return names;
}

}  // namespace

fs::path write_study_report(const fs::path& dir) {
  const StudyData study = load_study(dir);
  const std::vector<ClaimVerdict> claims = judge_claims(study);
  const fs::path out = dir / "report";
  fs::create_directories(out);
  const std::vector<std::string> images = plot_study(study, out);
  const fs::path md = out / "study.md";
  write_file_atomic(md, study_markdown(study, claims, images));
  return md;
}

}  // namespace longtune::report
