// Packed training reader: the joined BOS doc EOS stream, its fixed-stride samples, the seeded
// per-epoch order, batch slicing and the resumable state. The order is our own Fisher-Yates over
// SplitMix64 (not std::shuffle or std::uniform_int_distribution, whose results differ between
// standard libraries), so a checkpoint resumes identically on any platform.
#include "data/packed_reader.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/check.h"

namespace longtune::data {
namespace {

// SplitMix64 (Steele, Lea, Flood 2014): tiny, full-period, well mixed; good enough to shuffle.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() { return mix(state_ += 0x9E3779B97F4A7C15ULL); }
  static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  // Uniform in [0, range), range >= 1, unbiased: Lemire's multiply-shift with rejection of the
  // few low products that would over-represent some results.
  uint64_t bounded(uint64_t range) {
    unsigned __int128 product = static_cast<unsigned __int128>(next()) * range;
    auto low = static_cast<uint64_t>(product);
    if (low < range) {
      const uint64_t threshold = (0 - range) % range;  // 2^64 mod range
      while (low < threshold) {
        product = static_cast<unsigned __int128>(next()) * range;
        low = static_cast<uint64_t>(product);
      }
    }
    return static_cast<uint64_t>(product >> 64);
  }

 private:
  uint64_t state_;
};

uint64_t get_u64(const nlohmann::json& j, const char* key) {
  LT_CHECK(j.contains(key), "reader state: missing key '{}'", key);
  const auto& v = j.at(key);
  LT_CHECK(v.is_number_unsigned(), "reader state: key '{}' must be a non-negative integer, got {}",
           key, v.dump());
  return v.get<uint64_t>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ReaderState

std::string ReaderState::to_json() const {
  const nlohmann::json j = {{"seed", seed},
                            {"epoch", epoch},
                            {"cursor", cursor},
                            {"samples_per_epoch", samples_per_epoch},
                            {"seq_len", seq_len}};
  return j.dump();
}

ReaderState ReaderState::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    LT_FAIL("reader state: not valid JSON: {}", e.what());
  }
  LT_CHECK(j.is_object(), "reader state: expected a JSON object, got {}", j.type_name());
  ReaderState state;
  state.seed = get_u64(j, "seed");
  state.epoch = get_u64(j, "epoch");
  state.cursor = get_u64(j, "cursor");
  state.samples_per_epoch = get_u64(j, "samples_per_epoch");
  const uint64_t seq_len = get_u64(j, "seq_len");
  LT_CHECK(seq_len >= 1 && seq_len <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
           "reader state: key 'seq_len' must be positive, got {}", seq_len);
  state.seq_len = static_cast<int64_t>(seq_len);
  return state;
}

// ---------------------------------------------------------------------------------------------
// Batch slicing

BatchSlice rank_slice(int64_t global_batch, int rank, int world) {
  LT_CHECK(world >= 1, "world size must be positive, got {}", world);
  LT_CHECK(rank >= 0 && rank < world, "rank {} out of range for world size {}", rank, world);
  LT_CHECK(global_batch >= 1 && global_batch % world == 0,
           "global batch {} must be a positive multiple of the world size {}", global_batch, world);
  const int64_t share = global_batch / world;
  return {rank * share, share};
}

BatchSlice micro_slice(int64_t global_batch, int rank, int world, int64_t micro_batch,
                       int64_t micro_step) {
  LT_CHECK(micro_batch >= 1, "micro-batch must be positive, got {}", micro_batch);
  LT_CHECK(world >= 1 && global_batch >= 1 && global_batch % (world * micro_batch) == 0,
           "global batch {} must be a positive multiple of world size {} x micro-batch {}",
           global_batch, world, micro_batch);
  const BatchSlice share = rank_slice(global_batch, rank, world);
  const int64_t steps = share.count / micro_batch;
  LT_CHECK(micro_step >= 0 && micro_step < steps,
           "micro-step {} out of range ({} micro-batches of {} per rank)", micro_step, steps,
           micro_batch);
  return {share.begin + micro_step * micro_batch, micro_batch};
}

// ---------------------------------------------------------------------------------------------
// Reader

PackedSequenceReader::PackedSequenceReader(const TokenDocuments& documents, int64_t seq_len,
                                           int64_t bos_id, int64_t eos_id, uint64_t seed)
    : documents_(documents), seq_len_(seq_len), bos_id_(bos_id), eos_id_(eos_id) {
  LT_CHECK(seq_len >= 1, "sequence length must be positive, got {}", seq_len);
  const uint64_t n = documents.num_documents();
  doc_stream_begin_.resize(n + 1);
  uint64_t position = 0;
  for (uint64_t d = 0; d < n; ++d) {
    doc_stream_begin_[d] = position;
    position += documents.document_length(d) + 2;  // BOS + tokens + EOS
  }
  doc_stream_begin_[n] = position;
  stream_tokens_ = position;
  const auto sample_tokens = static_cast<uint64_t>(seq_len) + 1;
  LT_CHECK(stream_tokens_ >= sample_tokens,
           "training data too small: {} documents make a stream of {} tokens (with BOS/EOS), fewer "
           "than one sample of seq_len + 1 = {}",
           n, stream_tokens_, sample_tokens);
  samples_per_epoch_ = (stream_tokens_ - 1) / static_cast<uint64_t>(seq_len);
  // The cached order holds uint32 sample ids.
  LT_CHECK(samples_per_epoch_ <= std::numeric_limits<uint32_t>::max(),
           "{} samples per epoch exceed the reader's limit of 2^32 - 1", samples_per_epoch_);
  state_ = {seed, 0, 0, samples_per_epoch_, seq_len};
}

