// `longtune train JOB.yaml [--set section.key=value ...]`: loads and validates the job, prints
// the resolved config, trains (resuming per checkpoint.resume), and exits 0 when done or
// kExitPreempted (75) after a SIGTERM/SIGINT stop with a checkpoint saved.
#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>

#include "common/check.h"
#include "common/log.h"
#include "cli/cli.h"
#include "dist/dist_env.h"
#include "trainer/hf_export.h"
#include "config/job_config.h"
#include "trainer/stop_signal.h"
#include "trainer/trainer.h"

namespace longtune::cli {

void run_train(const TrainArgs& args, trainer::StepProbe* probe) {
  namespace fs = std::filesystem;
  const config::JobConfig config = config::load_job_config(args.job, args.overrides);
  fs::create_directories(config.train.run_dir);
  const dist::DistEnv dist = dist::read_dist_env();
  LogOptions log;
  log.rank = dist.rank;
  log.level = args.log_level;
  log.file = (fs::path(config.train.run_dir) /
              (dist.rank == 0 ? std::string("train.log") : fmt::format("train.rank{:05d}.log", dist.rank)))
                 .string();
  init_logging(log);
  LT_INFO("job {} -> run directory {}\n{}", args.job, config.train.run_dir, config::to_table(config));
  trainer::apply_torch_settings(config.train);
  trainer::Trainer trainer(config, dist, probe);
  const trainer::RunOutcome outcome = trainer.train();
  if (outcome == trainer::RunOutcome::kPreempted) throw ExitStatus(trainer::kExitPreempted);
  if (dist.rank != 0) return;  // the final checkpoint is complete on disk; one rank exports it
  if (config.checkpoint.export_hf_at_end) {
    trainer::HfExportOptions options;
    // This run just wrote the checkpoint (its SHA-256s come from the bytes written) or resume
    // verified it: hashing it again would only re-read it. Exported exactly, not "the newest".
    options.verify = false;
    const fs::path checkpoint = trainer.last_checkpoint().empty() ? fs::path(config.train.run_dir)
                                                                  : trainer.last_checkpoint();
    trainer::export_checkpoint_to_hf(checkpoint, fs::path(config.train.run_dir) / "hf", options);
  }
  std::cout << "run directory: " << config.train.run_dir << " (metrics.jsonl, train.log, checkpoints/"
            << (config.checkpoint.export_hf_at_end ? ", hf/" : "") << ")\n";
}

void add_train_options(CLI::App& command, TrainArgs& args) {
  command.add_option("job", args.job, "job file (see configs/)")->required();
  command.add_option("--set", args.overrides, "override a setting: section.key=value (repeatable)");
}

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "Train (PI fine-tune or pretrain) from a YAML job file");
  add_train_options(*cmd, *args);
  cmd->callback([args, &app] {
    args->log_level = app.get_option("--log-level")->as<std::string>();
    run_train(*args, /*probe=*/nullptr);
  });
}

}  // namespace longtune::cli
