// A SentencePiece tokenizer.model as prepare-data and passkey load it (data/tokenizer over
// libsentencepiece), then encoding a fixed text with whatever it accepted.
#include "data/tokenizer.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longtune;
  const auto path = fuzz::input_file(data, size, "tokenizer.model");
  fuzz::errors_only([&] {
    const data::Tokenizer tokenizer(path);
    const auto ids = tokenizer.encode("The pass key is 12345. Remember it.\nÜber naïve café 東京");
    for (const int32_t id : ids) fuzz::require(id >= 0 && id < tokenizer.vocab_size());
  });
  return 0;
}
