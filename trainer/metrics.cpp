// metrics.jsonl records (writing, reading, rewinding), the model-FLOPs count behind MFU and the
// peak-FLOPs defaults. No CUDA headers: GPU names come in as strings and GPU timing syncs through .item().
#include "trainer/metrics.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/randn.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <sstream>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"

namespace longtune::trainer {

namespace fs = std::filesystem;

std::string metric_number(double value) {
  if (!std::isfinite(value)) return std::isnan(value) ? "NaN" : (value > 0 ? "Infinity" : "-Infinity");
  return fmt::format("{}", value);
}

namespace {

double number_or_nan(const nlohmann::json& record, const char* key) {
  const auto it = record.find(key);
  return it != record.end() && it->is_number() ? it->get<double>() : std::nan("");
}

int64_t count_or_zero(const nlohmann::json& record, const char* key) {
  const auto it = record.find(key);
  return it != record.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

std::string train_line(const TrainRecord& r) {
  return fmt::format(
      "{{\"kind\": \"train\", \"step\": {}, \"loss\": {}, \"lr\": {}, \"grad_norm\": {}, \"tokens\": {}, "
      "\"tokens_per_s\": {:.1f}, \"mfu\": {:.5f}, \"host_peak_bytes\": {}, \"device_peak_bytes\": {}, \"elapsed_s\": {:.3f}, "
      "\"skipped\": {}}}",
      r.step, metric_number(r.loss), metric_number(r.lr), metric_number(r.grad_norm), r.tokens, r.tokens_per_s, r.mfu, r.host_peak_bytes, r.device_peak_bytes,
      r.elapsed_s, r.skipped ? "true" : "false");
}

std::string eval_line(const EvalRecord& r) {
  const std::string window = r.window ? fmt::format(", \"window\": {}", *r.window) : "";
  return fmt::format("{{\"kind\": \"eval\", \"step\": {}, \"val_loss\": {}, \"val_ppl\": {}, \"val_tokens\": {}{}}}",
                     r.step, metric_number(r.val_loss), metric_number(r.val_ppl), r.val_tokens, window);
}

}  // namespace

const char* metrics_file_name() { return "metrics.jsonl"; }

std::string to_json_line(const MetricsRecord& record) {
  return std::holds_alternative<TrainRecord>(record) ? train_line(std::get<TrainRecord>(record))
                                                     : eval_line(std::get<EvalRecord>(record));
}

MetricsHistory read_metrics(const fs::path& path) {
  MetricsHistory history;
  std::istringstream lines(read_file(path));
  int64_t line_number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++line_number;
    if (line.empty()) continue;
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) {
      LT_WARN("metrics: {}:{}: skipping an unreadable line", path.string(), line_number);
      continue;
    }
    const double step = number_or_nan(record, "step");
    if (!std::isfinite(step)) continue;
    const std::string kind = record.value("kind", std::string());
    // Records written before "kind" existed: eval ones carried "eval": true, train ones a loss.
    const auto eval_flag = record.find("eval");
    if (kind == "eval" || (eval_flag != record.end() && eval_flag->is_boolean() && eval_flag->get<bool>())) {
      EvalRecord r;
      r.step = static_cast<int64_t>(step);
      r.val_loss = number_or_nan(record, "val_loss");
      r.val_ppl = number_or_nan(record, "val_ppl");
      r.val_tokens = count_or_zero(record, "val_tokens");
      const auto window = record.find("window");
      if (window != record.end() && window->is_number_integer()) r.window = window->get<int64_t>();
      history.eval.push_back(r);
    } else if (kind == "train" || (kind.empty() && record.contains("loss"))) {
      TrainRecord r;
      r.step = static_cast<int64_t>(step);
      r.loss = number_or_nan(record, "loss");
      r.lr = number_or_nan(record, "lr");
      r.grad_norm = number_or_nan(record, "grad_norm");
      r.tokens = count_or_zero(record, "tokens");
      r.tokens_per_s = number_or_nan(record, "tokens_per_s");
      r.mfu = number_or_nan(record, "mfu");
      r.host_peak_bytes = count_or_zero(record, "host_peak_bytes");
      r.device_peak_bytes = count_or_zero(record, "device_peak_bytes");
      r.elapsed_s = number_or_nan(record, "elapsed_s");
      const auto skipped = record.find("skipped");
      r.skipped = skipped != record.end() && skipped->is_boolean() && skipped->get<bool>();
      history.train.push_back(r);
    }
  }
  return history;
}

MetricsLog::MetricsLog(fs::path path, bool enabled) : path_(std::move(path)), enabled_(enabled) {
  if (!enabled_) return;
  if (path_.has_parent_path()) fs::create_directories(path_.parent_path());
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  LT_CHECK(fd >= 0, "metrics log: cannot open {}: {}", path_.string(), std::strerror(errno));
  ::close(fd);
}

void MetricsLog::write(const MetricsRecord& record) {
  if (!enabled_) return;
  // Opened per record rather than held open: truncate_after replaces the file by rename, and a
  // single O_APPEND write() per line leaves at worst one torn last line after a kill.
  const std::string line = to_json_line(record) + "\n";
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  LT_CHECK(fd >= 0, "metrics log: cannot open {}: {}", path_.string(), std::strerror(errno));
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      ::close(fd);
      LT_FAIL("metrics log: cannot write {}: {}", path_.string(), std::strerror(error));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

void MetricsLog::truncate_after(int64_t step) {
  if (!enabled_ || !fs::exists(path_)) return;
  const std::string content = read_file(path_);
  std::string kept;
  std::istringstream in(content);
  int64_t line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.empty()) continue;
    // A kill mid-write leaves a torn last line. Any unreadable line is dropped with a warning rather
    // than failing the resume: the log is a report, not state the run depends on.
    nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded()) {
      LT_WARN("metrics log {}:{}: dropping an unreadable line (torn by an interrupted write?): '{}'",
              path_.string(), line_number, line);
      continue;
    }
    // Records without a numeric step (none are written today) cannot be placed in time; kept.
    const auto it = record.is_object() ? record.find("step") : record.end();
    if (it != record.end() && it->is_number() && it->get<double>() > static_cast<double>(step)) continue;
    kept += line;
    kept += '\n';
  }
  if (kept != content) write_file_atomic(path_, kept);
}

