#include "model/llama.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include "common/check.h"
#include "model/activation_checkpoint.h"
#include "model/rope.h"

namespace longtune::model {

DecoderImpl::DecoderImpl(const ModelConfig& c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(Block(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

LlamaImpl::LlamaImpl(ModelConfig config) : config_(std::move(config)) {
  config_.validate();
  model = register_module("model", Decoder(config_));
  if (!config_.tie_word_embeddings) {
    lm_head = register_module(
        "lm_head", torch::nn::Linear(torch::nn::LinearOptions(config_.hidden_size, config_.vocab_size).bias(false)));
  }
  init_weights();
}

void LlamaImpl::init_weights(double std) {
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters()) {
    if (p.key().ends_with("norm.weight")) {
      p.value().fill_(1.0);
    } else {
      p.value().normal_(0.0, std);
    }
  }
}

void LlamaImpl::set_rope(const RopeScaling& scaling, int64_t max_position_embeddings) {
  ModelConfig updated = config_;
  updated.rope_scaling = scaling;
  updated.max_position_embeddings = max_position_embeddings;
  updated.validate();
  config_ = updated;
}

BlockImpl& LlamaImpl::block(int64_t i) { return *model->layers->ptr<BlockImpl>(i); }

std::pair<at::Tensor, at::Tensor> LlamaImpl::cos_sin(int64_t start, int64_t length, const at::Tensor& like) const {
  const RopeFrequencies freqs = rope_frequencies(config_, start + length);
  at::Tensor positions = at::arange(start, start + length, like.options().dtype(at::kLong));
  return rope_cos_sin(freqs, positions, like.scalar_type());
}

at::Tensor LlamaImpl::hidden_states(const at::Tensor& tokens) {
  LT_CHECK(tokens.dim() == 2, "Llama::forward: tokens must be (B, T), got {} dims", tokens.dim());
  at::Tensor h = model->embed_tokens->forward(tokens);  // (B, T, d)
  auto [cos, sin] = cos_sin(0, tokens.size(1), h);      // (T, head_dim) each
  const bool checkpoint = activation_checkpointing_ && is_training() && at::GradMode::is_enabled();
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    BlockImpl& layer = block(i);
    h = checkpoint && h.requires_grad() ? checkpointed_block_forward(layer, h, cos, sin) : layer.forward(h, cos, sin);
  }
  return model->norm->forward(h);
}

at::Tensor LlamaImpl::logits(const at::Tensor& hidden) {
  if (lm_head) return lm_head->forward(hidden);
  return at::linear(hidden, model->embed_tokens->weight);  // tied: the embedding matrix is the head
}

at::Tensor LlamaImpl::forward(const at::Tensor& tokens) { return logits(hidden_states(tokens)); }

at::Tensor LlamaImpl::forward_cached(const at::Tensor& tokens, KVCache& cache) {
  LT_CHECK(tokens.dim() == 2, "Llama::forward_cached: tokens must be (B, T), got {} dims", tokens.dim());
  if (cache.layers.empty()) cache.layers.resize(config_.num_hidden_layers);
  at::Tensor h = model->embed_tokens->forward(tokens);
  auto [cos, sin] = cos_sin(cache.length, tokens.size(1), h);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) h = block(i).forward(h, cos, sin, &cache.layers[i]);
  cache.length += tokens.size(1);
  return logits(model->norm->forward(h));
}

}  // namespace longtune::model
