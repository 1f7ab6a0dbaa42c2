// `longtune plot`: PNG charts of a run drawn from its run_dir/metrics.jsonl by gnuplot (Debian
// package gnuplot-nox; an Error says so when `gnuplot` is not on PATH). Not a live dashboard and not
// the writer of the metrics (trainer/metrics.h).
//
// The records come through trainer/metrics.h's reader: train steps (loss, lr) and eval passes
// (val_loss, val_ppl; a record naming its window draws one line per evaluation window).
// Written under run_dir/plots/: train.dat and eval.dat (whitespace columns, headers in '#'
// comments), plots.gp (the gnuplot script, to re-run or edit), and the charts loss.png (training
// loss, validation loss as points), lr.png and val_ppl.png (log scale; only when eval records
// exist).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace longtune::report {

struct PlotOutput {
  std::vector<std::filesystem::path> images;  // the PNGs written, each checked non-empty
  std::vector<std::string> notes;             // what was left out and why
};

// Throws longtune::Error naming the file when metrics.jsonl is missing or holds no train or eval
// record, when gnuplot is missing, or when gnuplot fails (with its messages).
PlotOutput plot_run(const std::filesystem::path& run_dir);

}  // namespace longtune::report
