// The LLaMA decoder-only language model, top to bottom as in the paper: token embedding →
// N × Block (RMSNorm → RoPE attention → residual → RMSNorm → SwiGLU → residual) → RMSNorm → lm_head.
// Module names equal HF's (model.layers.3.self_attn.q_proj.weight, lm_head.weight), so a state dict
// maps 1:1 onto HF checkpoints. Knows nothing of distribution, YAML or files.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "model/block.h"
#include "model/config.h"
#include "model/rms_norm.h"

namespace longtune::model {

// Per-layer key/value caches for incremental decoding.
struct KVCache {
  std::vector<LayerKVCache> layers;
  int64_t length = 0;  // positions already cached
};

// HF's LlamaModel: embeddings, layers and the final norm (the "model." prefix).
class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const ModelConfig& config);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(Decoder);

class LlamaImpl : public torch::nn::Module {
 public:
  explicit LlamaImpl(ModelConfig config);

  // tokens (B, T) int64 -> logits (B, T, vocab) in the parameter dtype.
  at::Tensor forward(const at::Tensor& tokens);
  // tokens (B, T) -> final hidden states (B, T, d) after the last norm.
  at::Tensor hidden_states(const at::Tensor& tokens);
  // Incremental decoding: tokens (B, T_new) continue the cached positions; returns (B, T_new, vocab).
  at::Tensor forward_cached(const at::Tensor& tokens, KVCache& cache);
  // hidden (B, T, d) -> logits (B, T, vocab).
  at::Tensor logits(const at::Tensor& hidden);

  // Recompute each layer in backward instead of keeping its activations (training only).
  void set_activation_checkpointing(bool enabled) { activation_checkpointing_ = enabled; }
  bool activation_checkpointing() const { return activation_checkpointing_; }

  // HF's init: normal(0, 0.02) for linear and embedding weights, ones for norms.
  void init_weights(double std = 0.02);

  const ModelConfig& config() const { return config_; }
  // The modified config (e.g. a new rope_scaling for PI) takes effect at the next forward.
  void set_rope(const RopeScaling& scaling, int64_t max_position_embeddings);
  int64_t num_layers() const { return config_.num_hidden_layers; }
  BlockImpl& block(int64_t i);

  Decoder model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  std::pair<at::Tensor, at::Tensor> cos_sin(int64_t start, int64_t length, const at::Tensor& like) const;

  ModelConfig config_;
  bool activation_checkpointing_ = false;
};
TORCH_MODULE(Llama);

}  // namespace longtune::model
