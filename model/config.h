// LLaMA architecture description: shapes, RoPE base and scaling, as read from an HF config.json
// (transformers 4.x `rope_scaling`/`rope_theta` or 5.x `rope_parameters`) or from a named preset.
// Not the training job config (config/job_config.h): this is only what the network looks like.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace longtune::model {

enum class RopeType { kDefault, kLinear, kDynamic, kYarn, kLlama3 };

// "default" | "linear" | "dynamic" | "yarn" | "llama3"; throws on anything else.
RopeType rope_type_from_string(const std::string& name);
std::string to_string(RopeType type);

// HF's rope_scaling / rope_parameters. Unset optionals take HF's defaults at use time.
struct RopeScaling {
  RopeType type = RopeType::kDefault;
  double factor = 1.0;                                     // PI: L'/L
  std::optional<int64_t> original_max_position_embeddings; // L, the pretrained window
  // yarn
  std::optional<double> attention_factor;  // default 0.1*ln(factor)+1 (or the mscale ratio)
  std::optional<double> beta_fast;         // default 32
  std::optional<double> beta_slow;         // default 1
  std::optional<double> mscale;
  std::optional<double> mscale_all_dim;
  std::optional<bool> truncate;            // default true
  // llama3
  std::optional<double> low_freq_factor;   // required for llama3
  std::optional<double> high_freq_factor;  // required for llama3
};

struct ModelConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t head_dim = 128;                   // not always hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;   // the window the model is meant to read
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double partial_rotary_factor = 1.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  std::string torch_dtype = "float32";      // dtype recorded in config.json (storage dtype)

  // Throws longtune::Error naming the offending field if the shapes are inconsistent.
  void validate() const;
  // Parameter count (embeddings and lm_head counted once each; tied head counted once).
  int64_t num_parameters() const;
  // Rotary dimension = head_dim * partial_rotary_factor.
  int64_t rotary_dim() const;
};

// Parses an HF config.json object (either transformers 4.x or 5.x form). `source` names the file
// in error messages.
ModelConfig model_config_from_hf_json(const nlohmann::json& json, const std::string& source);
ModelConfig load_hf_config(const std::string& config_json_path);

// The config.json we write: readable by transformers 4.x (rope_scaling, rope_theta) and 5.x
// (rope_parameters) alike.
nlohmann::json model_config_to_hf_json(const ModelConfig& config);

// Named presets: llama-7b/13b/33b/65b, llama2-7b/13b/70b, tinyllama-1.1b, tiny, tiny-gqa, demo, small.
ModelConfig model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

}  // namespace longtune::model

namespace longtune::model {

// Parses "TYPE:FACTOR[:ORIGINAL_WINDOW]" (e.g. "linear:4", "yarn:8:2048", "none").
RopeScaling parse_rope_spec(const std::string& spec);

// `base` re-targeted with `scaling`. The factor is L'/L against the pretrained window L: base's
// max_position_embeddings, or the original window of the scaling it already carries (also the
// default of scaling.original_max_position_embeddings). For linear/yarn/llama3 the new
// max_position_embeddings becomes L × factor (what transformers records after PI). On a model that
// already carries a scaling only the same type composes (its factor replaced, unset shape
// parameters kept, positions still counted from L); another type is an error naming both, and
// "default" removes the scaling (the model as pretrained).
ModelConfig with_rope_scaling(const ModelConfig& base, RopeScaling scaling);

}  // namespace longtune::model
