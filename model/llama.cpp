#include "model/llama.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include <mutex>

#include "common/check.h"
#include "model/activation_checkpoint.h"
#include "model/loss.h"
#include "model/rope.h"
#include "model/seeded_init.h"

namespace longtune::model {

DecoderImpl::DecoderImpl(const ModelConfig& c, const ParameterOptions& options) {
  embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(Block(c, options));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

LlamaImpl::LlamaImpl(ModelConfig config, const ParameterOptions& options) : config_(std::move(config)) {
  config_.validate();
  model = register_module("model", Decoder(config_, options));
  if (!config_.tie_word_embeddings)
    lm_head = register_module("lm_head", Linear(config_.hidden_size, config_.vocab_size, options));
  if (options.init == ParameterInit::kRandom) init_weights();
}

void LlamaImpl::init_weights(double std) {
  uint64_t seed = 0;
  {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    seed = generator.get<at::CPUGeneratorImpl>()->random64();
  }
  load_weights(*this, SeededInit(seed, std));
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

int64_t LlamaImpl::unit_of(const std::string& name) const {
  if (name.starts_with("model.embed_tokens.")) return 0;
  if (name.starts_with("model.norm.") || name.starts_with("lm_head.")) return config_.num_hidden_layers + 1;
  const std::string prefix = "model.layers.";
  if (name.starts_with(prefix)) {
    const size_t end = name.find('.', prefix.size());
    if (end != std::string::npos) {
      const int64_t layer = std::stoll(name.substr(prefix.size(), end - prefix.size()));
      if (layer >= 0 && layer < config_.num_hidden_layers) return layer + 1;
    }
  }
  LT_FAIL("Llama: '{}' is not a parameter of this model", name);
}

at::Tensor LlamaImpl::decoder_layers(const at::Tensor& tokens, KVCache* cache) {
  LT_CHECK(tokens.dim() == 2, "Llama::forward: tokens must be (B, T), got {} dims", tokens.dim());
  const int64_t start = cache != nullptr ? cache->length : 0;
  if (cache != nullptr && cache->layers.empty()) cache->layers.resize(config_.num_hidden_layers);
  before(0);
  at::Tensor h = after(0, model->embed_tokens->forward(tokens));  // (B, T, d)
  auto [cos, sin] = cos_sin(start, tokens.size(1), h);             // (T, head_dim) each
  const bool checkpoint =
      cache == nullptr && activation_checkpointing_ && is_training() && at::GradMode::is_enabled();
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    BlockImpl& layer = block(i);
    before(i + 1);
    if (checkpoint && h.requires_grad())
      h = checkpointed_block_forward(layer, h, cos, sin);
    else
      h = layer.forward(h, cos, sin, cache != nullptr ? &cache->layers[i] : nullptr);
    h = after(i + 1, h);
  }
  if (cache != nullptr) cache->length += tokens.size(1);
  return h;
}

const at::Tensor& LlamaImpl::head_weight() const {
  // Tied: the embedding matrix is the head.
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

at::Tensor LlamaImpl::head(const at::Tensor& hidden) {
  const int64_t head_unit = config_.num_hidden_layers + 1;
  before(head_unit);
  at::Tensor logits = at::linear(model->norm->forward(hidden), head_weight());  // (B, T, vocab)
  return after(head_unit, logits);
}

at::Tensor LlamaImpl::forward(const at::Tensor& tokens) { return head(decoder_layers(tokens, nullptr)); }

at::Tensor LlamaImpl::forward_cached(const at::Tensor& tokens, KVCache& cache) {
  return head(decoder_layers(tokens, &cache));
}

at::Tensor LlamaImpl::token_nll(const at::Tensor& tokens, const at::Tensor& targets, int64_t loss_chunk_rows) {
  LT_CHECK(targets.sizes() == tokens.sizes(), "Llama::token_nll: targets must be shaped like the tokens (B, T)");
  at::Tensor h = decoder_layers(tokens, nullptr);  // (B, T, d)
  const int64_t head_unit = config_.num_hidden_layers + 1;
  before(head_unit);
  h = model->norm->forward(h).reshape({-1, h.size(-1)});  // (B*T, d)
  at::Tensor nll = linear_cross_entropy(h, head_weight(), targets.reshape({-1}), loss_chunk_rows);  // (B*T)
  return after(head_unit, nll.reshape(targets.sizes()));                                            // (B, T)
}

}  // namespace longtune::model
