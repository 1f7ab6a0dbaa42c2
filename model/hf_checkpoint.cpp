#include "model/hf_checkpoint.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <unistd.h>
#include <fcntl.h>

#include <fmt/ranges.h>

#include "common/check.h"
#include "common/log.h"
#include "model/safetensors.h"

namespace longtune::model {

namespace fs = std::filesystem;
using nlohmann::json;

at::ScalarType dtype_from_name(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "float") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return at::kHalf;
  LT_FAIL("unknown dtype '{}' (use float32, bfloat16 or float16)", name);
}

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: LT_FAIL("unsupported model dtype {}", c10::toString(dtype));
  }
}

ModelConfig load_hf_model_config(const std::string& dir) {
  LT_CHECK(fs::is_directory(dir), "model directory '{}' does not exist", dir);
  return load_hf_config((fs::path(dir) / "config.json").string());
}

namespace {

bool is_ignored_tensor(const std::string& name) {
  // Old conversions stored RoPE's inv_freq buffer; it is recomputed from the config.
  return name.ends_with("rotary_emb.inv_freq");
}

// name -> file, from model.safetensors.index.json or the single model.safetensors.
std::map<std::string, std::string> weight_files(const fs::path& dir) {
  std::map<std::string, std::string> result;
  const fs::path index = dir / "model.safetensors.index.json";
  const fs::path single = dir / "model.safetensors";
  if (fs::exists(index)) {
    std::ifstream in(index);
    LT_CHECK(in.good(), "cannot open '{}'", index.string());
    json j;
    try {
      j = json::parse(in);
    } catch (const json::parse_error& e) {
      LT_FAIL("{}: invalid JSON: {}", index.string(), e.what());
    }
    LT_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
             "{}: missing object 'weight_map'", index.string());
    for (const auto& [name, file] : j["weight_map"].items()) {
      LT_CHECK(file.is_string(), "{}: weight_map['{}'] must be a file name", index.string(), name);
      const std::string f = file.get<std::string>();
      LT_CHECK(f.find('/') == std::string::npos && f != ".." && !f.empty(),
               "{}: weight_map['{}'] = '{}' is not a plain file name", index.string(), name, f);
      result[name] = (dir / f).string();
    }
    return result;
  }
  LT_CHECK(fs::exists(single), "no weights in '{}': expected model.safetensors or model.safetensors.index.json",
           dir.string());
  SafetensorsFile file(single.string());
  for (const auto& info : file.tensors()) result[info.name] = single.string();
  return result;
}

void fsync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

HfWeights::HfWeights(const std::string& dir_str, const ModelConfig& config)
    : dir_(dir_str) {
  const fs::path dir(dir_str);
  const auto files = weight_files(dir);
  // The names and shapes of the model, without memory.
  Llama shapes(config, ParameterOptions{ParameterInit::kHollow});
  std::map<std::string, std::vector<int64_t>> expected;
  for (const auto& p : shapes->named_parameters()) expected.emplace(p.key(), p.value().sizes().vec());

  std::map<std::string, std::shared_ptr<SafetensorsFile>> open_files;
  auto file_for = [&](const std::string& path) {
    auto& slot = open_files[path];
    if (!slot) {
      LT_CHECK(fs::exists(path), "weight file '{}' (listed in the index of '{}') does not exist", path, dir_str);
      slot = std::make_shared<SafetensorsFile>(path);
    }
    return slot;
  };
  for (const auto& [name, path] : files) {
    if (expected.count(name) || is_ignored_tensor(name)) continue;
    if (name == "lm_head.weight" && config.tie_word_embeddings) {
      LT_WARN("{}: ignoring lm_head.weight because tie_word_embeddings is true", path);
      continue;
    }
    LT_FAIL("{}: unexpected tensor '{}' for this config (a different architecture or a wrong config.json?)", path,
            name);
  }
  for (const auto& [name, shape] : expected) {
    auto it = files.find(name);
    LT_CHECK(it != files.end(), "{}: tensor '{}' is missing from the checkpoint", dir_str, name);
    std::shared_ptr<SafetensorsFile> file = file_for(it->second);
    LT_CHECK(file->contains(name), "{}: tensor '{}' is listed in the index but not in the file", it->second, name);
    const TensorInfo& info = file->info(name);
    LT_CHECK(info.shape == shape, "{}: tensor '{}' has shape {} but the config expects {}", it->second, name,
             fmt::join(info.shape, "x"), fmt::join(shape, "x"));
    LT_CHECK(at::isFloatingType(info.dtype), "{}: tensor '{}' has non-float dtype {}", it->second, name,
             c10::toString(info.dtype));
    file_of_.emplace(name, std::move(file));
  }
}

