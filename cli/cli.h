// The `longtune` command line: each subcommand registers itself on the CLI11 app and runs through
// a callback that throws longtune::Error on failure; main() maps errors to exit codes.
#pragma once

#include <string>
#include <vector>

namespace CLI {
class App;
}
namespace longtune::trainer {
class StepProbe;
}

namespace longtune::cli {

// Thrown by a subcommand that must end with a specific non-zero exit status that is not an error
// (e.g. a preempted training run); main() returns `code`.
struct ExitStatus {
  explicit ExitStatus(int exit_code) : code(exit_code) {}
  int code;
};

void add_smoke_command(CLI::App& app);    // longtune smoke: tiny random model fwd/bwd on generated tokens
void add_eval_command(CLI::App& app);     // longtune eval perplexity ... | eval passkey ...
void add_eval_passkey_command(CLI::App& eval);  // longtune eval passkey ... (under `eval`)
void add_inspect_command(CLI::App& app);  // longtune inspect DIR
void add_export_command(CLI::App& app);   // longtune export-hf ...
void add_debug_command(CLI::App& app);   // longtune debug logits ... | debug train ... (checks and tests)
void add_data_commands(CLI::App& app);   // longtune tokenizer train | prepare-data | data inspect
void add_train_command(CLI::App& app);   // longtune train JOB.yaml [--set k=v ...]

// What `longtune train` runs (also `longtune debug train`, which adds a test probe).
struct TrainArgs {
  std::string job;
  std::vector<std::string> overrides;
  std::string log_level = "info";
};
void add_train_options(CLI::App& command, TrainArgs& args);
void run_train(const TrainArgs& args, trainer::StepProbe* probe);
void add_plot_command(CLI::App& app);    // longtune plot RUN_DIR
void add_plan_command(CLI::App& app);    // longtune plan JOB.yaml --nproc-per-node N ...
void add_study_command(CLI::App& app);   // longtune study-report DIR

}  // namespace longtune::cli
