#include "plan/memory_plan.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "common/check.h"

namespace longtune::plan {

namespace {

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

// What a rank costs before any model: LibTorch's libraries, the allocator's arenas, Gloo, the data
// reader. Measured as the peak RSS of `longtune train` on the `tiny` preset (one CPU thread) with
// this project's build of the torch 2.11 wheel; with CUDA, the libraries, the CUDA runtime and the
// NCCL host side (an estimate: not measured on this project's machines yet).
constexpr int64_t kCpuRuntimeHostBytes = 450 * kMiB;
constexpr int64_t kCudaRuntimeHostBytes = 3 * kGiB;
// On the device outside the caching allocator: the CUDA context, cuBLAS and NCCL's own buffers.
constexpr int64_t kCudaContextDeviceBytes = 1 * kGiB;

struct Units {
  std::vector<int64_t> numel;  // elements of each unit: embedding, each layer, final norm (+ head)
  int64_t total = 0;
  int64_t largest = 0;
};

Units model_units(const model::ModelConfig& m) {
  const int64_t d = m.hidden_size, f = m.intermediate_size, kv = m.num_key_value_heads * m.head_dim;
  const int64_t q = m.num_attention_heads * m.head_dim;
  Units units;
  units.numel.push_back(m.vocab_size * d);
  const int64_t layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * f;
  for (int64_t i = 0; i < m.num_hidden_layers; ++i) units.numel.push_back(layer);
  units.numel.push_back(d + (m.tie_word_embeddings ? 0 : m.vocab_size * d));
  for (int64_t n : units.numel) {
    units.total += n;
    units.largest = std::max(units.largest, n);
  }
  return units;
}

int64_t shard_numel(int64_t numel, int shards) { return (numel + shards - 1) / shards; }

// Bytes saved for backward per token by one decoder layer (model/block, attention, feed_forward,
// rms_norm): each RMSNorm keeps its fp32 input and normalised value and its output (with fp32
// compute the input is the block's own tensor, so three fp32 tensors; in bf16 one fp32 tensor and
// two bf16 ones); attention keeps q and k before and after RoPE and their rotated halves, v,
// SDPA's output and its re-laid-out copy (flash/efficient SDPA: no T x T matrix); SwiGLU keeps
// gate, silu(gate), up and their product.
int64_t layer_activation_bytes_per_token(const model::ModelConfig& m, int64_t compute) {
  const int64_t d = m.hidden_size, f = m.intermediate_size, kv = m.num_key_value_heads * m.head_dim;
  const int64_t q = m.num_attention_heads * m.head_dim;
  const int64_t norm = compute == 4 ? 12 * d : 4 * d + 2 * compute * d;
  return 2 * norm + compute * (4 * q + d + 4 * kv) + compute * 4 * f;
}

void add(MemoryPlan& plan, Phase phase, std::string name, int64_t bytes, bool on_device, std::string note) {
  if (bytes == 0) return;
  plan.items.push_back(PlanItem{std::move(name), phase, on_device ? 0 : bytes, on_device ? bytes : 0, std::move(note)});
}



}  // namespace

PlanInputs plan_inputs(const config::JobConfig& job, const model::ModelConfig& model, int world_size,
                       int local_world_size, bool launched, DeviceKind device, int64_t source_file_bytes) {
  LT_CHECK(world_size >= 1 && local_world_size >= 1 && local_world_size <= world_size,
           "plan: {} ranks per node do not fit a world of {}", local_world_size, world_size);
  PlanInputs in;
  in.model = model;
  in.precision = job.train.precision;
  in.sharding = job.parallel.sharding;
  in.activation_checkpointing = job.model.activation_checkpointing;
  in.micro_batch = job.train.micro_batch;
  in.seq_len = job.data.seq_len;
  in.loss_chunk_tokens = job.train.loss_chunk_tokens;
  in.world_size = world_size;
  in.local_world_size = local_world_size;
  LT_CHECK(launched || world_size == 1, "plan: {} ranks need a launcher", world_size);
  in.distributed = launched;
  in.device = device;
  in.source_file_bytes = source_file_bytes;
  in.prefetch_depth = job.parallel.prefetch_depth_on(device == DeviceKind::kCuda);
  in.reductions_in_flight = job.parallel.reductions_in_flight;
  in.reduce_bytes = job.parallel.reduce_dtype == config::Dtype::kBFloat16 ? 2 : 4;
  return in;
}

MemoryPlan plan_memory(const PlanInputs& in) {
  const model::ModelConfig& m = in.model;
  const bool cuda = in.device == DeviceKind::kCuda;
  const int64_t compute = in.precision == config::Precision::kFp32 ? 4 : 2;
  const int64_t master = in.precision == config::Precision::kBf16 ? 2 : 4;
  const bool sharded = in.distributed && in.sharding != config::Sharding::kNoShard;
  const int shards = sharded ? in.world_size : 1;
  const Units units = model_units(m);
  MemoryPlan plan;
  plan.parameters = units.total;

  // Local gradients are allocated by backward and dropped by zero_grad, so they never meet the
  // activations; FSDP's sharded master gradients are zeroed buffers that live throughout.
  const bool grads_lazy = !in.distributed;
  // Persistent state: one shard of each unit (padded to the world size) or the whole model.
  int64_t shard_elements = 0;
  for (int64_t n : units.numel) shard_elements += shard_numel(n, shards);
  const std::string of = sharded ? fmt::format("1/{} of each unit", shards) : "the whole model";
  add(plan, Phase::kThroughout, "master weights", master * shard_elements, cuda, fmt::format("{} B/param, {}", master, of));
  add(plan, Phase::kThroughout, "AdamW moments", 2 * master * shard_elements, cuda, fmt::format("2 x {} B/param, {}", master, of));
  add(plan, grads_lazy ? Phase::kAfterBackward : Phase::kThroughout, "master gradients", master * shard_elements, cuda, fmt::format("{} B/param, {}", master, of));
  plan.state_bytes_per_rank = 4 * master * shard_elements;

  // Compute-dtype parameters and their gradients.
  int64_t reductions = 0;  // bytes of gradient reductions at the start of backward (sharded)
  std::string reductions_note;
  const int64_t head_unit = static_cast<int64_t>(units.numel.size()) - 1;
  if (!in.distributed) {
    if (in.precision == config::Precision::kBf16Mixed) {
      add(plan, Phase::kThroughout, "bf16 model parameters", compute * units.total, cuda, "beside the fp32 masters");
      add(plan, Phase::kAfterBackward, "bf16 model gradients", compute * units.total, cuda, "cast into the master gradients after backward");
    }
  } else if (!sharded) {
    add(plan, Phase::kThroughout, "model parameters", compute * units.total, cuda, "no_shard: every unit stays gathered");
    add(plan, Phase::kAfterBackward, "model gradients", compute * units.total, cuda, "all-reduced once per step");
  } else {
    // full_shard holds the head from its forward to its backward (with tied embeddings the
    // embedding too), the layer computing and the prefetched ones; shard_grad_op holds every unit
    // from forward to backward.
    int64_t largest_layer = 0;
    for (int64_t u = 1; u < head_unit; ++u) largest_layer = std::max(largest_layer, units.numel[u]);
    const int64_t head = units.numel[head_unit] + (m.tie_word_embeddings ? units.numel[0] : 0);
    const bool keep_all = in.sharding == config::Sharding::kShardGradOp;
    const int64_t gathered = keep_all ? units.total : head + largest_layer * (1 + in.prefetch_depth);
    add(plan, Phase::kWithActivations, "gathered units", compute * gathered, cuda,
        keep_all ? "shard_grad_op: every unit from forward to backward"
                 : fmt::format("head + the computing layer + {} prefetched", in.prefetch_depth));
    // In backward each unit's compute-dtype gradients are copied into a reduce buffer that is
    // reduce-scattered, a bounded number in flight; the head's come right after the loss's backward.
    const int64_t rb = in.reduce_bytes;
    reductions = rb * units.numel[head_unit] + largest_layer * (compute + rb * in.reductions_in_flight);
    reductions_note = fmt::format("head's reduce buffer + a layer's gradients + {} layer reduce buffers ({} B/param)",
                                  in.reductions_in_flight, rb);
    // The embedding's backward comes last, once the activations are gone: gathered again, its
    // gradients and their fp32 reduce buffer (tied: part of the head's, above).
    if (!m.tie_word_embeddings && !keep_all)
      add(plan, Phase::kAfterBackward, "embedding backward", units.numel[0] * (2 * compute + in.reduce_bytes), cuda,
          "gathered embedding, its gradient and reduce buffer");
  }

  // Activations of one micro-batch.
  const int64_t tokens = in.micro_batch * in.seq_len;
  const int64_t per_layer = layer_activation_bytes_per_token(m, compute);
  const int64_t d = m.hidden_size;
  if (in.activation_checkpointing) {
    add(plan, Phase::kWithActivations, "checkpointed layer inputs", compute * d * tokens * m.num_hidden_layers, cuda,
        fmt::format("{} B/token per layer", compute * d));
    add(plan, Phase::kWithActivations, "recomputed layer", per_layer * tokens, cuda, fmt::format("one layer's {} B/token", per_layer));
  } else {
    add(plan, Phase::kWithActivations, "layer activations", per_layer * tokens * m.num_hidden_layers, cuda,
        fmt::format("{} B/token per layer", per_layer));
  }
  // A layer's backward works on as much again: its input and weight gradients, the recomputed or
  // still-held activations it differentiates.
  add(plan, Phase::kWithActivations, "layer backward working set", per_layer * tokens, cuda, "one layer's worth");
  add(plan, Phase::kAfterBackward, "last layer backward working set", per_layer * tokens, cuda,
      "the first layer's backward, beside the finished gradients");
  const int64_t final_norm = compute == 4 ? 12 * d : 4 * d + 2 * compute * d;
  add(plan, Phase::kWithActivations, "embedding output + final norm", (compute * d + final_norm) * tokens, cuda, "");

  // The fused head + loss (model/loss): the larger of forward (a chunk's fp32 logits and
  // log-softmax, the bf16 logits before the cast) and backward (a chunk's fp32 and compute-dtype
  // logit gradients, the head's fp32 gradient accumulator and one chunk's product).
  const int64_t chunk = std::min(in.loss_chunk_tokens, tokens);
  const int64_t vocab = m.vocab_size;
  const int64_t loss_forward = chunk * vocab * (8 + (compute == 4 ? 0 : compute));
  const int64_t loss_backward =
      chunk * vocab * (4 + (compute == 4 ? 0 : compute)) + vocab * d * (4 + compute) + tokens * d * compute;
  // The loss's transients are gone before the head's gradients are reduced: the larger of the two.
  const int64_t loss = std::max(loss_forward, loss_backward);
  const std::string loss_note = fmt::format("{} of {} positions at a time", chunk, tokens);
  if (loss >= reductions)
    add(plan, Phase::kWithActivations, "loss chunk", loss, cuda, loss_note + (reductions ? ", over the reductions" : ""));
  else
    add(plan, Phase::kWithActivations, "gradient reductions", reductions, cuda, reductions_note + ", over the loss chunk");

  // Loading: a rank's range of the source's files stays mapped (resident) until the load ends,
  // while the state exists but before any activation: what exceeds the step's transients.
  int64_t transient = 0;
  for (const PlanItem& item : plan.items)
    if (item.phase == Phase::kWithActivations) transient += item.host_bytes;
  const int64_t mapped = in.source_file_bytes / shards;
  if (mapped > transient) add(plan, Phase::kWithActivations, "weights being loaded (excess)", mapped - transient, false, "the mapped share of the source");

  add(plan, Phase::kThroughout, "runtime", cuda ? kCudaRuntimeHostBytes : kCpuRuntimeHostBytes, false,
      cuda ? "libraries, CUDA runtime, NCCL host side (estimate)" : "LibTorch, allocator, Gloo, data reader (measured)");
  if (cuda) add(plan, Phase::kThroughout, "CUDA context", kCudaContextDeviceBytes, true, "outside the caching allocator");

  // The peak: what lives throughout, plus the larger of what meets the activations (the end of
  // forward, the start of backward) and what only comes once they are freed.
  int64_t host[3] = {0, 0, 0}, device[3] = {0, 0, 0};
  for (const PlanItem& item : plan.items) {
    host[static_cast<int>(item.phase)] += item.host_bytes;
    device[static_cast<int>(item.phase)] += item.device_bytes;
  }
  plan.host_peak_bytes_per_rank = host[0] + std::max(host[1], host[2]);
  plan.device_peak_bytes_per_rank = device[0] + std::max(device[1], device[2]);
  return plan;
}

PlanVerdict check_fit(const MemoryPlan& plan, DeviceKind device, int64_t device_capacity, int64_t host_capacity) {
  PlanVerdict verdict;
  if (device == DeviceKind::kCuda && device_capacity > 0 && plan.device_peak_bytes_per_rank > device_capacity) {
    verdict.fits = false;
    verdict.reason = fmt::format("the device peak per rank, {}, exceeds the device's {}",
                                 format_bytes(plan.device_peak_bytes_per_rank), format_bytes(device_capacity));
  } else if (host_capacity > 0 && plan.host_peak_bytes_per_rank > host_capacity) {
    verdict.fits = false;
    verdict.reason = fmt::format("the host peak per rank, {}, exceeds the host memory per rank, {}",
                                 format_bytes(plan.host_peak_bytes_per_rank), format_bytes(host_capacity));
  }
  return verdict;
}

std::string to_string(Phase phase) {
  switch (phase) {
    case Phase::kThroughout: return "throughout";
    case Phase::kWithActivations: return "with activations";
    case Phase::kAfterBackward: return "after backward";
  }
  return "?";
}

std::string format_bytes(int64_t bytes) {
  if (bytes >= kGiB) return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / kGiB);
  if (bytes >= kMiB) return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / kMiB);
  if (bytes >= 1024) return fmt::format("{:.1f} KiB", bytes / 1024.0);
  return fmt::format("{} B", bytes);
}

