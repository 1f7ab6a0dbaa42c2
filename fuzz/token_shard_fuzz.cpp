// An LTTOKENS shard (data/token_shard) as the readers open it: header (magic, version, width,
// counts), the document index, and every document of an accepted shard.
#include <vector>

#include "data/token_shard.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longtune;
  const auto path = fuzz::input_file(data, size, "input.tokens");
  fuzz::errors_only([&] {
    const data::TokenShard shard(path);
    uint64_t total = 0;
    for (uint64_t doc = 0; doc < shard.doc_count(); ++doc) {
      const uint64_t length = shard.document_length(doc);
      total += length;
      std::vector<int64_t> tokens(length);
      if (length > 0) shard.copy_tokens(doc, 0, length, tokens.data());
    }
    fuzz::require(total == shard.token_count());
  });
  return 0;
}
