#include "model/config.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>

#include "common/check.h"
#include "common/json_value.h"

namespace longtune::model {

using nlohmann::json;

RopeType rope_type_from_string(const std::string& name) {
  if (name == "default" || name == "none") return RopeType::kDefault;
  if (name == "linear") return RopeType::kLinear;
  if (name == "dynamic") return RopeType::kDynamic;
  if (name == "yarn") return RopeType::kYarn;
  if (name == "llama3") return RopeType::kLlama3;
  LT_FAIL("unsupported rope type '{}' (supported: default, linear, dynamic, yarn, llama3)", name);
}

std::string to_string(RopeType type) {
  switch (type) {
    case RopeType::kDefault: return "default";
    case RopeType::kLinear: return "linear";
    case RopeType::kDynamic: return "dynamic";
    case RopeType::kYarn: return "yarn";
    case RopeType::kLlama3: return "llama3";
  }
  return "default";
}

void ModelConfig::validate() const {
  LT_CHECK(vocab_size > 0, "model config: vocab_size must be > 0, got {}", vocab_size);
  LT_CHECK(hidden_size > 0, "model config: hidden_size must be > 0, got {}", hidden_size);
  LT_CHECK(intermediate_size > 0, "model config: intermediate_size must be > 0, got {}", intermediate_size);
  LT_CHECK(num_hidden_layers > 0, "model config: num_hidden_layers must be > 0, got {}", num_hidden_layers);
  LT_CHECK(num_attention_heads > 0, "model config: num_attention_heads must be > 0, got {}", num_attention_heads);
  LT_CHECK(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0,
           "model config: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
           num_attention_heads, num_key_value_heads);
  LT_CHECK(head_dim > 0 && head_dim % 2 == 0, "model config: head_dim must be positive and even, got {}", head_dim);
  // transformers' LLaMA rotates the whole head (its default RoPE ignores partial_rotary_factor).
  LT_CHECK(partial_rotary_factor == 1.0, "model config: partial_rotary_factor {} is not supported for LLaMA",
           partial_rotary_factor);
  LT_CHECK(max_position_embeddings > 0, "model config: max_position_embeddings must be > 0, got {}",
           max_position_embeddings);
  LT_CHECK(rms_norm_eps > 0, "model config: rms_norm_eps must be > 0, got {}", rms_norm_eps);
  LT_CHECK(rope_theta > 1, "model config: rope_theta must be > 1, got {}", rope_theta);
  const auto& rs = rope_scaling;
  if (rs.type != RopeType::kDefault) {
    LT_CHECK(rs.factor >= 1.0, "model config: rope_scaling.factor must be >= 1 for type {}, got {}",
             to_string(rs.type), rs.factor);
  }
  if (rs.type == RopeType::kLlama3) {
    LT_CHECK(rs.low_freq_factor && rs.high_freq_factor,
             "model config: rope_scaling type llama3 needs low_freq_factor and high_freq_factor");
    LT_CHECK(*rs.high_freq_factor > *rs.low_freq_factor,
             "model config: rope_scaling.high_freq_factor ({}) must exceed low_freq_factor ({})",
             *rs.high_freq_factor, *rs.low_freq_factor);
  }
  if (rs.original_max_position_embeddings) {
    LT_CHECK(*rs.original_max_position_embeddings > 0,
             "model config: rope_scaling.original_max_position_embeddings must be > 0");
  }
}

int64_t ModelConfig::rotary_dim() const { return static_cast<int64_t>(head_dim * partial_rotary_factor); }

int64_t ModelConfig::num_parameters() const {
  const int64_t d = hidden_size;
  const int64_t q = num_attention_heads * head_dim;
  const int64_t kv = num_key_value_heads * head_dim;
  const int64_t attention = d * q + 2 * d * kv + q * d;
  const int64_t mlp = 3 * d * intermediate_size;
  const int64_t layer = attention + mlp + 2 * d;
  const int64_t embed = vocab_size * d;
  return embed + num_hidden_layers * layer + d + (tie_word_embeddings ? 0 : embed);
}

namespace {

template <typename T>
T get_or(const json& j, const char* key, T fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return json_value<T>(*it, fmt::format("{}: field '{}'", source, key));
  } catch (const json::exception& e) {
    LT_FAIL("{}: field '{}' has the wrong type ({}): {}", source, key, it->type_name(), e.what());
  }
}

template <typename T>
T get_required(const json& j, const char* key, const std::string& source) {
  LT_CHECK(j.contains(key) && !j.at(key).is_null(), "{}: required field '{}' is missing", source, key);
  return get_or<T>(j, key, T{}, source);
}

template <typename T>
std::optional<T> get_optional(const json& j, const char* key, const std::string& source) {
  if (!j.contains(key) || j.at(key).is_null()) return std::nullopt;
  return get_or<T>(j, key, T{}, source);
}

int64_t first_token_id(const json& j, const char* key, int64_t fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  const std::string what = fmt::format("{}: field '{}'", source, key);
  if (it->is_array()) return it->empty() ? fallback : json_value<int64_t>((*it)[0], what);  // LLaMA-3 lists several EOS ids
  LT_CHECK(it->is_number_integer(), "{}: field '{}' must be an integer or a list of integers", source, key);
  return json_value<int64_t>(*it, what);
}

RopeScaling parse_rope(const json& r, const std::string& source, const std::string& field) {
  LT_CHECK(r.is_object(), "{}: '{}' must be an object or null", source, field);
  RopeScaling rs;
  std::string type = r.contains("rope_type") ? r.at("rope_type").get<std::string>()
                     : r.contains("type")    ? r.at("type").get<std::string>()
                                             : "default";
  try {
    rs.type = rope_type_from_string(type);
  } catch (const Error& e) {
    LT_FAIL("{}: {}.rope_type: {}", source, field, e.what());
  }
  const std::string ctx = source + ": " + field;
  if (rs.type != RopeType::kDefault) rs.factor = get_or<double>(r, "factor", 1.0, ctx);
  if (rs.type == RopeType::kLinear || rs.type == RopeType::kDynamic) {
    LT_CHECK(r.contains("factor"), "{}: '{}' of type {} needs 'factor'", source, field, type);
  }
  rs.original_max_position_embeddings = get_optional<int64_t>(r, "original_max_position_embeddings", ctx);
  rs.attention_factor = get_optional<double>(r, "attention_factor", ctx);
  rs.beta_fast = get_optional<double>(r, "beta_fast", ctx);
  rs.beta_slow = get_optional<double>(r, "beta_slow", ctx);
  rs.mscale = get_optional<double>(r, "mscale", ctx);
  rs.mscale_all_dim = get_optional<double>(r, "mscale_all_dim", ctx);
  rs.truncate = get_optional<bool>(r, "truncate", ctx);
  rs.low_freq_factor = get_optional<double>(r, "low_freq_factor", ctx);
  rs.high_freq_factor = get_optional<double>(r, "high_freq_factor", ctx);
  return rs;
}

}  // namespace

