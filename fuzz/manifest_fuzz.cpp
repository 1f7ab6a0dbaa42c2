// A prepared-data manifest.json (data/prepared_data Manifest::from_json) and the training reader's
// saved position (data/packed_reader ReaderState::from_json, a checkpoint's data.json): what they
// accept writes back to bytes that read back equal. The first input byte picks which.
#include "data/packed_reader.h"
#include "data/prepared_data.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longtune;
  if (size == 0) return 0;
  const std::string text = fuzz::input_text(data + 1, size - 1);
  if (data[0] % 2 == 0) {
    const auto manifest = fuzz::accepted([&] { return data::Manifest::from_json(text, "manifest.json"); });
    if (manifest) fuzz::require(data::Manifest::from_json(manifest->to_json(), "again") == *manifest);
  } else {
    const auto state = fuzz::accepted([&] { return data::ReaderState::from_json(text); });
    if (state) fuzz::require(data::ReaderState::from_json(state->to_json()) == *state);
  }
  return 0;
}
