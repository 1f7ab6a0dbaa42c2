// HF config.json as `longtune train/eval/inspect` read it from a model directory
// (model/hf_checkpoint load_hf_model_config): JSON syntax, every field, both rope_scaling schemas
// ("type" and "rope_type"), and an accepted config written back and read again unchanged.
#include <nlohmann/json.hpp>

#include "fuzz/fuzz_support.h"
#include "model/config.h"
#include "model/hf_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longtune;
  fuzz::input_file(data, size, "config.json");
  const auto config = fuzz::accepted([] { return model::load_hf_model_config(fuzz::scratch_dir().string()); });
  if (!config) return 0;
  const nlohmann::json written = model::model_config_to_hf_json(*config);
  const model::ModelConfig again = model::model_config_from_hf_json(written, "again");
  fuzz::require(model::model_config_to_hf_json(again) == written);
  return 0;
}
