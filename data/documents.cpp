// InMemoryDocuments: documents held as vectors, with the range checks TokenDocuments promises.
// promises.
#include "data/documents.h"

#include <algorithm>

#include "common/check.h"

namespace longtune::data {

InMemoryDocuments::InMemoryDocuments(std::vector<std::vector<int64_t>> documents)
    : documents_(std::move(documents)) {
  for (const auto& doc : documents_) total_ += doc.size();
}

uint64_t InMemoryDocuments::document_length(uint64_t doc) const {
  LT_CHECK(doc < documents_.size(), "document {} out of range ({} documents)", doc,
           documents_.size());
  return documents_[doc].size();
}

void InMemoryDocuments::copy_tokens(uint64_t doc, uint64_t begin, uint64_t count,
                                    int64_t* out) const {
  const uint64_t length = document_length(doc);
  LT_CHECK(begin <= length && count <= length - begin,
           "tokens [{}, {}+{}) out of range of document {} ({} tokens)", begin, begin, count, doc,
           length);
  std::copy_n(documents_[doc].data() + begin, count, out);
}

}  // namespace longtune::data
