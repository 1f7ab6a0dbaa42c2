// Charts of a run: metrics.jsonl -> .dat columns -> a gnuplot script -> PNGs (see plot.h). gnuplot
// runs through report/gnuplot.h, its output collected into plots/gnuplot.log.
#include "report/plot.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <map>
#include <sstream>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "report/gnuplot.h"
#include "trainer/metrics.h"

namespace longtune::report {

namespace fs = std::filesystem;

namespace {

struct TrainPoint {
  double step, loss, lr;  // NaN where the record lacks the field (gnuplot skips it)
};
struct EvalPoint {
  double step, val_loss, val_ppl;
};

// A number as gnuplot reads it back: full precision, "NaN" for missing.
std::string column(double value) { return std::isfinite(value) ? fmt::format("{}", value) : "NaN"; }

}  // namespace

PlotOutput plot_run(const fs::path& run_dir) {
  const fs::path metrics_path = run_dir / trainer::metrics_file_name();
  LT_CHECK(fs::exists(metrics_path), "plot: {} not found (is {} a run directory?)", metrics_path.string(),
           run_dir.string());

  const trainer::MetricsHistory history = trainer::read_metrics(metrics_path);
  std::vector<TrainPoint> train;
  std::map<int64_t, std::vector<EvalPoint>> eval_by_window;  // window 0: not recorded
  for (const trainer::TrainRecord& r : history.train) train.push_back({double(r.step), r.loss, r.lr});
  for (const trainer::EvalRecord& r : history.eval)
    eval_by_window[r.window.value_or(0)].push_back({double(r.step), r.val_loss, r.val_ppl});
  LT_CHECK(!train.empty() || !eval_by_window.empty(), "plot: {} holds no train or eval records",
           metrics_path.string());

  const fs::path plots = run_dir / "plots";
  fs::create_directories(plots);
  const fs::path log_path = plots / "gnuplot.log";
  const Gnuplot gnuplot = find_gnuplot(log_path);
  const fs::path train_dat = plots / "train.dat", eval_dat = plots / "eval.dat";
  std::string text = "# step loss lr\n";
  for (const auto& p : train) text += fmt::format("{} {} {}\n", column(p.step), column(p.loss), column(p.lr));
  write_file_atomic(train_dat, text);
  // One gnuplot data block per window (blocks are separated by two blank lines: `index i`).
  text = "# step val_loss val_ppl; one block per evaluation window\n";
  for (const auto& [window, points] : eval_by_window) {
    text += fmt::format("# window {}\n", window);
    for (const auto& p : points)
      text += fmt::format("{} {} {}\n", column(p.step), column(p.val_loss), column(p.val_ppl));
    text += "\n\n";
  }
  write_file_atomic(eval_dat, text);

  PlotOutput out;
  std::string script = fmt::format(
      "# Written by `longtune plot`; re-run with: gnuplot {}\n"
      "set terminal {}\nset grid\nset key top right\nset xlabel 'optimizer step'\n",
      (plots / "plots.gp").string(), gnuplot.png_terminal);
  const auto window_title = [](int64_t window) {
    return window > 0 ? fmt::format(" (window {})", window) : std::string();
  };

  // Training loss with validation loss as points.
  std::vector<std::string> series;
  if (!train.empty()) series.push_back(fmt::format("{} using 1:2 with lines lw 1.5 title 'train loss'",
                                                   gnuplot_quoted(train_dat)));
  int64_t index = 0;
  for (const auto& [window, points] : eval_by_window) {
    series.push_back(fmt::format("{} index {} using 1:2 with linespoints pt 7 ps 0.8 title 'validation loss{}'",
                                 gnuplot_quoted(eval_dat), index++, window_title(window)));
  }
  script += fmt::format("set output {}\nset title 'loss'\nset ylabel 'loss (nats/token)'\nplot {}\n",
                        gnuplot_quoted(plots / "loss.png"), fmt::join(series, ", \\\n     "));
  out.images.push_back(plots / "loss.png");

  if (!train.empty()) {
    script += fmt::format(
        "set output {}\nset title 'learning rate'\nset ylabel 'lr'\nset format y '%.1e'\n"
        "plot {} using 1:3 with lines lw 1.5 title 'lr'\nset format y\n",
        gnuplot_quoted(plots / "lr.png"), gnuplot_quoted(train_dat));
    out.images.push_back(plots / "lr.png");
  } else {
    out.notes.push_back("no train records: lr.png not written");
  }

  if (!eval_by_window.empty()) {
    series.clear();
    index = 0;
    for (const auto& [window, points] : eval_by_window) {
      series.push_back(fmt::format("{} index {} using 1:3 with linespoints pt 7 ps 0.8 title 'perplexity{}'",
                                   gnuplot_quoted(eval_dat), index++, window_title(window)));
    }
    script += fmt::format(
        "set output {}\nset title 'validation perplexity'\nset ylabel 'perplexity'\nset logscale y\n"
        "plot {}\nunset logscale y\n",
        gnuplot_quoted(plots / "val_ppl.png"), fmt::join(series, ", \\\n     "));
    out.images.push_back(plots / "val_ppl.png");
  } else {
    out.notes.push_back("no eval records: val_ppl.png not written");
  }
  script += "unset output\n";

  run_gnuplot(gnuplot, plots / "plots.gp", script, out.images, log_path);
  return out;
}

}  // namespace longtune::report
