#include "trainer/cli_common.h"

#include <ATen/ATen.h>

#include <fstream>
#include <vector>

#include "common/check.h"
#include "model/hf_checkpoint.h"

namespace longtune::cli {

at::Tensor read_token_file(const std::string& path, int64_t vocab_size) {
  std::ifstream in(path);
  LT_CHECK(in.good(), "cannot open token file '{}'", path);
  std::vector<int64_t> ids;
  std::string word;
  while (in >> word) {
    int64_t id = 0;
    size_t used = 0;
    try {
      id = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    LT_CHECK(used == word.size(), "{}: token #{} '{}' is not an integer", path, ids.size(), word);
    LT_CHECK(id >= 0 && id < vocab_size, "{}: token #{} = {} is outside the vocabulary [0, {})", path, ids.size(), id,
             vocab_size);
    ids.push_back(id);
  }
  LT_CHECK(ids.size() >= 2, "{}: need at least 2 tokens, found {}", path, ids.size());
  return at::tensor(ids, at::kLong);
}

model::Llama load_model(const std::string& dir, const std::string& dtype, const std::string& rope_spec) {
  model::ModelConfig config = model::load_hf_model_config(dir);
  if (!rope_spec.empty()) config = model::with_rope_scaling(config, model::parse_rope_spec(rope_spec));
  model::Llama llama = model::load_hf_model(dir, config, model::dtype_from_name(dtype));
  llama->eval();
  return llama;
}

}  // namespace longtune::cli
