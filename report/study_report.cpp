// The study report: JSON results -> verdicts on the paper's claims -> Markdown + gnuplot charts.
#include "report/study_report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <regex>
#include <sstream>
#include <tuple>

#include "common/check.h"
#include "common/file_io.h"
#include "eval/result_files.h"
#include "report/gnuplot.h"
#include "trainer/metrics.h"

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

// The median of `values` (0 if empty).
double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

FinetuneMetrics read_finetune_metrics(const fs::path& path) {
  const trainer::MetricsHistory history = trainer::read_metrics(path);
  FinetuneMetrics out;
  std::vector<double> rates, mfus;
  for (size_t i = 1; i < history.train.size(); ++i) {  // the first logged step carries the warm-up
    rates.push_back(history.train[i].tokens_per_s);
    mfus.push_back(history.train[i].mfu);
  }
  out.tokens_per_s = median(rates);
  out.mfu = median(mfus);
  for (const trainer::TrainRecord& r : history.train) {
    out.device_peak_bytes = std::max(out.device_peak_bytes, r.device_peak_bytes);
    out.elapsed_s = std::max(out.elapsed_s, r.elapsed_s);
  }
  for (const trainer::EvalRecord& r : history.eval)
    if (r.window) out.validation[r.step][*r.window] = r.val_ppl;
  return out;
}

// PI at factor W/L, passkey at 0 steps, and the fine-tuning runs' metrics, where present.
void read_pretrained_extras(const fs::path& dir, StudyData& s) {
  static const std::regex matched(R"(pi_x([0-9]+)_step_0\.json)"), step0(R"(step0_(.+)\.json)");
  std::vector<fs::path> files;
  for (const auto& sub : {"eval", "passkey"})
    if (fs::is_directory(dir / sub))
      for (const auto& entry : fs::directory_iterator(dir / sub)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    const std::string name = file.filename().string();
    std::smatch m;
    if (file.parent_path().filename() == "eval" && std::regex_match(name, m, matched)) {
      for (const auto& [window, ppl] : read_perplexity(file)) s.pi_matched[window] = ppl;
    } else if (file.parent_path().filename() == "passkey" && std::regex_match(name, m, step0)) {
      const eval::PasskeyReport report = eval::read_passkey_report(file);
      s.passkey_step0.push_back({m[1].str(), report.rope_scaling, report.result.length, read_passkey(file)});
    }
  }
  std::stable_sort(s.passkey_step0.begin(), s.passkey_step0.end(),
                   [](const PasskeyRun& a, const PasskeyRun& b) { return a.length < b.length; });
  for (const char* method : {"pi", "ft"}) {
    const fs::path metrics = dir / "runs" / method / "metrics.jsonl";
    if (fs::is_regular_file(metrics)) s.finetune[method] = read_finetune_metrics(metrics);
  }
}

}  // namespace

double ppl_at(const PplByWindow& ppl, int64_t window, const std::string& what) {
  const auto it = ppl.find(window);
  LT_CHECK(it != ppl.end(), "study report: no perplexity of {} at window {}", what, window);
  return it->second;
}

std::string format_ppl(double value) {
  if (!std::isfinite(value)) return "n/a";
  if (value >= 1e4) return fmt::format("{:.3g}", value);
  return fmt::format("{:.2f}", value);
}


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
  s.pretrained = j.value("kind", std::string("miniature")) == "pretrained";
  LT_CHECK((s.pretrained || !s.steps.empty()) && std::is_sorted(s.steps.begin(), s.steps.end()) &&
               (s.steps.empty() || s.steps.front() > 0),
           "study report: {}: steps must be positive and ascending{}", index.string(),
           s.pretrained ? "" : " (and present: the miniature always fine-tunes)");
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
    if (!s.fine_tuned()) continue;  // passkey at L' by steps comes with the fine-tuning
    s.pi_passkey[step] = read_passkey(dir / "passkey" / fmt::format("pi_step_{}.json", step));
    s.ft_passkey[step] = read_passkey(dir / "passkey" / fmt::format("ft_step_{}.json", step));
  }
  if (s.pretrained) read_pretrained_extras(dir, s);
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

