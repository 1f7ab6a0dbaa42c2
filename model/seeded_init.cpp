#include "model/seeded_init.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "common/check.h"

namespace longtune::model {

namespace {

// SplitMix64's finaliser: consecutive inputs give unrelated seeds.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t hash_name(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (const unsigned char c : name) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

}  // namespace

bool is_norm_weight(const std::string& name) { return name.ends_with("norm.weight"); }

void SeededInit::read(const std::string& name, int64_t begin, int64_t end, const at::Tensor& out) const {
  LT_CHECK(begin >= 0 && begin <= end && out.dim() == 1 && out.numel() == end - begin,
           "seeded init: range [{}, {}) of {} does not match an output of {} elements", begin, end, name, out.numel());
  at::NoGradGuard no_grad;
  at::Tensor target = const_cast<at::Tensor&>(out);
  if (is_norm_weight(name)) {
    target.fill_(1.0);
    return;
  }
  const uint64_t name_seed = mix(seed_ ^ hash_name(name));
  for (int64_t chunk = begin / kChunk; chunk * kChunk < end; ++chunk) {
    const int64_t chunk_begin = chunk * kChunk;
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(mix(name_seed + static_cast<uint64_t>(chunk)));
    const at::Tensor values = at::normal(0.0, std_, {kChunk}, generator, at::TensorOptions().dtype(at::kFloat));
    const int64_t lo = std::max(begin, chunk_begin), hi = std::min(end, chunk_begin + kChunk);
    target.narrow(0, lo - begin, hi - lo).copy_(values.narrow(0, lo - chunk_begin, hi - lo));
  }
}

}  // namespace longtune::model
