// `longtune eval passkey`: the PI paper's passkey retrieval (eval/passkey.h) on a model (HF
// directory or checkpoint, RoPE scaling overridable) with its tokenizer (tokenizer.model or tokenizer.json); prints a
// summary JSON line, writes the full result (every trial) as JSON and a PNG of accuracy vs distance.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>
#include <memory>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "cli/cli.h"
#include "cli/cli_common.h"
#include "trainer/device.h"
#include "report/gnuplot.h"
#include "trainer/model_source.h"
#include "eval/passkey.h"
#include "eval/result_files.h"

namespace longtune::cli {

namespace {

namespace fs = std::filesystem;

struct PasskeyArgs {
  std::string model_dir;
  std::string tokenizer;
  std::string rope;
  EvalLaunchArgs launch;
  std::string out;
  std::string plot;
  std::string label;
  eval::PasskeyOptions options;
  bool quiet = false;
};

fs::path tokenizer_path(const PasskeyArgs& args) {
  if (!args.tokenizer.empty()) return args.tokenizer;
  const std::optional<fs::path> found = trainer::source_tokenizer(trainer::resolve_model_source(args.model_dir));
  LT_CHECK(found.has_value(), "eval passkey: {} holds no tokenizer (tokenizer.model or tokenizer.json); pass --tokenizer", args.model_dir);
  return *found;
}

eval::PasskeyReport report_of(const eval::PasskeyResult& r, const PasskeyArgs& args) {
  return eval::PasskeyReport{args.model_dir, args.rope.empty() ? "model's own" : args.rope, args.options.threshold,
                             args.options.seed, r};
}

void plot_accuracy(const eval::PasskeyResult& r, const fs::path& png, const std::string& label) {
  const fs::path base = png.parent_path().empty() ? fs::path(".") : png.parent_path();
  fs::create_directories(base);
  const fs::path dat = fs::path(png).replace_extension(".dat"), log = fs::path(png).replace_extension(".log");
  std::string text = "# k mean_distance accuracy digit_accuracy\n";
  for (const auto& d : r.distances)
    text += fmt::format("{} {} {} {}\n", d.k, d.mean_distance, d.accuracy, d.digit_accuracy);
  write_file_atomic(dat, text);
  const report::Gnuplot gnuplot = report::find_gnuplot(log);
  const std::string script = fmt::format(
      "set terminal {}\nset output {}\nset grid\nset key bottom left\n"
      "set title 'passkey retrieval{}: L'' = {}, k_max = {}'\n"
      "set xlabel 'distance of the key from the end of the prompt k (tokens)'\nset ylabel 'accuracy'\n"
      "set yrange [-0.05:1.05]\nset xrange [0:{}]\n"
      "plot {} using 1:3 with linespoints pt 7 ps 0.8 lw 1.5 title 'accuracy', '' using 1:4 with linespoints pt 6 "
      "ps 0.8 dt 3 title 'key digits right (diagnostic)', {} with lines dt 2 title '20% threshold'\nunset output\n",
      gnuplot.png_terminal, report::gnuplot_quoted(png), label.empty() ? "" : " (" + label + ")", r.length, r.k_max,
      r.length, report::gnuplot_quoted(dat), 0.2);
  report::run_gnuplot(gnuplot, fs::path(png).replace_extension(".gp"), script, {png}, log);
}

void run_passkey(PasskeyArgs args) {
  const data::Tokenizer tokenizer(tokenizer_path(args));
  // Under a launcher the trials are split over the ranks (the model sharded unless --sharding
  // no_shard) and every rank's answers are gathered; rank 0 reports.
  const EvalSetup setup = setup_eval(args.model_dir, args.rope, args.launch);
  args.options.progress = !args.quiet && setup.leader();
  args.options.lockstep = setup.model.sharded();
  eval::ShareGenerated share;
  if (setup.group)
    share = [&setup](const std::vector<std::vector<int64_t>>& mine) {
      std::vector<std::vector<std::vector<int64_t>>> all;
      for (const std::string& answers : setup.group->all_gather_strings("eval_passkey_answers", nlohmann::json(mine).dump()))
        all.push_back(nlohmann::json::parse(answers).get<std::vector<std::vector<int64_t>>>());
      // Rank 0 may host the store the answers travel through: nobody leaves before all have read.
      setup.group->barrier();
      return all;
    };
  model::Llama llama = setup.model.llama;
  const eval::PasskeyResult r = eval::evaluate_passkey(*llama, tokenizer, args.options, setup.env.rank,
                                                       setup.env.world_size, share);
  if (!setup.leader()) return;
  LT_INFO("eval passkey L'={}: k_max {} (mean accuracy {:.3f}) in {:.1f} s", r.length, r.k_max, r.mean_accuracy,
          r.seconds);
  const eval::PasskeyReport report = report_of(r, args);
  std::cout << eval::passkey_report_json(report, /*with_trials=*/false) << std::endl;
  if (!args.out.empty())
    write_file_atomic(args.out, eval::passkey_report_json(report, /*with_trials=*/true, /*indent=*/1) + "\n");
  if (!args.plot.empty()) plot_accuracy(r, args.plot, args.label);
}

}  // namespace

void add_eval_passkey_command(CLI::App& eval) {
  auto args = std::make_shared<PasskeyArgs>();
  CLI::App* cmd = eval.add_subcommand(
      "passkey",
      "Passkey retrieval (PI paper §3.3, Landmark-Attention prompt): keys at distances k over (0, L'], greedy "
      "decoding with a KV cache; accuracy per k and k_max (largest k with every k' <= k at >= 20%)");
  cmd->add_option("--model", args->model_dir, "HF model directory, or a training checkpoint (step or run directory)")
      ->required();
  cmd->add_option("--tokenizer", args->tokenizer, "tokenizer.model, tokenizer.json or a model directory (default: the model's own)");
  cmd->add_option("--rope-scaling", args->rope, "override RoPE scaling: TYPE:FACTOR[:ORIGINAL], e.g. linear:4");
  add_eval_launch_options(*cmd, args->launch);
  cmd->add_option("--length", args->options.length, "prompt length L' in tokens incl. BOS (default: the model's window)");
  cmd->add_option("--distances", args->options.num_distances, "number of distances k over (0, L']")
      ->capture_default_str();
  cmd->add_option("--trials", args->options.trials, "prompts per distance")->capture_default_str();
  cmd->add_option("--max-new-tokens", args->options.max_new_tokens, "greedy tokens per prompt")->capture_default_str();
  cmd->add_option("--key-digits", args->options.key_digits, "digits of the random key")->capture_default_str();
  cmd->add_option("--threshold", args->options.threshold, "success rate for k_max")->capture_default_str();
  cmd->add_option("--seed", args->options.seed, "seed of the keys")->capture_default_str();
  cmd->add_option("--out", args->out, "write the full result (every trial) as JSON");
  cmd->add_option("--plot", args->plot, "write a PNG of accuracy vs distance (gnuplot)");
  cmd->add_option("--label", args->label, "name shown in the plot title");
  cmd->add_flag("--quiet", args->quiet, "no progress line");
  cmd->callback([args] { run_passkey(*args); });
}

}  // namespace longtune::cli
