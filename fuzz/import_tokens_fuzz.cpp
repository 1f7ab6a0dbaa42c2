// import-tokens on a JSONL file of ids (data/import_tokens, the code `longtune import-tokens` runs):
// every input is either refused with our Error or imported into a prepared split that reads back
// with the documents and tokens the import reported.
#include "data/import_tokens.h"
#include "data/prepared_data.h"
#include "common/file_io.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longtune;
  data::ImportOptions options;
  options.inputs = {fuzz::input_file(data, size, "docs.jsonl")};
  options.output = fuzz::scratch_dir() / "imported";
  options.vocab_size = 1000;
  options.bos_id = 1;
  options.eos_id = 2;
  remove_tree(options.output);
  const auto summary = fuzz::accepted([&] { return data::import_tokens(options); });
  if (summary) {
    const data::PreparedSplit split(options.output, "train", "", /*verify_checksums=*/true);
    fuzz::require(split.num_documents() == summary->documents && split.total_tokens() == summary->tokens);
  }
  return 0;
}