std::vector<uint64_t> PackedSequenceReader::next_global_batch(int64_t global_batch) {
  LT_CHECK(global_batch >= 1, "global batch must be positive, got {}", global_batch);
  std::vector<uint64_t> ids;
  ids.reserve(static_cast<size_t>(global_batch));
  for (int64_t i = 0; i < global_batch; ++i) {
    if (state_.cursor >= samples_per_epoch_) {
      ++state_.epoch;
      state_.cursor = 0;
    }
    ids.push_back(sample_at(state_.epoch, state_.cursor));
    ++state_.cursor;
  }
  // Keep the state canonical: an exhausted epoch reads as the start of the next one.
  if (state_.cursor == samples_per_epoch_) {
    ++state_.epoch;
    state_.cursor = 0;
  }
  return ids;
}

std::vector<uint64_t> PackedSequenceReader::micro_batch_ids(const std::vector<uint64_t>& global_ids,
                                                            int rank, int world,
                                                            int64_t micro_batch,
                                                            int64_t micro_step) {
  const BatchSlice slice =
      micro_slice(static_cast<int64_t>(global_ids.size()), rank, world, micro_batch, micro_step);
  return {global_ids.begin() + slice.begin, global_ids.begin() + slice.begin + slice.count};
}

std::vector<int64_t> PackedSequenceReader::read_samples(const std::vector<uint64_t>& ids) const {
  const auto row = static_cast<uint64_t>(seq_len_) + 1;
  std::vector<int64_t> out(ids.size() * row);
  for (size_t k = 0; k < ids.size(); ++k) {
    LT_CHECK(ids[k] < samples_per_epoch_, "sample id {} out of range ({} samples per epoch)",
             ids[k], samples_per_epoch_);
    read_stream(ids[k] * static_cast<uint64_t>(seq_len_), row, out.data() + k * row);
  }
  return out;
}

void PackedSequenceReader::read_stream(uint64_t position, uint64_t count, int64_t* out) const {
  LT_CHECK(position <= stream_tokens_ && count <= stream_tokens_ - position,
           "stream range [{}, {}+{}) out of range ({} stream tokens)", position, position, count,
           stream_tokens_);
  if (count == 0) return;
  // The document whose BOS..EOS span holds `position`: the last one starting at or before it.
  // Empty spans cannot occur (every document contributes at least BOS and EOS).
  auto it = std::upper_bound(doc_stream_begin_.begin(), doc_stream_begin_.end(), position);
  uint64_t doc = static_cast<uint64_t>(it - doc_stream_begin_.begin()) - 1;
  uint64_t local = position - doc_stream_begin_[doc];  // 0 = BOS, 1..len = tokens, len + 1 = EOS
  while (count > 0) {
    const uint64_t len = doc_stream_begin_[doc + 1] - doc_stream_begin_[doc] - 2;
    if (local == 0) {
      *out++ = bos_id_;
      --count;
      local = 1;
    }
    if (count > 0 && local <= len) {
      const uint64_t n = std::min(count, len + 1 - local);
      documents_.copy_tokens(doc, local - 1, n, out);
      out += n;
      count -= n;
      local += n;
    }
    if (count > 0 && local == len + 1) {
      *out++ = eos_id_;
      --count;
      ++doc;
      local = 0;
    }
  }
}

uint64_t PackedSequenceReader::sample_at(uint64_t epoch, uint64_t index) const {
  LT_CHECK(index < samples_per_epoch_, "sample index {} out of range ({} samples per epoch)", index,
           samples_per_epoch_);
  return order(epoch)[index];
}

void PackedSequenceReader::restore(const ReaderState& state) {
  LT_CHECK(
      state.samples_per_epoch == samples_per_epoch_ && state.seq_len == seq_len_,
      "cannot resume the training reader: the saved state was taken on different data "
      "(saved samples_per_epoch {}, seq_len {}; this data has samples_per_epoch {}, seq_len {})",
      state.samples_per_epoch, state.seq_len, samples_per_epoch_, seq_len_);
  LT_CHECK(state.cursor <= samples_per_epoch_,
           "cannot resume the training reader: saved cursor {} is past the {} samples per epoch",
           state.cursor, samples_per_epoch_);
  // The cached order belongs to the old seed.
  if (state.seed != state_.seed) cached_epoch_ = UINT64_MAX;
  state_ = state;
}

const std::vector<uint32_t>& PackedSequenceReader::order(uint64_t epoch) const {
  if (epoch != cached_epoch_) {
    cached_order_ = epoch_permutation(samples_per_epoch_, state_.seed, epoch);
    cached_epoch_ = epoch;
  }
  return cached_order_;
}

std::vector<uint32_t> epoch_permutation(uint64_t n, uint64_t seed, uint64_t epoch) {
  LT_CHECK(n <= std::numeric_limits<uint32_t>::max() + uint64_t{1},
           "cannot permute {} samples (at most 2^32)", n);
  // Nested mixing, not a symmetric combination like mix(seed) ^ mix(epoch), so that no simple
  // relation between two (seed, epoch) pairs makes their orders equal.
  SplitMix64 rng(SplitMix64::mix(SplitMix64::mix(seed) + epoch));
  std::vector<uint32_t> permutation(n);
  for (uint64_t i = 0; i < n; ++i) permutation[i] = static_cast<uint32_t>(i);
  for (uint64_t i = n; i > 1; --i) {
    const uint64_t j = rng.bounded(i);
    std::swap(permutation[i - 1], permutation[j]);
  }
  return permutation;
}

}  // namespace longtune::data
