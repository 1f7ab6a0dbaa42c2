// Training reads: documents joined as BOS doc EOS BOS doc EOS ... into one token stream, cut into
// samples of exactly seq_len + 1 tokens (inputs = first seq_len, targets = last seq_len) at stride
// seq_len, so every stream token after the first is a target exactly once and nothing is padded.
// Samples are visited in a seeded permutation per epoch that does not depend on the world size;
// a global batch is the next `global_batch` samples of that order, a rank's share is a contiguous
// slice of it, and a gradient-accumulation micro-batch a slice of that. The whole position is
// ReaderState (seed, epoch, cursor), so a checkpoint resumes at exactly the next sample under any
// world size or micro-batch split. Not the tokenization (data/prepare.h) and not evaluation windows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/documents.h"

namespace longtune::data {

// Where the reader is: `cursor` samples of epoch `epoch`'s order are consumed. The other fields
// fingerprint the data so that restoring onto different data or a different seq_len is refused.
struct ReaderState {
  uint64_t seed = 0;
  uint64_t epoch = 0;
  uint64_t cursor = 0;
  uint64_t samples_per_epoch = 0;
  int64_t seq_len = 0;

  std::string to_json() const;
  // Throws longtune::Error naming the missing/invalid key.
  static ReaderState from_json(const std::string& text);
  bool operator==(const ReaderState&) const = default;
};

// Which samples a rank computes in one optimizer step: rank `rank` of `world` takes samples
// [rank * global_batch / world, (rank + 1) * global_batch / world) of the global batch, and
// micro-batch j of size micro_batch is [j * micro_batch, (j + 1) * micro_batch) of that share.
// Throws longtune::Error unless global_batch % (world * micro_batch) == 0.
struct BatchSlice {
  int64_t begin = 0;  // index into the global batch
  int64_t count = 0;
};
BatchSlice rank_slice(int64_t global_batch, int rank, int world);
BatchSlice micro_slice(int64_t global_batch, int rank, int world, int64_t micro_batch, int64_t micro_step);

class PackedSequenceReader {
 public:
  // `documents` must outlive the reader. Throws longtune::Error if the stream holds fewer than
  // seq_len + 1 tokens (not even one sample).
  PackedSequenceReader(const TokenDocuments& documents, int64_t seq_len, int64_t bos_id,
                       int64_t eos_id, uint64_t seed);

  int64_t seq_len() const { return seq_len_; }
  uint64_t samples_per_epoch() const { return samples_per_epoch_; }
  uint64_t stream_tokens() const { return stream_tokens_; }

  // The sample ids (stream positions / seq_len) of the next global batch, in order; crosses into
  // the next epoch (and its permutation) when the current one runs out. Advances the state.
  std::vector<uint64_t> next_global_batch(int64_t global_batch);
  // The sample ids a rank's micro-batch takes from a global batch (see micro_slice).
  static std::vector<uint64_t> micro_batch_ids(const std::vector<uint64_t>& global_ids, int rank,
                                               int world, int64_t micro_batch, int64_t micro_step);
  // Tokens of the given samples, row-major [ids.size(), seq_len + 1].
  std::vector<int64_t> read_samples(const std::vector<uint64_t>& ids) const;
  // Tokens [position, position + count) of the joined stream.
  void read_stream(uint64_t position, uint64_t count, int64_t* out) const;
  // The sample id at place `index` of epoch `epoch`'s order.
  uint64_t sample_at(uint64_t epoch, uint64_t index) const;

  const ReaderState& state() const { return state_; }
  // Throws longtune::Error if `state` was taken on different data (samples_per_epoch, seq_len).
  void restore(const ReaderState& state);

 private:
  const std::vector<uint32_t>& order(uint64_t epoch) const;

  const TokenDocuments& documents_;
  int64_t seq_len_;
  int64_t bos_id_;
  int64_t eos_id_;
  std::vector<uint64_t> doc_stream_begin_;  // stream position of each document's BOS; back = total
  uint64_t stream_tokens_ = 0;
  uint64_t samples_per_epoch_ = 0;
  ReaderState state_;
  mutable uint64_t cached_epoch_ = UINT64_MAX;
  mutable std::vector<uint32_t> cached_order_;
};

// The permutation of [0, n) for (seed, epoch): a Fisher-Yates shuffle driven by SplitMix64 with
// rejection sampling, so it is the same on every platform and standard library.
std::vector<uint32_t> epoch_permutation(uint64_t n, uint64_t seed, uint64_t epoch);

}  // namespace longtune::data