namespace {

// The charts: PPL vs window, PPL vs steps, passkey accuracy (and key digits right, when recorded)
// vs distance for PI and FT; returns their file names.
std::vector<std::string> plot_study(const StudyData& s, const fs::path& out) {
  const int64_t L = s.L, Lp = s.long_window();
  const Gnuplot gnuplot = find_gnuplot(out / "gnuplot.log");
  const auto q = [&](const char* name) { return gnuplot_quoted(out / name); };
  std::string script = fmt::format("set terminal {}\nset grid\nset key top left\n", gnuplot.png_terminal);
  std::vector<std::string> names;

  // PPL by window: one line per model (title, PPL by window, point type).
  std::vector<std::tuple<std::string, PplByWindow, int>> lines;
  if (s.pretrained) {
    lines.emplace_back(fmt::format("as is (L = {})", L), s.base, 7);
    if (!s.pi_matched.empty()) {
      PplByWindow matched = s.pi_matched;
      if (s.pi.at(0).count(Lp)) matched[Lp] = s.pi.at(0).at(Lp);
      for (const auto& [w, ppl] : s.base)
        if (w <= L) matched[w] = ppl;  // PI at factor W/L <= 1 is the model itself
      lines.emplace_back("PI at factor W/L, 0 steps", matched, 13);
    }
  } else {
    lines.emplace_back(fmt::format("base (L = {})", L), s.base, 7);
  }
  lines.emplace_back(s.pretrained ? fmt::format("PI x{}, 0 steps", s.factor) : std::string("PI, 0 steps"), s.pi.at(0), 5);
  if (s.fine_tuned()) {
    const int64_t last = s.steps.back();
    lines.emplace_back(fmt::format("PI, {} steps", last), s.pi.at(last), 9);
    lines.emplace_back(fmt::format("FT at L'', {} steps", last), s.ft.at(last), 11);
  }
  std::string windows_dat = "# window ppl; one block per line of the chart, in order\n";
  std::vector<std::string> plots;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& [title, ppl, point] = lines[i];
    for (const auto& [w, p] : ppl) windows_dat += fmt::format("{} {}\n", w, p);
    windows_dat += "\n\n";
    plots.push_back(fmt::format("{} index {} with linespoints pt {} title '{}'",
                                i == 0 ? q("ppl_vs_window.dat") : std::string("''"), i, point, title));
  }
  write_file_atomic(out / "ppl_vs_window.dat", windows_dat);
  std::vector<std::string> window_tics;  // one x tic per evaluated window, on the log axis
  for (const auto& [w, p] : s.base) window_tics.push_back(fmt::format("'{}' {}", w, w));
  script += fmt::format(
      "set output {}\nset title 'test PPL by evaluation window (L = {}, L'' = {})'\nset xlabel 'window (tokens)'\n"
      "set ylabel 'perplexity'\nset logscale xy\nset xtics ({})\nplot {}\nunset logscale\nunset xtics\nset xtics\n",
      q("ppl_vs_window.png"), L, Lp, fmt::join(window_tics, ", "), fmt::join(plots, ", "));
  names.push_back("ppl_vs_window.png");

  if (s.fine_tuned()) {
    std::string steps_dat = "# step ppl_at_L'; blocks: PI, FT\n";
    for (const auto* series : {&s.pi, &s.ft}) {
      for (const auto& [step, ppl] : *series) steps_dat += fmt::format("{} {}\n", step, ppl_at(ppl, Lp, "study"));
      steps_dat += "\n\n";
    }
    write_file_atomic(out / "ppl_vs_steps.dat", steps_dat);
    script += fmt::format(
        "set output {}\nset title 'test PPL at L'' = {} by fine-tuning steps'\nset xlabel 'fine-tuning steps'\n"
        "set ylabel 'perplexity'\nset logscale y\nset key top right\n"
        "plot {} index 0 with linespoints pt 7 title 'PI x{}', '' index 1 with linespoints pt 5 title 'FT (no PI)', "
        "{} with lines dt 2 title 'base at L = {}', {} with lines dt 3 title 'base extrapolating to L'''\n"
        "unset logscale\n",
        q("ppl_vs_steps.png"), Lp, q("ppl_vs_steps.dat"), s.factor, ppl_at(s.base, L, "base"), L,
        ppl_at(s.base, Lp, "base"));
    names.push_back("ppl_vs_steps.png");
  }

