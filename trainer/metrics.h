// What a training run reports: run_dir/metrics.jsonl, one JSON object per line, each a
// TrainRecord or an EvalRecord with one writer (MetricsLog) and one reader (read_metrics, which the
// charts of report/plot use); the model-FLOPs accounting behind MFU; and the peak-FLOPs default per
// device. Not the console progress line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "model/config.h"

namespace longtune::trainer {

// The name a run directory gives its metrics.
const char* metrics_file_name();

// One optimizer step. Read back, a field the line lacks is NaN (0 / false for counts and flags).
struct TrainRecord {
  int64_t step = 0;            // optimizer steps completed
  double loss = 0;             // mean NLL over the global batch
  double lr = 0;
  double grad_norm = 0;        // before clipping
  int64_t tokens = 0;          // target tokens trained on so far
  double tokens_per_s = 0;
  double mfu = 0;              // model FLOPs utilisation, 0..1
  int64_t host_peak_bytes = 0;    // the largest peak resident set of any rank so far
  int64_t device_peak_bytes = 0;  // the largest CUDA allocator peak of any rank so far (0 on the CPU)
  double elapsed_s = 0;        // training wall time over all runs
  bool skipped = false;        // dropped by nan_policy skip
};

// One validation pass.
struct EvalRecord {
  int64_t step = 0;
  double val_loss = 0;               // mean NLL per token
  double val_ppl = 0;
  int64_t val_tokens = 0;
  std::optional<int64_t> window;     // the context window, when the record names one
};

using MetricsRecord = std::variant<TrainRecord, EvalRecord>;

// A number as records spell it: full precision, and for non-finite values the spellings Python's
// json module reads (NaN, Infinity, -Infinity).
std::string metric_number(double value);

// The line a record is written as (full-precision numbers, so runs compare bit for bit).
std::string to_json_line(const MetricsRecord& record);

struct MetricsHistory {
  std::vector<TrainRecord> train;
  std::vector<EvalRecord> eval;
};

// Every record of a metrics file in order. Unreadable lines (a torn last line, non-finite numbers
// JSON cannot spell) and records of unknown kinds or without a step are skipped, with a warning for
// the unreadable. Throws longtune::Error if the file cannot be read.
MetricsHistory read_metrics(const std::filesystem::path& path);

class MetricsLog {
 public:
  // Appends to `path` (created if absent). A disabled log (ranks other than 0) writes nothing.
  MetricsLog(std::filesystem::path path, bool enabled);
  // Keeps only the records whose "step" <= step (a resumed run rewinds the file to its checkpoint,
  // so the file ends up equal to an uninterrupted run's); rewritten atomically.
  void truncate_after(int64_t step);
  // Appends one record as one line and hands it to the OS.
  void write(const MetricsRecord& record);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  bool enabled_;
};

// Training FLOPs per token (forward + backward, no recompute) for a sequence of seq_len tokens:
// 6 * N (N = parameters without the input embedding) + 12 * layers * n_heads * head_dim * seq_len
// for attention scores and values (PaLM appendix B), the convention MFU figures use.
double training_flops_per_token(const model::ModelConfig& config, int64_t seq_len);

// Peak dense FLOP/s used for MFU when the job does not set one. `cuda_device_name` is the CUDA
// device's name as the driver reports it (at::cuda::getDeviceProperties(i)->name, e.g. "NVIDIA
// H100 80GB HBM3"), or "" for the CPU; the caller looks it up so this file needs no CUDA headers.
// A known GPU gives its dense tensor-core peak from a table: bf16, or TF32 when !bf16 (H100/H200
// SXM: 989e12 / 494e12). An unknown GPU is measured (measure_cuda_matmul_flops, with a warning);
// the CPU is measured with the current intra-op thread count (measure_cpu_matmul_flops).
double default_peak_flops(const std::string& cuda_device_name, bool bf16);
// The table alone: 0 when `cuda_device_name` is not a GPU it knows.
double known_gpu_peak_flops(const std::string& cuda_device_name, bool bf16);
// Best FLOP/s of a square fp32 matmul (n = 512) repeated for about 0.3 s on the CPU.
double measure_cpu_matmul_flops();
// Best FLOP/s of a square bf16 (or fp32) matmul (n = 8192) on the current CUDA device, ~0.5 s.
double measure_cuda_matmul_flops(bool bf16);

}  // namespace longtune::trainer
