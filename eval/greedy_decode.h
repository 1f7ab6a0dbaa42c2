// Greedy decoding with a KV cache: one forward over the prompt fills the cache, then each new token
// is a forward of that token alone (the prompt is never recomputed). Batch of one sequence, no
// sampling, no padding. Not a serving API and not beam search.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "model/llama.h"

namespace longtune::eval {

struct GreedyOutput {
  std::vector<int64_t> tokens;  // the generated ids, ending with `stop_id` if it was produced
  at::Tensor logits;            // (tokens.size(), vocab) fp32 on the CPU: the logits each token was chosen from
};

// Generates up to `max_new_tokens` ids after `prompt` (argmax of the fp32 logits, lowest id on a
// tie, as torch.argmax), stopping after `stop_id` (< 0: never). Runs in no-grad eval mode on the
// model's device. With `every_step` it still runs all max_new_tokens forwards after the stop (their
// tokens dropped), as a sharded model's collective forwards need on every rank. Throws
// longtune::Error on an empty prompt or max_new_tokens < 1.
GreedyOutput greedy_decode(model::LlamaImpl& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                           int64_t stop_id = -1, bool every_step = false);

}  // namespace longtune::eval