  // Passkey accuracy (and key digits right) by distance: PI and FT after each step; the step-0 runs.
  std::string passkey_dat = "# k accuracy key_digits_right; blocks: PI at each step, FT at each step, the step-0 runs\n";
  const auto passkey_block = [&](const PasskeySummary& summary) {
    for (size_t i = 0; i < summary.accuracy.size(); ++i) {
      const double digits = i < summary.digit_accuracy.size() ? summary.digit_accuracy[i].second : std::nan("");
      passkey_dat += fmt::format("{} {} {}\n", summary.accuracy[i].first, summary.accuracy[i].second,
                                 std::isfinite(digits) ? fmt::format("{}", digits) : std::string("NaN"));
    }
    passkey_dat += "\n\n";
  };
  for (const auto* series : {&s.pi_passkey, &s.ft_passkey})
    for (const auto& [step, summary] : *series) passkey_block(summary);
  for (const PasskeyRun& run : s.passkey_step0) passkey_block(run.summary);
  write_file_atomic(out / "passkey.dat", passkey_dat);
  if (s.fine_tuned()) {
    const bool with_digits = !s.pi_passkey.at(0).digit_accuracy.empty();
    for (const auto& [column, what] : {std::pair<int, std::string>{2, "accuracy"}, {3, "key digits right"}}) {
      if (column == 3 && !with_digits) break;
      int64_t index = 0;
      for (const auto& [name, series] : {std::pair<std::string, const std::map<int64_t, PasskeySummary>*>{
                                             "pi", &s.pi_passkey},
                                         {"ft", &s.ft_passkey}}) {
        std::vector<std::string> curves;
        for (const auto& [step, summary] : *series)
          curves.push_back(fmt::format("{} index {} using 1:{} with linespoints title '{} steps (k_max {})'",
                                       q("passkey.dat"), index++, column, step, summary.k_max));
        const std::string png = fmt::format("passkey_{}{}.png", column == 3 ? "digits_" : "", name);
        script += fmt::format(
            "set output {}\nset title 'passkey {} at L'' = {}: {}'\nset xlabel 'distance of the key from the end "
            "k (tokens)'\nset ylabel '{}'\nset yrange [-0.05:1.05]\nset xrange [0:{}]\nset key top right\n"
            "set arrow 1 from {},-0.05 to {},1.05 nohead dt 2\nplot {}\nunset arrow 1\nset autoscale\n",
            gnuplot_quoted(out / png), what, Lp,
            name == "pi" ? fmt::format("PI x{}", s.factor) : std::string("direct fine-tuning"), what, Lp, L, L,
            fmt::join(curves, ", "));
        names.push_back(png);
      }
    }
  }
  if (!s.passkey_step0.empty()) {
    const int64_t first = static_cast<int64_t>(s.pi_passkey.size() + s.ft_passkey.size());
    int64_t longest = 0;
    std::vector<std::string> curves;
    for (size_t i = 0; i < s.passkey_step0.size(); ++i) {
      const PasskeyRun& run = s.passkey_step0[i];
      longest = std::max(longest, run.length);
      curves.push_back(fmt::format("{} index {} using 1:2 with linespoints title '{} at {} (k_max {})'",
                                   q("passkey.dat"), first + static_cast<int64_t>(i),
                                   run.rope_scaling == "model's own" ? std::string("as is") : "PI " + run.rope_scaling,
                                   run.length, run.summary.k_max));
    }
    script += fmt::format(
        "set output {}\nset title 'passkey accuracy at 0 fine-tuning steps'\nset xlabel 'distance of the key from the "
        "end k (tokens)'\nset ylabel 'accuracy'\nset yrange [-0.05:1.05]\nset xrange [0:{}]\nset key bottom left\n"
        "set arrow 1 from {},-0.05 to {},1.05 nohead dt 2\nplot {}\nunset arrow 1\nset autoscale\n",
        q("passkey_step0.png"), longest, L, L, fmt::join(curves, ", "));
    names.push_back("passkey_step0.png");
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