ModelConfig model_config_from_hf_json(const json& j, const std::string& source) {
  LT_CHECK(j.is_object(), "{}: expected a JSON object", source);
  const std::string model_type = get_or<std::string>(j, "model_type", "llama", source);
  LT_CHECK(model_type == "llama", "{}: model_type '{}' is not supported (only 'llama')", source, model_type);
  const std::string act = get_or<std::string>(j, "hidden_act", "silu", source);
  LT_CHECK(act == "silu", "{}: hidden_act '{}' is not supported (LLaMA uses 'silu')", source, act);
  LT_CHECK(!get_or<bool>(j, "attention_bias", false, source), "{}: attention_bias=true is not supported", source);
  LT_CHECK(!get_or<bool>(j, "mlp_bias", false, source), "{}: mlp_bias=true is not supported", source);

  ModelConfig c;
  c.vocab_size = get_required<int64_t>(j, "vocab_size", source);
  c.hidden_size = get_required<int64_t>(j, "hidden_size", source);
  c.intermediate_size = get_required<int64_t>(j, "intermediate_size", source);
  c.num_hidden_layers = get_required<int64_t>(j, "num_hidden_layers", source);
  c.num_attention_heads = get_required<int64_t>(j, "num_attention_heads", source);
  LT_CHECK(c.num_attention_heads > 0, "{}: num_attention_heads must be > 0", source);
  c.num_key_value_heads = get_or<int64_t>(j, "num_key_value_heads", c.num_attention_heads, source);
  c.head_dim = get_or<int64_t>(j, "head_dim", c.hidden_size / c.num_attention_heads, source);
  c.max_position_embeddings = get_or<int64_t>(j, "max_position_embeddings", 2048, source);
  c.rms_norm_eps = get_or<double>(j, "rms_norm_eps", 1e-6, source);
  c.tie_word_embeddings = get_or<bool>(j, "tie_word_embeddings", false, source);
  c.bos_token_id = first_token_id(j, "bos_token_id", 1, source);
  c.eos_token_id = first_token_id(j, "eos_token_id", 2, source);
  c.torch_dtype = get_or<std::string>(j, "torch_dtype", get_or<std::string>(j, "dtype", "float32", source), source);
  c.partial_rotary_factor = get_or<double>(j, "partial_rotary_factor", 1.0, source);
  c.rope_theta = get_or<double>(j, "rope_theta", 10000.0, source);

  // transformers 5.x: rope_parameters (with rope_theta inside); 4.x: rope_scaling + top-level rope_theta.
  if (j.contains("rope_parameters") && !j.at("rope_parameters").is_null()) {
    const json& rp = j.at("rope_parameters");
    c.rope_scaling = parse_rope(rp, source, "rope_parameters");
    c.rope_theta = get_or<double>(rp, "rope_theta", c.rope_theta, source + ": rope_parameters");
    c.partial_rotary_factor =
        get_or<double>(rp, "partial_rotary_factor", c.partial_rotary_factor, source + ": rope_parameters");
  } else if (j.contains("rope_scaling") && !j.at("rope_scaling").is_null()) {
    c.rope_scaling = parse_rope(j.at("rope_scaling"), source, "rope_scaling");
  }
  // As transformers does: yarn/llama3 without an explicit original window use a top-level
  // original_max_position_embeddings, else max_position_embeddings.
  auto& rs = c.rope_scaling;
  if ((rs.type == RopeType::kYarn || rs.type == RopeType::kLlama3)) {
    if (j.contains("original_max_position_embeddings")) {
      rs.original_max_position_embeddings =
          json_value<int64_t>(j.at("original_max_position_embeddings"), source + ": original_max_position_embeddings");
    } else if (!rs.original_max_position_embeddings) {
      rs.original_max_position_embeddings = c.max_position_embeddings;
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    LT_FAIL("{}: {}", source, e.what());
  }
  return c;
}

ModelConfig load_hf_config(const std::string& path) {
  std::ifstream in(path);
  LT_CHECK(in.good(), "cannot open model config '{}'", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers past double
    LT_FAIL("{}: invalid JSON: {}", path, e.what());
  }
  return model_config_from_hf_json(j, path);
}

json model_config_to_hf_json(const ModelConfig& c) {
  json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  j["pretraining_tp"] = 1;
  j["use_cache"] = true;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["torch_dtype"] = c.torch_dtype;
  j["dtype"] = c.torch_dtype;
  j["rope_theta"] = c.rope_theta;
  if (c.partial_rotary_factor != 1.0) j["partial_rotary_factor"] = c.partial_rotary_factor;

  const auto& rs = c.rope_scaling;
  json scaling = nullptr;
  if (rs.type != RopeType::kDefault) {
    scaling = json::object();
    scaling["type"] = to_string(rs.type);       // transformers < 4.45 reads "type"
    scaling["rope_type"] = to_string(rs.type);  // later versions read "rope_type"
    scaling["factor"] = rs.factor;
    if (rs.original_max_position_embeddings)
      scaling["original_max_position_embeddings"] = *rs.original_max_position_embeddings;
    if (rs.attention_factor) scaling["attention_factor"] = *rs.attention_factor;
    if (rs.beta_fast) scaling["beta_fast"] = *rs.beta_fast;
    if (rs.beta_slow) scaling["beta_slow"] = *rs.beta_slow;
    if (rs.mscale) scaling["mscale"] = *rs.mscale;
    if (rs.mscale_all_dim) scaling["mscale_all_dim"] = *rs.mscale_all_dim;
    if (rs.truncate) scaling["truncate"] = *rs.truncate;
    if (rs.low_freq_factor) scaling["low_freq_factor"] = *rs.low_freq_factor;
    if (rs.high_freq_factor) scaling["high_freq_factor"] = *rs.high_freq_factor;
  }
  // 4.x reads rope_scaling + rope_theta; 5.x prefers rope_parameters (and also accepts rope_scaling).
  j["rope_scaling"] = scaling;
  json params = scaling.is_null() ? json{{"rope_type", "default"}} : scaling;
  params.erase("type");
  params["rope_theta"] = c.rope_theta;
  j["rope_parameters"] = params;
  return j;
}

namespace {

ModelConfig make(int64_t vocab, int64_t d, int64_t ffn, int64_t layers, int64_t heads, int64_t kv_heads,
                 int64_t max_pos, double eps, double theta = 10000.0, bool tied = false) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = d;
  c.intermediate_size = ffn;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = d / heads;
  c.max_position_embeddings = max_pos;
  c.rms_norm_eps = eps;
  c.rope_theta = theta;
  c.tie_word_embeddings = tied;
  return c;
}

const std::map<std::string, ModelConfig>& presets() {
  static const std::map<std::string, ModelConfig> table = {
      // LLaMA 1 (Touvron et al. 2023): window 2048, eps 1e-6.
      {"llama-7b", make(32000, 4096, 11008, 32, 32, 32, 2048, 1e-6)},
      {"llama-13b", make(32000, 5120, 13824, 40, 40, 40, 2048, 1e-6)},
      {"llama-33b", make(32000, 6656, 17920, 60, 52, 52, 2048, 1e-6)},
      {"llama-65b", make(32000, 8192, 22016, 80, 64, 64, 2048, 1e-5)},
      // Llama 2: window 4096, eps 1e-5; 70B uses GQA with 8 KV heads.
      {"llama2-7b", make(32000, 4096, 11008, 32, 32, 32, 4096, 1e-5)},
      {"llama2-13b", make(32000, 5120, 13824, 40, 40, 40, 4096, 1e-5)},
      {"llama2-70b", make(32000, 8192, 28672, 80, 64, 8, 4096, 1e-5)},
      {"tinyllama-1.1b", make(32000, 2048, 5632, 22, 32, 4, 2048, 1e-5)},
      // Test and demo sizes (CPU in seconds).
      {"tiny", make(512, 64, 176, 2, 4, 4, 128, 1e-6)},
      {"tiny-gqa", make(512, 64, 176, 2, 4, 2, 128, 1e-6)},
      // The README demo's base model (about 1.9M parameters with a 4096-piece vocabulary).
      {"demo", make(4096, 128, 344, 4, 4, 4, 128, 1e-6)},
      {"small", make(4096, 256, 688, 4, 8, 4, 256, 1e-6)},
      {"gpu-100m", make(32000, 768, 2048, 12, 12, 12, 512, 1e-6)},
  };
  return table;
}

}  // namespace

