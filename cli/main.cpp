// Entry point of `longtune`: parses the command line, runs one subcommand, and turns errors into
// exit codes (0 ok, 1 error, 2 usage). The only place that catches longtune::Error.
#include <CLI/CLI.hpp>
#include <malloc.h>

#include <cstdlib>
#include <exception>

#include "common/check.h"
#include "common/log.h"
#include "cli/cli.h"

int main(int argc, char** argv) {
  // Host buffers of a sharded step (gathered units, flat gradients) come and go in sizes from a few
  // to hundreds of MB. glibc raises its mmap threshold to the largest block freed (up to 32 MB), so
  // after the first step such buffers land in per-thread heaps that never shrink: measured +150 MB
  // peak per rank at 134M over 8 ranks. A fixed threshold keeps every block of 4 MB or more mapped
  // on its own and returned when freed.
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  CLI::App app{"longtune: extend the context window of LLaMA models by Position Interpolation"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for all subcommands");
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  longtune::cli::add_smoke_command(app);
  longtune::cli::add_eval_command(app);
  longtune::cli::add_inspect_command(app);
  longtune::cli::add_export_command(app);
  longtune::cli::add_debug_command(app);
  longtune::cli::add_data_commands(app);
  longtune::cli::add_train_command(app);
  longtune::cli::add_plot_command(app);
  longtune::cli::add_plan_command(app);
  longtune::cli::add_study_command(app);
  app.parse_complete_callback([&] {
    longtune::LogOptions options;
    options.level = log_level;
    longtune::init_logging(options);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; any other command-line mistake is a usage error (2).
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const longtune::cli::ExitStatus& status) {
    return status.code;
  } catch (const longtune::Error& e) {
    LT_ERROR("{}", e.what());
    return 1;
  } catch (const std::exception& e) {
    LT_ERROR("unexpected error: {}", e.what());
    return 1;
  }
  return 0;
}
