// The LLaMA decoder-only language model, top to bottom as in the paper: token embedding →
// N × Block (RMSNorm → RoPE attention → residual → RMSNorm → SwiGLU → residual) → RMSNorm → lm_head.
// Module names equal HF's (model.layers.3.self_attn.q_proj.weight, lm_head.weight), so a state dict
// maps 1:1 onto HF checkpoints. Knows nothing of distribution, YAML or files.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "model/block.h"
#include "model/config.h"
#include "model/layers.h"
#include "model/rms_norm.h"

namespace longtune::model {

// Per-layer key/value caches for incremental decoding.
struct KVCache {
  std::vector<LayerKVCache> layers;
  int64_t length = 0;  // positions already cached
};

// Observer of the forward pass one "unit" of parameters at a time: unit 0 is the token embedding,
// units 1..num_layers the decoder layers, unit num_layers + 1 the final norm and the head. A
// trainer uses it to materialize parameters just in time (sharding) from outside the model; the
// model only calls it and knows nothing of what it does.
class UnitHooks {
 public:
  virtual ~UnitHooks() = default;
  virtual void before_unit(int64_t unit) = 0;
  // Returns the unit's output (the same tensor, possibly with backward hooks attached).
  virtual at::Tensor after_unit(int64_t unit, const at::Tensor& output) = 0;
};

// HF's LlamaModel: embeddings, layers and the final norm (the "model." prefix).
class DecoderImpl : public torch::nn::Module {
 public:
  DecoderImpl(const ModelConfig& config, const ParameterOptions& options);
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(Decoder);

class LlamaImpl : public torch::nn::Module {
 public:
  // Parameters as `options` says: by default fp32 on the CPU with HF's initialisation, seeded from
  // the global CPU generator (so at::manual_seed makes it reproducible); kEmpty or kHollow for a
  // model whose weights come from a WeightSource, whole or through sharding.
  explicit LlamaImpl(ModelConfig config, const ParameterOptions& options = {});

  // tokens (B, T) int64 -> logits (B, T, vocab) in the parameter dtype.
  at::Tensor forward(const at::Tensor& tokens);
  // Incremental decoding: tokens (B, T_new) continue the cached positions; returns (B, T_new, vocab).
  at::Tensor forward_cached(const at::Tensor& tokens, KVCache& cache);
  // tokens (B, T) -> fp32 NLL (B, T) of targets (B, T) (0 where a target is -100), the head fused with
  // the cross-entropy over chunks of loss_chunk_rows positions (model/loss.h), so the (B, T, vocab)
  // logits never exist. What training and evaluation use; forward() is for decoding and debugging.
  at::Tensor token_nll(const at::Tensor& tokens, const at::Tensor& targets, int64_t loss_chunk_rows);

  // Recompute each layer in backward instead of keeping its activations (training only).
  void set_activation_checkpointing(bool enabled) { activation_checkpointing_ = enabled; }
  bool activation_checkpointing() const { return activation_checkpointing_; }

  // HF's init: normal(0, std) for linear and embedding weights, ones for norms (model/seeded_init),
  // with a seed drawn from the global CPU generator.
  void init_weights(double std = 0.02);

  const ModelConfig& config() const { return config_; }
  // The modified config (e.g. a new rope_scaling for PI) takes effect at the next forward.
  void set_rope(const RopeScaling& scaling, int64_t max_position_embeddings);
  int64_t num_layers() const { return config_.num_hidden_layers; }
  BlockImpl& block(int64_t i);

  // Units of parameters (see UnitHooks): how many there are and which one a parameter, named as
  // in named_parameters(), belongs to. With tied embeddings the head reuses unit 0's matrix.
  int64_t num_units() const { return config_.num_hidden_layers + 2; }
  int64_t unit_of(const std::string& parameter_name) const;
  // Not owned; nullptr removes. Called around every unit in forward() and forward_cached().
  void set_unit_hooks(UnitHooks* hooks) { hooks_ = hooks; }

  Decoder model{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  std::pair<at::Tensor, at::Tensor> cos_sin(int64_t start, int64_t length, const at::Tensor& like) const;
  // Units 0..num_layers: (B, T) tokens -> (B, T, d) hidden states before the final norm.
  at::Tensor decoder_layers(const at::Tensor& tokens, KVCache* cache);
  // The head unit: final norm and lm_head, (B, T, d) -> (B, T, vocab).
  at::Tensor head(const at::Tensor& hidden);
  const at::Tensor& head_weight() const;
  void before(int64_t unit) {
    if (hooks_ != nullptr) hooks_->before_unit(unit);
  }
  at::Tensor after(int64_t unit, at::Tensor output) {
    return hooks_ != nullptr ? hooks_->after_unit(unit, output) : output;
  }

  ModelConfig config_;
  bool activation_checkpointing_ = false;
  UnitHooks* hooks_ = nullptr;
};
TORCH_MODULE(Llama);

}  // namespace longtune::model
