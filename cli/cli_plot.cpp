// `longtune plot RUN_DIR`: loss, learning-rate and validation-perplexity PNGs of a run, drawn by
// gnuplot from run_dir/metrics.jsonl into run_dir/plots/ (report/plot.h).
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>
#include <string>

#include "cli/cli.h"
#include "report/plot.h"

namespace longtune::cli {

void add_plot_command(CLI::App& app) {
  auto run_dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("plot", "Draw loss, lr and validation perplexity PNGs of a run (gnuplot)");
  cmd->add_option("run_dir", *run_dir, "run directory holding metrics.jsonl")->required();
  cmd->callback([run_dir] {
    const report::PlotOutput out = report::plot_run(*run_dir);
    for (const auto& image : out.images) std::cout << "wrote " << image.string() << "\n";
    for (const auto& note : out.notes) std::cout << "note: " << note << "\n";
  });
}

}  // namespace longtune::cli
