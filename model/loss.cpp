#include "model/loss.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "common/check.h"

namespace longtune::model {

at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& tokens) {
  const int64_t T = tokens.size(1);
  // (B, T-1, V) predicts (B, T-1)
  at::Tensor shifted_logits = logits.narrow(1, 0, T - 1).to(at::kFloat).reshape({-1, logits.size(-1)});
  at::Tensor targets = tokens.narrow(1, 1, T - 1).reshape({-1});
  return at::cross_entropy_loss(shifted_logits, targets);
}

at::Tensor nll_sum(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index) {
  at::Tensor flat = logits.to(at::kFloat).reshape({-1, logits.size(-1)});
  return at::cross_entropy_loss(flat, targets.reshape({-1}), /*weight=*/{}, at::Reduction::Sum, ignore_index);
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows per chunk when `rows` are split into ceil(rows / chunk_rows) chunks of near-equal size: no lone
// short last chunk, whose matrix-vector products sum the vocabulary in a less accurate order.
int64_t balanced_chunk(int64_t rows, int64_t chunk_rows) {
  const int64_t chunks = std::max<int64_t>(1, (rows + chunk_rows - 1) / chunk_rows);
  return (rows + chunks - 1) / chunks;
}

struct LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t chunk_rows, int64_t ignore_index) {
    const int64_t rows = hidden.size(0);
    chunk_rows = balanced_chunk(rows, chunk_rows);
    at::Tensor nll = at::empty({rows}, hidden.options().dtype(at::kFloat));  // (N)
    at::Tensor lse = at::empty({rows}, hidden.options().dtype(at::kFloat));  // (N)
    for (int64_t start = 0; start < rows; start += chunk_rows) {
      const int64_t n = std::min(chunk_rows, rows - start);
      // The same ops as the unchunked path, so each row's NLL is the same number.
      at::Tensor logits = at::linear(hidden.narrow(0, start, n), weight).to(at::kFloat);  // (n, V)
      nll.narrow(0, start, n)
          .copy_(at::cross_entropy_loss(logits, targets.narrow(0, start, n), {}, at::Reduction::None, ignore_index));
      lse.narrow(0, start, n).copy_(at::logsumexp(logits, 1));
    }
    ctx->save_for_backward({hidden, weight, targets, lse});
    ctx->saved_data["chunk_rows"] = chunk_rows;
    ctx->saved_data["ignore_index"] = ignore_index;
    return nll;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &hidden = saved[0], &weight = saved[1], &targets = saved[2], &lse = saved[3];
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const at::Tensor grad_nll = grad_outputs[0].to(at::kFloat);  // (N)
    const int64_t rows = hidden.size(0);
    at::Tensor grad_hidden = at::empty_like(hidden);                            // (N, d)
    at::Tensor grad_weight = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));  // (V, d)
    for (int64_t start = 0; start < rows; start += chunk_rows) {
      const int64_t n = std::min(chunk_rows, rows - start);
      const at::Tensor h = hidden.narrow(0, start, n);
      const at::Tensor t = targets.narrow(0, start, n);
      const at::Tensor scored = t.ne(ignore_index);
      // d nll_r / d logits_r = softmax_r - onehot(t_r), scaled by the row's incoming gradient.
      at::Tensor g = at::linear(h, weight).to(at::kFloat);  // (n, V)
      g.sub_(lse.narrow(0, start, n).unsqueeze(1)).exp_();
      g.scatter_add_(1, t.masked_fill(scored.logical_not(), 0).unsqueeze(1),
                     scored.to(at::kFloat).neg().unsqueeze(1));
      g.mul_((grad_nll.narrow(0, start, n) * scored).unsqueeze(1));
      const at::Tensor g_compute = g.to(hidden.scalar_type());
      grad_hidden.narrow(0, start, n).copy_(at::mm(g_compute, weight));  // (n, d)
      grad_weight.add_(at::mm(g_compute.t(), h));                        // (V, d)
    }
    return {grad_hidden, grad_weight.to(weight.scalar_type()), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                int64_t chunk_rows, int64_t ignore_index) {
  LT_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
           "linear_cross_entropy: hidden must be (N, d) and weight (V, d), got {} and {} dims, d {} and {}",
           hidden.dim(), weight.dim(), hidden.size(-1), weight.size(-1));
  LT_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0),
           "linear_cross_entropy: targets must be (N) with N = {}, got {} dims of {} elements", hidden.size(0),
           targets.dim(), targets.numel());
  LT_CHECK(chunk_rows > 0, "linear_cross_entropy: chunk_rows must be > 0, got {}", chunk_rows);
  return LinearCrossEntropy::apply(hidden, weight, targets, chunk_rows, ignore_index);
}

}  // namespace longtune::model