double training_flops_per_token(const model::ModelConfig& config, int64_t seq_len) {
  const double d = static_cast<double>(config.hidden_size);
  const double q = static_cast<double>(config.num_attention_heads * config.head_dim);
  const double kv = static_cast<double>(config.num_key_value_heads * config.head_dim);
  const double layers = static_cast<double>(config.num_hidden_layers);
  // N: the weights every token multiplies through. q and o are d x (heads*head_dim), k and v
  // d x (kv_heads*head_dim) under GQA; gate/up/down d x ffn; two RMSNorm weights per block and the
  // final norm (negligible, counted as HF's parameter count does); the lm_head's vocab x d counted
  // even when tied to the embedding, since its matmul runs either way. The input embedding is a
  // lookup, not a matmul, and is left out.
  const double attention = 2 * d * q + 2 * d * kv;
  const double mlp = 3 * d * static_cast<double>(config.intermediate_size);
  const double per_layer = attention + mlp + 2 * d;
  const double lm_head = static_cast<double>(config.vocab_size) * d;
  const double n = layers * per_layer + d + lm_head;
  // Attention scores (QK^T) and values (AV): 2 matmuls of 2*q*seq_len FLOPs each per token
  // forward, times 3 for forward + backward; no causal-mask discount (PaLM's convention).
  const double attention_matmuls = 12 * layers * q * static_cast<double>(seq_len);
  return 6 * n + attention_matmuls;
}

double known_gpu_peak_flops(const std::string& name, bool bf16) {
  const auto has = [&](const char* part) { return name.find(part) != std::string::npos; };
  // Dense (no 2:4 sparsity) tensor-core peaks from NVIDIA's datasheets: {bf16, tf32}.
  std::pair<double, double> peak{0, 0};
  if (has("H200")) {  // also "GH200"
    peak = {989e12, 494e12};
  } else if (has("H100") || has("H800")) {
    if (has("PCIe")) peak = {756e12, 378e12};
    else if (has("NVL")) peak = {835e12, 418e12};
    else peak = {989e12, 494e12};  // SXM5, e.g. "NVIDIA H100 80GB HBM3"
  } else if (has("A100") || has("A800")) {
    peak = {312e12, 156e12};
  } else if (has("L40S")) {
    peak = {362e12, 183e12};
  } else if (has("A10G")) {
    peak = {70e12, 35e12};
  } else if (has("L4")) {
    peak = {121e12, 60e12};
  }
  return bf16 ? peak.first : peak.second;
}

double default_peak_flops(const std::string& cuda_device_name, bool bf16) {
  if (cuda_device_name.empty()) return measure_cpu_matmul_flops();
  const double known = known_gpu_peak_flops(cuda_device_name, bf16);
  if (known > 0) return known;
  const double measured = measure_cuda_matmul_flops(bf16);
  LT_WARN("peak FLOP/s of '{}' is not in the table; MFU uses a measured {} matmul rate of {:.1f} TFLOP/s "
          "(set train.peak_flops to override)",
          cuda_device_name, bf16 ? "bf16" : "fp32", measured / 1e12);
  return measured;
}

namespace {

// Best rate of `rounds` timed runs, each repeating c = a @ b until it has taken `seconds`. The
// .item() on one element of the result waits for queued device work without CUDA headers.
double best_matmul_rate(const at::Tensor& a, const at::Tensor& b, int rounds, double seconds) {
  using clock = std::chrono::steady_clock;
  const double flops_per_matmul = 2.0 * static_cast<double>(a.size(0)) * a.size(1) * b.size(1);
  at::Tensor c = at::matmul(a, b);  // warm-up (allocations, kernel selection)
  c.view(-1)[0].item<float>();
  double best = 0;
  for (int round = 0; round < rounds; ++round) {
    int64_t count = 0;
    const auto start = clock::now();
    double elapsed = 0;
    do {
      c = at::matmul(a, b);
      ++count;
      if (count % 4 == 0 || !a.is_cuda()) c.view(-1)[0].item<float>();
      elapsed = std::chrono::duration<double>(clock::now() - start).count();
    } while (elapsed < seconds);
    c.view(-1)[0].item<float>();
    elapsed = std::chrono::duration<double>(clock::now() - start).count();
    best = std::max(best, flops_per_matmul * static_cast<double>(count) / elapsed);
  }
  return best;
}

}  // namespace

double measure_cpu_matmul_flops() {
  const int64_t n = 512;
  const at::Tensor a = at::randn({n, n}, at::kFloat);
  const at::Tensor b = at::randn({n, n}, at::kFloat);
  return best_matmul_rate(a, b, /*rounds=*/3, /*seconds=*/0.1);
}

double measure_cuda_matmul_flops(bool bf16) {
  const int64_t n = 8192;
  const auto options = at::TensorOptions().device(at::kCUDA).dtype(bf16 ? at::kBFloat16 : at::kFloat);
  const at::Tensor a = at::randn({n, n}, options);
  const at::Tensor b = at::randn({n, n}, options);
  return best_matmul_rate(a, b, /*rounds=*/3, /*seconds=*/0.15);
}

}  // namespace longtune::trainer