HfWeights::~HfWeights() = default;

void HfWeights::read(const std::string& name, int64_t begin, int64_t end, const at::Tensor& out) const {
  const auto it = file_of_.find(name);
  LT_CHECK(it != file_of_.end(), "{}: the model has no tensor '{}'", dir_, name);
  // A view of the mapping: only the pages of [begin, end) are read.
  const at::Tensor flat = it->second->tensor(name).view({-1});
  LT_CHECK(begin >= 0 && begin <= end && end <= flat.numel() && out.numel() == end - begin,
           "{}: range [{}, {}) of tensor '{}' ({} elements) into {} elements", it->second->path(), begin, end, name,
           flat.numel(), out.numel());
  torch::NoGradGuard no_grad;
  const_cast<at::Tensor&>(out).copy_(flat.narrow(0, begin, end - begin));
}

namespace {

// Removes the weights of an earlier save so the directory holds one consistent set.
void remove_stale_weights(const fs::path& dir) {
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("model") && (name.ends_with(".safetensors") || name.ends_with(".index.json")))
      stale.push_back(entry.path());
  }
  for (const fs::path& path : stale) fs::remove(path);
}

void write_index(const fs::path& dir, const json& weight_map, int64_t total_bytes) {
  json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  const fs::path tmp = dir / "model.safetensors.index.json.tmp";
  std::ofstream(tmp) << index.dump(2) << "\n";
  fsync_path(tmp);
  fs::rename(tmp, dir / "model.safetensors.index.json");
}

void write_hf_config(const fs::path& dir, ModelConfig config, at::ScalarType dtype) {
  config.torch_dtype = dtype_name(dtype);
  const fs::path tmp = dir / "config.json.tmp";
  std::ofstream(tmp) << model_config_to_hf_json(config).dump(2) << "\n";
  fsync_path(tmp);
  fs::rename(tmp, dir / "config.json");
  json generation = {{"bos_token_id", config.bos_token_id}, {"eos_token_id", config.eos_token_id}};
  std::ofstream(dir / "generation_config.json") << generation.dump(2) << "\n";
  fsync_path(dir);
}

}  // namespace

void save_hf_model(LlamaImpl& model, const std::string& dir_str, const HfSaveOptions& options) {
  const fs::path dir(dir_str);
  fs::create_directories(dir);
  const int64_t element = c10::elementSize(options.dtype);

  // Greedy split in parameter order, as transformers does.
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  int64_t shard_bytes = 0;
  int64_t total_bytes = 0;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    at::Tensor t = p.value().detach().to(at::kCPU, options.dtype).contiguous();
    const int64_t bytes = t.numel() * element;
    if (shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace_back(p.key(), t);
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  remove_stale_weights(dir);
  if (shards.size() == 1) {
    save_safetensors((dir / "model.safetensors").string(), shards[0], metadata);
  } else {
    json weight_map = json::object();
    const size_t n = shards.size();
    for (size_t i = 0; i < n; ++i) {
      const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
      save_safetensors((dir / file).string(), shards[i], metadata);
      for (const auto& [name, t] : shards[i]) weight_map[name] = file;
    }
    write_index(dir, weight_map, total_bytes);
  }

  write_hf_config(dir, model.config(), options.dtype);
}

void save_hf_model_streamed(const ModelConfig& config, const std::string& dir_str, int64_t groups,
                            const std::function<std::vector<std::pair<std::string, at::Tensor>>(int64_t)>& produce,
                            const HfSaveOptions& options) {
  const fs::path dir(dir_str);
  fs::create_directories(dir);
  remove_stale_weights(dir);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  json weight_map = json::object();
  int64_t total_bytes = 0;
  for (int64_t k = 0; k < groups; ++k) {
    std::vector<std::pair<std::string, at::Tensor>> tensors = produce(k);
    for (auto& [name, t] : tensors) {
      t = t.detach().to(at::kCPU, options.dtype).contiguous();
      total_bytes += t.numel() * t.element_size();
    }
    const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, groups);
    save_safetensors((dir / file).string(), tensors, metadata);
    for (const auto& [name, t] : tensors) weight_map[name] = file;
  }
  write_index(dir, weight_map, total_bytes);
  write_hf_config(dir, config, options.dtype);
}

}  // namespace longtune::model