int64_t parse_bytes(const std::string& text, const std::string& what) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    LT_FAIL("{}: '{}' is not a size (e.g. 80GiB, 80GB, 512MiB)", what, text);
  }
  std::string unit = text.substr(used);
  unit.erase(std::remove_if(unit.begin(), unit.end(), [](unsigned char c) { return std::isspace(c); }), unit.end());
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::vector<std::pair<std::string, double>> units = {
      {"", 1},          {"b", 1},          {"kb", 1e3},           {"mb", 1e6},          {"gb", 1e9},
      {"tb", 1e12},     {"kib", 1024.0},   {"mib", 1048576.0},    {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
  for (const auto& [name, scale] : units)
    if (unit == name) {
      LT_CHECK(std::isfinite(value) && value > 0 && value * scale < 9.2e18, "{}: '{}' is not a positive size", what,
               text);
      return static_cast<int64_t>(value * scale);
    }
  LT_FAIL("{}: unknown unit in '{}' (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", what, text);
}

namespace {

std::string describe(const PlanInputs& in) {
  const model::ModelConfig& m = in.model;
  return fmt::format("{:.2f}B parameters (d {}, {} layers, vocab {}), {} x {} tokens per rank, {}, {}{}, {} rank(s), {} per node, {}",
                     static_cast<double>(model_units(m).total) / 1e9, m.hidden_size, m.num_hidden_layers,
                     m.vocab_size, in.micro_batch, in.seq_len, config::to_string(in.precision),
                     in.distributed ? config::to_string(in.sharding) : "single process",
                     in.activation_checkpointing ? ", activation checkpointing" : "", in.world_size,
                     in.local_world_size, in.device == DeviceKind::kCuda ? "CUDA" : "CPU");
}

}  // namespace

std::string plan_table(const MemoryPlan& plan, const PlanInputs& in, const PlanVerdict& verdict, int64_t capacity) {
  std::string out = fmt::format("memory plan per rank: {}\n", describe(in));
  out += fmt::format("  {:<30} {:>11} {:>11}  {:<16} {}\n", "item", "host", "device", "held", "how");
  for (const PlanItem& item : plan.items)
    out += fmt::format("  {:<30} {:>11} {:>11}  {:<16} {}\n", item.name,
                       item.host_bytes ? format_bytes(item.host_bytes) : "-",
                       item.device_bytes ? format_bytes(item.device_bytes) : "-", to_string(item.phase), item.note);
  out += fmt::format("  {:<30} {:>11} {:>11}\n", "peak per rank", format_bytes(plan.host_peak_bytes_per_rank),
                     in.device == DeviceKind::kCuda ? format_bytes(plan.device_peak_bytes_per_rank) : "-");
  if (capacity > 0)
    out += verdict.fits ? fmt::format("  fits: {} available per rank\n", format_bytes(capacity))
                        : fmt::format("  does not fit: {}\n", verdict.reason);
  return out;
}

std::string plan_json(const MemoryPlan& plan, const PlanInputs& in, const PlanVerdict& verdict, int64_t capacity) {
  nlohmann::ordered_json items = nlohmann::ordered_json::array();
  for (const PlanItem& item : plan.items)
    items.push_back({{"name", item.name}, {"held", to_string(item.phase)}, {"host_bytes", item.host_bytes}, {"device_bytes", item.device_bytes},
                     {"note", item.note}});
  nlohmann::ordered_json j = {
      {"parameters", plan.parameters},
      {"world_size", in.world_size},
      {"local_world_size", in.local_world_size},
      {"device", in.device == DeviceKind::kCuda ? "cuda" : "cpu"},
      {"precision", config::to_string(in.precision)},
      {"sharding", in.distributed ? config::to_string(in.sharding) : "single_process"},
      {"activation_checkpointing", in.activation_checkpointing},
      {"micro_batch", in.micro_batch},
      {"seq_len", in.seq_len},
      {"state_bytes_per_rank", plan.state_bytes_per_rank},
      {"host_peak_bytes_per_rank", plan.host_peak_bytes_per_rank},
      {"device_peak_bytes_per_rank", plan.device_peak_bytes_per_rank},
      {"capacity_bytes_per_rank", capacity},
      {"fits", verdict.fits},
      {"items", items}};
  if (!verdict.fits) j["reason"] = verdict.reason;
  return j.dump();
}

}  // namespace longtune::plan
