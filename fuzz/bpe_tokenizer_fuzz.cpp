// A byte-level BPE tokenizer.json as prepare-data, passkey and export load it (data/tokenizer over
// data/bpe_tokenizer and data/pre_tokenizer), then encoding text with whatever it accepted. The
// input is the tokenizer.json, a NUL byte, and the text (repaired to UTF-8 as prepare-data does);
// without a NUL a fixed text is encoded.
#include <cstring>

#include "data/text_source.h"
#include "data/tokenizer.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longtune;
  const auto* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  const size_t json_size = nul ? static_cast<size_t>(nul - data) : size;
  std::string text = nul ? fuzz::input_text(nul + 1, size - json_size - 1)
                         : std::string("I'm 12345 tokens\r\n  \u00a0caf\u00e9 \xe4\xb8\xad\xe6\x96\x87 <|endoftext|>!");
  data::repair_utf8(text);
  const auto path = fuzz::input_file(data, json_size, "tokenizer.json");
  fuzz::errors_only([&] {
    const data::Tokenizer tokenizer(path);
    for (const int32_t id : tokenizer.encode(text)) fuzz::require(id >= 0 && id < tokenizer.vocab_size());
  });
  return 0;
}
