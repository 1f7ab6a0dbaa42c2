// The job-file schema at work: parsing (via config/yaml_reader.h), printing and comparing by walking
// the field lists of job_config.h, so the three cannot disagree on which keys exist; how each C++
// type is read and written; and the range and cross-field rules of validate(), which are rules, not
// part of the lists. Not the YAML mechanics (yaml_reader.cpp), not the network shape (model/config.h).
#include "config/job_config.h"

#include <algorithm>
#include <limits>
#include <type_traits>
#include <utility>

#include <fmt/ranges.h>

#include "common/check.h"
#include "config/yaml_reader.h"

namespace longtune::config {
namespace {

using Names = std::vector<std::string>;

// Job-file spellings of each enum, in declaration order.
const Names& names_of(Dtype) { static const Names n{"float32", "bfloat16"}; return n; }
const Names& names_of(Precision) { static const Names n{"fp32", "bf16_mixed", "bf16"}; return n; }
const Names& names_of(LrDecay) { static const Names n{"constant", "cosine", "linear"}; return n; }
const Names& names_of(NanPolicy) { static const Names n{"stop", "skip"}; return n; }
const Names& names_of(Sharding) { static const Names n{"full_shard", "shard_grad_op", "no_shard"}; return n; }
const Names& names_of(Backend) { static const Names n{"auto", "nccl", "gloo"}; return n; }
const Names& names_of(EvalProtocol) { static const Names n{"sliding", "packed"}; return n; }
const Names& names_of(model::RopeType) {
  static const Names n{"default", "linear", "dynamic", "yarn", "llama3"};
  return n;
}

template <class E>
std::string name_of(E value) { return names_of(value).at(static_cast<size_t>(value)); }

template <class E>
void read_enum(YamlSection& section, const std::string& key, E& out) {
  const Names& names = names_of(out);
  std::string value = name_of(out);
  section.read_choice(key, value, names);
  out = static_cast<E>(std::find(names.begin(), names.end(), value) - names.begin());
}

constexpr int64_t kMaxTokens = int64_t{1} << 20;  // sanity bound on seq_len and eval windows
constexpr const char* kPresetPrefix = "preset:";
constexpr double kInf = std::numeric_limits<double>::infinity();  // "no upper bound" in ranges

// ---- walking the field lists ----

// A type with a field list is a section (a nested mapping); any other member is one setting. Fields<T>
// is left incomplete for every other T.
template <class T>
concept Section = requires { sizeof(Fields<T>); };

template <class Member>
struct MemberType;
template <class T, class S>
struct MemberType<T S::*> {
  using type = T;
};

// Members of aggregate S: the most initializers `S{...}` accepts (each AnyValue becomes one member).
struct AnyValue {
  template <class T>
  operator T() const;  // never called: only named in unevaluated requires-expressions
};
template <class S, size_t... I>
constexpr bool takes_initializers(std::index_sequence<I...>) {
  return requires { S{(void(I), AnyValue{})...}; };
}
template <class S, size_t N = 0>
constexpr size_t member_count() {
  if constexpr (takes_initializers<S>(std::make_index_sequence<N + 1>{})) {
    return member_count<S, N + 1>();
  } else {
    return N;
  }
}
template <class S>
constexpr size_t listed_count() {
  size_t n = 0;
  Fields<S>::visit([&](const char*, auto) { ++n; });
  return n;
}
// A member left out of its list would never be read, printed or compared; make that a build error.
// JobConfig's source and origins are the two members that are not settings.
template <class S>
constexpr bool every_member_listed() {
  return member_count<S>() == listed_count<S>() + (std::is_same_v<S, JobConfig> ? 2 : 0);
}

// Calls leaf("dotted.key", object.*member...) for every setting below the sections `objects` (all of
// type S), in list order: one object to print it, two to compare them.
template <class S, class Leaf, class... Objects>
void for_each_setting(const std::string& prefix, Leaf& leaf, Objects&... objects) {
  Fields<S>::visit([&](const char* key, auto member) {
    using T = typename MemberType<decltype(member)>::type;
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    if constexpr (Section<T>) {
      for_each_setting<T>(path, leaf, (objects.*member)...);
    } else {
      leaf(path, (objects.*member)...);
    }
  });
}

// ---- parsing ----

// Reads a whole section in list order (a nested section is finished before the keys after it), then
// rejects any key it did not ask for; enums by their job-file names.
template <class S>
void read_section(YamlSection yaml, S& out) {
  static_assert(every_member_listed<S>(), "a member of this section is missing from its Fields list");
  Fields<S>::visit([&](const char* key, auto member) {
    auto& field = out.*member;
    using T = std::remove_cvref_t<decltype(field)>;
    if constexpr (Section<T>) {
      read_section(yaml.section(key), field);
    } else if constexpr (std::is_enum_v<T>) {
      read_enum(yaml, key, field);
    } else {
      yaml.read(key, field);
    }
  });
  yaml.finish();
}

JobConfig parse(const YamlDocument& document) {
  JobConfig c;
  c.source = document.source_name();
  read_section(YamlSection(document, &c.origins), c);
  return c;
}

// ---- validation ----

// Throws "<where key was set>: <key>: <message>"; a key never set is placed at its nearest set
// ancestor section, else at the source file.
class Checker {
 public:
  explicit Checker(const JobConfig& config) : config_(config) {}