ModelConfig model_preset(const std::string& name) {
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string known;
    for (const auto& [k, v] : presets()) known += (known.empty() ? "" : ", ") + k;
    LT_FAIL("unknown model preset '{}' (known: {})", name, known);
  }
  return it->second;
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const auto& [k, v] : presets()) names.push_back(k);
  return names;
}

}  // namespace longtune::model

namespace longtune::model {

RopeScaling parse_rope_spec(const std::string& spec) {
  RopeScaling rs;
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t colon = spec.find(':', start);
    parts.push_back(spec.substr(start, colon == std::string::npos ? std::string::npos : colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  rs.type = rope_type_from_string(parts[0]);
  LT_CHECK(parts.size() <= 3, "rope spec '{}': expected TYPE:FACTOR[:ORIGINAL_WINDOW]", spec);
  if (rs.type == RopeType::kDefault) {
    LT_CHECK(parts.size() == 1, "rope spec '{}': type none/default takes no factor", spec);
    return rs;
  }
  LT_CHECK(parts.size() >= 2, "rope spec '{}': type {} needs a factor, e.g. {}:4", spec, parts[0], parts[0]);
  try {
    size_t used = 0;
    rs.factor = std::stod(parts[1], &used);
    LT_CHECK(used == parts[1].size(), "trailing characters");
    if (parts.size() == 3) {
      rs.original_max_position_embeddings = std::stoll(parts[2], &used);
      LT_CHECK(used == parts[2].size(), "trailing characters");
    }
  } catch (const std::exception&) {
    LT_FAIL("rope spec '{}': factor and original window must be numbers", spec);
  }
  LT_CHECK(rs.factor >= 1.0, "rope spec '{}': factor must be >= 1", spec);
  if (rs.type == RopeType::kLlama3) {
    rs.low_freq_factor = 1.0;   // Llama 3.1's values
    rs.high_freq_factor = 4.0;
  }
  return rs;
}

ModelConfig with_rope_scaling(const ModelConfig& base, RopeScaling scaling) {
  ModelConfig c = base;
  const RopeScaling& carried = base.rope_scaling;
  const bool rescaling = carried.type != RopeType::kDefault && scaling.type != RopeType::kDefault;
  // Dynamic NTK keeps the pretrained window in max_position_embeddings; the others in their original.
  const int64_t pretrained = carried.type == RopeType::kDynamic
                                 ? base.max_position_embeddings
                                 : carried.original_max_position_embeddings.value_or(base.max_position_embeddings);
  if (rescaling) {
    // One rope_scaling describes the model (HF's config holds one), so a new one can only restate the
    // carried kind with another factor over the same pretrained window: linear:16 on a model already
    // at linear:4 over 2048 is linear 16 over 2048 (positions m/16), the composition of ×4 and ×4.
    LT_CHECK(scaling.type == carried.type,
             "rope scaling {}: the model already carries {} scaling (factor {} over its pretrained window {}); "
             "one rope_scaling cannot hold both. Use type {} with the total factor over {} (factors are L'/L "
             "against the pretrained window), or start from a model without scaling",
             to_string(scaling.type), to_string(carried.type), carried.factor, pretrained, to_string(carried.type),
             pretrained);
    LT_CHECK(!scaling.original_max_position_embeddings || *scaling.original_max_position_embeddings == pretrained,
             "rope scaling {}: original_max_position_embeddings {} differs from the pretrained window {} of the "
             "model's own {} scaling; leave it unset (factors count from the pretrained window)",
             to_string(scaling.type), *scaling.original_max_position_embeddings, pretrained, to_string(carried.type));
    // Shape parameters the new spec leaves unset keep the model's (llama3's frequency band, yarn's betas).
    for (auto [field, from] : {std::pair{&scaling.low_freq_factor, &carried.low_freq_factor},
                               {&scaling.high_freq_factor, &carried.high_freq_factor},
                               {&scaling.beta_fast, &carried.beta_fast}, {&scaling.beta_slow, &carried.beta_slow},
                               {&scaling.mscale, &carried.mscale}, {&scaling.mscale_all_dim, &carried.mscale_all_dim}})
      if (!*field) *field = *from;
    if (!scaling.truncate) scaling.truncate = carried.truncate;
  }
  const int64_t original = scaling.original_max_position_embeddings.value_or(pretrained);
  if (scaling.type == RopeType::kDefault) {
    c.rope_scaling = RopeScaling{};
    c.max_position_embeddings = original;
  } else if (scaling.type == RopeType::kDynamic) {
    // Dynamic NTK reads max_position_embeddings as the original window and scales beyond it.
    c.rope_scaling = scaling;
    c.rope_scaling.original_max_position_embeddings.reset();
    c.max_position_embeddings = original;
  } else {
    scaling.original_max_position_embeddings = original;
    c.rope_scaling = scaling;
    c.max_position_embeddings = static_cast<int64_t>(original * scaling.factor);
  }
  c.validate();
  return c;
}

}  // namespace longtune::model
