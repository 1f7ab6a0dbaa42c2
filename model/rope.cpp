#include "model/rope.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace longtune::model {

namespace {

// 1 / base^(arange(0, dim, 2) / dim) as transformers writes it (float32 exponent, scalar base).
at::Tensor base_inv_freq(double base, int64_t dim) {
  at::Tensor exponent = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  return at::reciprocal(at::pow(base, exponent));
}

double yarn_mscale(double scale, double mscale) {
  if (scale <= 1) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

RopeFrequencies yarn(const ModelConfig& c, int64_t dim) {
  const auto& rs = c.rope_scaling;
  const double base = c.rope_theta;
  const double factor = rs.factor;
  const double original = static_cast<double>(rs.original_max_position_embeddings.value_or(c.max_position_embeddings));
  double attention_factor;
  if (rs.attention_factor) {
    attention_factor = *rs.attention_factor;
  } else if (rs.mscale && rs.mscale_all_dim && *rs.mscale != 0 && *rs.mscale_all_dim != 0) {
    attention_factor = yarn_mscale(factor, *rs.mscale) / yarn_mscale(factor, *rs.mscale_all_dim);
  } else {
    attention_factor = yarn_mscale(factor, 1.0);
  }
  // transformers uses `get(...) or default`, so an explicit 0 also means the default.
  const double beta_fast = rs.beta_fast.value_or(0) != 0 ? *rs.beta_fast : 32.0;
  const double beta_slow = rs.beta_slow.value_or(0) != 0 ? *rs.beta_slow : 1.0;
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(original / (rotations * 2 * M_PI))) / (2 * std::log(base));
  };
  double low = correction_dim(beta_fast);
  double high = correction_dim(beta_slow);
  if (rs.truncate.value_or(true)) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // as transformers: avoid a zero-width ramp

  at::Tensor pos_freqs = at::pow(base, at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim));
  at::Tensor inv_extrapolation = at::reciprocal(pos_freqs);
  at::Tensor inv_interpolation = at::reciprocal(pos_freqs * factor);
  at::Tensor ramp = at::clamp((at::arange(dim / 2, at::kFloat) - low) / (high - low), 0, 1);
  at::Tensor extrapolation_factor = 1 - ramp;
  at::Tensor inv_freq = inv_interpolation * (1 - extrapolation_factor) + inv_extrapolation * extrapolation_factor;
  return {inv_freq, attention_factor};
}

RopeFrequencies llama3(const ModelConfig& c, int64_t dim) {
  const auto& rs = c.rope_scaling;
  const double factor = rs.factor;
  const double low_ff = rs.low_freq_factor.value();
  const double high_ff = rs.high_freq_factor.value();
  const double old_context = static_cast<double>(rs.original_max_position_embeddings.value_or(c.max_position_embeddings));
  const double low_wavelen = old_context / low_ff;
  const double high_wavelen = old_context / high_ff;
  at::Tensor inv_freq = base_inv_freq(c.rope_theta, dim);
  at::Tensor wavelen = at::reciprocal(inv_freq) * (2 * M_PI);
  at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / factor, inv_freq);
  at::Tensor smooth = (at::reciprocal(wavelen) * old_context - low_ff) / (high_ff - low_ff);
  at::Tensor smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
  at::Tensor is_medium = at::logical_not(wavelen < high_wavelen).mul(at::logical_not(wavelen > low_wavelen));
  return {at::where(is_medium, smoothed, scaled), 1.0};
}

}  // namespace

RopeFrequencies rope_frequencies(const ModelConfig& c, int64_t seq_len) {
  const int64_t dim = c.rotary_dim();
  const auto& rs = c.rope_scaling;
  switch (rs.type) {
    case RopeType::kDefault:
      return {base_inv_freq(c.rope_theta, dim), 1.0};
    case RopeType::kLinear:
      // PI: positions m -> m / factor, applied to the frequencies (equivalent; as transformers does).
      return {base_inv_freq(c.rope_theta, dim).div_(rs.factor), 1.0};
    case RopeType::kDynamic: {
      const double max_pos = static_cast<double>(c.max_position_embeddings);
      const double exponent = static_cast<double>(dim) / static_cast<double>(dim - 2);
      if (seq_len <= c.max_position_embeddings) {
        // transformers' initial frequencies, computed with Python floats at seq_len = max_pos.
        const double base = c.rope_theta * std::pow((rs.factor * max_pos / max_pos) - (rs.factor - 1), exponent);
        return {base_inv_freq(base, dim), 1.0};
      }
      // Beyond max_pos transformers recomputes with a tensor seq_len, i.e. in float32.
      at::Tensor seq = at::scalar_tensor(seq_len, at::kLong);
      at::Tensor base = ((seq * rs.factor / c.max_position_embeddings) - (rs.factor - 1)).pow(exponent) * c.rope_theta;
      at::Tensor exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
      return {at::reciprocal(at::pow(base, exponents)), 1.0};
    }
    case RopeType::kYarn:
      return yarn(c, dim);
    case RopeType::kLlama3:
      return llama3(c, dim);
  }
  LT_FAIL("unhandled rope type");
}

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const RopeFrequencies& freqs, const at::Tensor& positions,
                                               at::ScalarType dtype) {
  at::Tensor inv_freq = freqs.inv_freq.to(positions.device(), at::kFloat);
  at::Tensor angles = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // (T, dim/2)
  at::Tensor emb = at::cat({angles, angles}, -1);                          // (T, dim)
  at::Tensor cos = emb.cos() * freqs.attention_scaling;
  at::Tensor sin = emb.sin() * freqs.attention_scaling;
  return {cos.to(dtype), sin.to(dtype)};
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;
}

}  // namespace longtune::model
