// `longtune study-report DIR`: the report of scripts/study.sh (report/study_report.h) from the
// evaluation results under DIR; prints the verdicts and the report's path.
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "report/study_report.h"

namespace longtune::cli {

void add_study_command(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "study-report", "Write DIR/report/study.md and charts from a PI study's results (scripts/study.sh)");
  cmd->add_option("DIR", *dir, "the study's output folder")->required();
  cmd->callback([dir] {
    const auto claims = report::judge_claims(report::load_study(*dir));
    const auto md = report::write_study_report(*dir);
    for (const auto& c : claims) std::cout << c.claim << ": " << c.verdict << " (" << c.miniature << ")\n";
    std::cout << "report: " << md.string() << "\n";
  });
}

}  // namespace longtune::cli
