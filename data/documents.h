// The read side of token data as the readers see it: an ordered, random-access list of documents of
// token ids. A prepared split on disk (data/prepared_data.h) and an in-memory list (for tests and
// small tools) both implement it. Not the packing or the order in which training reads them
// (data/packed_reader.h) and not evaluation windows (data/eval_windows.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace longtune::data {

class TokenDocuments {
 public:
  virtual ~TokenDocuments() = default;
  virtual uint64_t num_documents() const = 0;
  virtual uint64_t document_length(uint64_t doc) const = 0;
  // Copies tokens [begin, begin + count) of document `doc` into `out`; the range must lie inside it.
  virtual void copy_tokens(uint64_t doc, uint64_t begin, uint64_t count, int64_t* out) const = 0;
  // Sum of all document lengths.
  virtual uint64_t total_tokens() const = 0;
};

// Documents held in memory.
class InMemoryDocuments final : public TokenDocuments {
 public:
  explicit InMemoryDocuments(std::vector<std::vector<int64_t>> documents);
  uint64_t num_documents() const override { return documents_.size(); }
  uint64_t document_length(uint64_t doc) const override;
  void copy_tokens(uint64_t doc, uint64_t begin, uint64_t count, int64_t* out) const override;
  uint64_t total_tokens() const override { return total_; }

 private:
  std::vector<std::vector<int64_t>> documents_;
  uint64_t total_ = 0;
};

}  // namespace longtune::data