  template <class... Args>
  void require(bool ok, const std::string& key, fmt::format_string<Args...> format, Args&&... args) const {
    if (ok) return;
    const std::string message = fmt::format(format, std::forward<Args>(args)...);
    const std::string where = where_of(key);
    if (where.empty()) LT_FAIL("{}: {}", key, message);
    LT_FAIL("{}: {}: {}", where, key, message);
  }
  void positive(int64_t value, const std::string& key) const {
    require(value > 0, key, "must be > 0, got {}", value);
  }
  void non_negative(int64_t value, const std::string& key) const {
    require(value >= 0, key, "must be >= 0, got {}", value);
  }
  void in_range(double value, double lo, bool lo_open, double hi, bool hi_open, const std::string& key) const {
    const bool ok = (lo_open ? value > lo : value >= lo) && (hi_open ? value < hi : value <= hi);
    if (hi == kInf) return require(ok, key, "must be {} {}, got {}", lo_open ? ">" : ">=", lo, value);
    require(ok, key, "must be in {}{}, {}{}, got {}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]", value);
  }

 private:
  std::string where_of(std::string key) const {
    while (true) {
      if (auto it = config_.origins.find(key); it != config_.origins.end()) return it->second;
      const auto dot = key.rfind('.');
      if (dot == std::string::npos) return config_.source;
      key.resize(dot);
    }
  }
  const JobConfig& config_;
};

void validate_model(const Checker& check, const ModelSection& m) {
  check.require(!m.source.empty(), "model.source", "must not be empty (\"preset:<name>\" or a path)");
  if (auto preset = m.preset_name()) {
    const auto names = model::model_preset_names();
    const auto suggestion = did_you_mean(*preset, names);
    check.require(std::find(names.begin(), names.end(), *preset) != names.end(), "model.source",
                  "unknown preset '{}'{} (presets: {})", *preset,
                  suggestion ? fmt::format(" (did you mean '{}'?)", *suggestion) : "",
                  fmt::join(names, ", "));
  }
  if (m.rope_theta) check.in_range(*m.rope_theta, 0, true, kInf, false, "model.rope_theta");

  const model::RopeScaling& r = m.rope_scaling;
  const std::string type = name_of(r.type);
  const std::string p = "model.rope_scaling.";
  check.require(r.factor >= 1.0, p + "factor", "must be >= 1 for type {} (L'/L), got {}", type, r.factor);
  check.require(r.type != model::RopeType::kDefault || r.factor == 1.0, p + "factor",
                "is {} but type is default (no scaling); set type: linear for Position Interpolation",
                r.factor);
  if (r.original_max_position_embeddings) {
    check.require(*r.original_max_position_embeddings > 0, p + "original_max_position_embeddings",
                  "must be > 0, got {}", *r.original_max_position_embeddings);
  }
  // original_max_position_embeddings defaults to the source model's pretrained window, and llama3's
  // frequency band to the one the model carries (model::with_rope_scaling), so neither is required.
  if (r.low_freq_factor && r.high_freq_factor)
    check.require(*r.high_freq_factor > *r.low_freq_factor, p + "high_freq_factor",
                  "must be > low_freq_factor ({}), got {}", *r.low_freq_factor, *r.high_freq_factor);
  for (const auto& [key, value] : {std::pair{"attention_factor", r.attention_factor},
                                   {"beta_fast", r.beta_fast}, {"beta_slow", r.beta_slow},
                                   {"mscale", r.mscale}, {"mscale_all_dim", r.mscale_all_dim},
                                   {"low_freq_factor", r.low_freq_factor},
                                   {"high_freq_factor", r.high_freq_factor}}) {
    if (value) check.in_range(*value, 0, true, kInf, false, p + key);
  }
  if (r.beta_fast && r.beta_slow) {
    check.require(*r.beta_fast > *r.beta_slow, p + "beta_fast", "must be > beta_slow ({}), got {}",
                  *r.beta_slow, *r.beta_fast);
  }
}

// ---- printing ----

struct Entry {
  std::string key;    // dotted path
  std::string value;  // YAML plain scalar or flow list; the raw text when `quoted`
  bool quoted = false;
};

std::string number(double value) {
  std::string text = fmt::format("{}", value);
  if (text.find_first_of(".eEni") == std::string::npos) text += ".0";
  return text;
}
std::string number(int64_t value) { return std::to_string(value); }
std::string number(uint64_t value) { return std::to_string(value); }
std::string number(bool value) { return value ? "true" : "false"; }
template <class T>
std::string number(const std::optional<T>& value) { return value ? number(*value) : "null"; }

std::string quote(const std::string& text) {
  std::string out = "\"";
  for (const char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(ch));
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string list(const std::vector<int64_t>& values) {
  std::string text;
  for (const int64_t value : values) text += (text.empty() ? "" : ", ") + number(value);
  return "[" + text + "]";
}

// One setting's value: strings quoted (any text survives the round trip), enums by name.
template <class T>
Entry make_entry(const std::string& key, const T& value) {
  if constexpr (std::is_same_v<T, std::string>) {
    return {key, value, true};
  } else if constexpr (std::is_enum_v<T>) {
    return {key, name_of(value)};
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    return {key, list(value)};
  } else {
    return {key, number(value)};
  }
}

// As to_table shows a value: unquoted, but an empty string as "".
std::string table_value(const Entry& entry) {
  return entry.quoted && entry.value.empty() ? "\"\"" : entry.value;
}

std::vector<Entry> entries(const JobConfig& config) {
  std::vector<Entry> out;
  const auto leaf = [&](const std::string& key, const auto& value) { out.push_back(make_entry(key, value)); };
  for_each_setting<JobConfig>("", leaf, config);
  return out;
}

}  // namespace

std::string to_string(Dtype value) { return name_of(value); }
std::string to_string(Precision value) { return name_of(value); }
std::string to_string(LrDecay value) { return name_of(value); }
std::string to_string(NanPolicy value) { return name_of(value); }
std::string to_string(Sharding value) { return name_of(value); }
std::string to_string(Backend value) { return name_of(value); }
std::string to_string(EvalProtocol value) { return name_of(value); }

int64_t EvalSection::stride_at(int64_t window) const {
  if (stride_fraction > 0) return std::max<int64_t>(1, static_cast<int64_t>(stride_fraction * static_cast<double>(window)));
  return stride;
}

std::optional<std::string> ModelSection::preset_name() const {
  if (!source.starts_with(kPresetPrefix)) return std::nullopt;
  return source.substr(std::string(kPresetPrefix).size());
}

bool JobConfig::operator==(const JobConfig& other) const {
  bool equal = true;
  const auto leaf = [&](const std::string&, const auto& a, const auto& b) { equal = equal && a == b; };
  for_each_setting<JobConfig>("", leaf, *this, other);
  return equal;
}

int TrainSection::grad_accum_steps(int world_size) const {
  LT_CHECK(world_size >= 1, "world size must be >= 1, got {}", world_size);
  LT_CHECK(micro_batch >= 1, "train.micro_batch: must be > 0, got {}", micro_batch);
  const int64_t per_step = micro_batch * world_size;
  LT_CHECK(global_batch > 0 && global_batch % per_step == 0,
           "train.global_batch: {} is not divisible by train.micro_batch ({}) x world size ({}) = {}; "
           "use a multiple of {}", global_batch, micro_batch, world_size, per_step, per_step);
  return static_cast<int>(global_batch / per_step);
}

void JobConfig::validate() const {
  const Checker check(*this);
  validate_model(check, model);

  check.require(data.seq_len >= 2 && data.seq_len <= kMaxTokens, "data.seq_len",
                "must be in [2, {}] tokens, got {}", kMaxTokens, data.seq_len);

  check.in_range(optim.lr, 0, true, kInf, false, "optim.lr");
  check.in_range(optim.beta1, 0, false, 1, true, "optim.beta1");
  check.in_range(optim.beta2, 0, false, 1, true, "optim.beta2");
  check.in_range(optim.eps, 0, true, kInf, false, "optim.eps");
  check.in_range(optim.weight_decay, 0, false, kInf, false, "optim.weight_decay");
  check.in_range(optim.grad_clip, 0, false, kInf, false, "optim.grad_clip");

  check.non_negative(schedule.warmup_steps, "schedule.warmup_steps");
  check.in_range(schedule.warmup_start_factor, 0, true, 1, false, "schedule.warmup_start_factor");
  check.in_range(schedule.min_lr_factor, 0, false, 1, false, "schedule.min_lr_factor");

  check.positive(train.steps, "train.steps");
  check.positive(train.global_batch, "train.global_batch");
  check.positive(train.micro_batch, "train.micro_batch");
  check.require(train.global_batch % train.micro_batch == 0, "train.global_batch",
                "{} is not divisible by train.micro_batch ({})", train.global_batch, train.micro_batch);
  check.positive(train.log_every, "train.log_every");
  check.non_negative(train.eval_every, "train.eval_every");
  check.positive(train.eval_batches, "train.eval_batches");
  check.non_negative(train.max_skipped_steps, "train.max_skipped_steps");
  check.require(train.peak_flops >= 0, "train.peak_flops", "must be >= 0, got {}", train.peak_flops);
  check.non_negative(train.cpu_threads, "train.cpu_threads");
  // Fewer rows turn the head's matmuls into matrix-vector products: slower, and their sums over
  // the vocabulary round worse (tests/model/loss_test).
  check.require(train.loss_chunk_tokens >= 64, "train.loss_chunk_tokens", "must be >= 64, got {}",
                train.loss_chunk_tokens);
  check.require(!train.run_dir.empty(), "train.run_dir", "must not be empty");
  const Dtype compute = train.precision == Precision::kFp32 ? Dtype::kFloat32 : Dtype::kBFloat16;
  check.require(model.dtype == compute, "model.dtype",
                "{} contradicts train.precision {} (which computes in {})", to_string(model.dtype),
                to_string(train.precision), to_string(compute));

  check.non_negative(checkpoint.every, "checkpoint.every");
  check.positive(checkpoint.keep_last, "checkpoint.keep_last");
  check.require(!checkpoint.resume.empty(), "checkpoint.resume",
                "must be \"auto\", \"never\" or a checkpoint path, got \"\"");

  check.positive(parallel.collective_timeout_s, "parallel.collective_timeout_s");
  check.require(parallel.prefetch_depth >= -1 && parallel.prefetch_depth <= 8, "parallel.prefetch_depth",
                "must be in [0, 8] units, or -1 for auto, got {}", parallel.prefetch_depth);
  check.require(parallel.reductions_in_flight >= 1 && parallel.reductions_in_flight <= 16,
                "parallel.reductions_in_flight", "must be in [1, 16], got {}", parallel.reductions_in_flight);

  check.require(eval.stride >= 1 && eval.stride <= kMaxTokens, "eval.stride",
                "must be in [1, {}] tokens, got {}", kMaxTokens, eval.stride);
  check.require(eval.stride_fraction >= 0 && eval.stride_fraction < 1, "eval.stride_fraction",
                "must be in [0, 1) (0: use eval.stride), got {}", eval.stride_fraction);
  check.non_negative(eval.max_documents, "eval.max_documents");
  check.non_negative(eval.min_document_tokens, "eval.min_document_tokens");
  check.non_negative(eval.truncate_tokens, "eval.truncate_tokens");
  const std::vector<int64_t> windows = eval.windows.empty() ? std::vector{data.seq_len} : eval.windows;
  for (const int64_t window : windows) {
    const std::string key = eval.windows.empty() ? "data.seq_len" : "eval.windows";
    check.require(window >= 2 && window <= kMaxTokens, key, "window {} is outside [2, {}] tokens",
                  window, kMaxTokens);
    if (eval.stride_fraction == 0)
      check.require(eval.stride <= window, "eval.stride", "{} exceeds the evaluation window {}", eval.stride, window);
    if (eval.protocol == EvalProtocol::kSliding && train.eval_every > 0)
      check.require(eval.stride_at(window) <= window - 1, eval.stride_fraction > 0 ? "eval.stride_fraction" : "eval.stride",
                    "the stride {} must be below the evaluation window {} (a window holds BOS + W - 1 tokens)",
                    eval.stride_at(window), window);
  }
}

JobConfig parse_job_config_string(const std::string& yaml_text, const std::string& source_name,
                                  const std::vector<std::string>& overrides) {
  YamlDocument document = YamlDocument::from_string(yaml_text, source_name);
  document.apply_overrides(overrides);
  JobConfig config = parse(document);
  config.validate();
  return config;
}

JobConfig load_job_config(const std::string& path, const std::vector<std::string>& overrides) {
  YamlDocument document = YamlDocument::from_file(path);
  document.apply_overrides(overrides);
  JobConfig config = parse(document);
  config.validate();
  return config;
}

std::string to_yaml(const JobConfig& config) {
  std::string out = "# longtune job config, resolved (every setting, defaults included)\n";
  std::vector<std::string> open;  // sections currently open
  for (const Entry& entry : entries(config)) {
    std::vector<std::string> parts;
    for (size_t start = 0, dot; ; start = dot + 1) {
      dot = entry.key.find('.', start);
      parts.push_back(entry.key.substr(start, dot == std::string::npos ? dot : dot - start));
      if (dot == std::string::npos) break;
    }
    size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() && open[common] == parts[common]) ++common;
    open.resize(common);
    for (; open.size() + 1 < parts.size(); open.push_back(parts[open.size()])) {
      out += fmt::format("{:{}}{}:\n", "", 2 * open.size(), parts[open.size()]);
    }
    out += fmt::format("{:{}}{}: {}\n", "", 2 * open.size(), parts.back(),
                       entry.quoted ? quote(entry.value) : entry.value);
  }
  return out;
}

std::string to_table(const JobConfig& config) {
  const auto all = entries(config);
  size_t width = 0;
  for (const Entry& entry : all) width = std::max(width, entry.key.size());
  std::string out;
  for (const Entry& entry : all) out += fmt::format("{:<{}}  {}\n", entry.key, width, table_value(entry));
  return out;
}

std::vector<std::string> differing_settings(const JobConfig& saved, const JobConfig& current) {
  std::vector<std::string> out;
  const auto leaf = [&](const std::string& key, const auto& a, const auto& b) {
    if (a == b) return;
    out.push_back(
        fmt::format("{}: {} -> {}", key, table_value(make_entry(key, a)), table_value(make_entry(key, b))));
  };
  for_each_setting<JobConfig>("", leaf, saved, current);
  return out;
}

}  // namespace longtune::config
