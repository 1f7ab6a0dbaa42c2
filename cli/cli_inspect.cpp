// `longtune inspect DIR`: what an HF model directory holds: architecture, parameter count, RoPE
// configuration, tensor dtypes and bytes per file. Reads headers only (no weights are loaded).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <map>

#include "common/check.h"
#include "model/config.h"
#include "model/hf_checkpoint.h"
#include "model/safetensors.h"
#include "cli/cli.h"

namespace longtune::cli {

namespace {

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) {
    bytes /= 1000;
    ++u;
  }
  return fmt::format("{:.2f} {}", bytes, units[u]);
}

void run_inspect(const std::string& dir) {
  namespace fs = std::filesystem;
  const model::ModelConfig c = model::load_hf_model_config(dir);
  const auto& rs = c.rope_scaling;
  std::cout << fmt::format("model directory   {}\n", dir);
  std::cout << fmt::format("architecture      LLaMA, {} layers, d={}, ffn={}, heads={} (kv {}), head_dim={}\n",
                           c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads,
                           c.num_key_value_heads, c.head_dim);
  std::cout << fmt::format("vocabulary        {} (bos {}, eos {}), tied embeddings: {}\n", c.vocab_size,
                           c.bos_token_id, c.eos_token_id, c.tie_word_embeddings ? "yes" : "no");
  std::cout << fmt::format("parameters        {} ({:.3f} B)\n", c.num_parameters(), c.num_parameters() / 1e9);
  std::cout << fmt::format("window            max_position_embeddings={}\n", c.max_position_embeddings);
  std::string rope = fmt::format("theta={} type={}", c.rope_theta, model::to_string(rs.type));
  if (rs.type != model::RopeType::kDefault) rope += fmt::format(" factor={}", rs.factor);
  if (rs.original_max_position_embeddings) rope += fmt::format(" original_window={}", *rs.original_max_position_embeddings);
  std::cout << fmt::format("rope              {}\n", rope);
  std::cout << fmt::format("config dtype      {}\n", c.torch_dtype);

  std::map<std::string, int64_t> count_by_dtype;
  int64_t total = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    model::SafetensorsFile file(entry.path().string());
    int64_t elements = 0;
    for (const auto& t : file.tensors()) {
      int64_t n = 1;
      for (auto s : t.shape) n *= s;
      elements += n;
      count_by_dtype[model::safetensors_dtype_name(t.dtype)] += n;
    }
    total += static_cast<int64_t>(file.file_size());
    std::cout << fmt::format("file              {}  {} tensors  {} elements  {}\n", entry.path().filename().string(),
                             file.tensors().size(), elements, human_bytes(static_cast<double>(file.file_size())));
  }
  for (const auto& [dtype, n] : count_by_dtype) std::cout << fmt::format("dtype             {}: {} elements\n", dtype, n);
  std::cout << fmt::format("weights on disk   {}\n", human_bytes(static_cast<double>(total)));
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("inspect", "Describe an HF model directory (architecture, size, RoPE, dtypes)");
  cmd->add_option("dir", *dir, "HF model directory")->required();
  cmd->callback([dir] { run_inspect(*dir); });
}

}  // namespace longtune::cli
