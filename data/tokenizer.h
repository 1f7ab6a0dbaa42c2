// A SentencePiece tokenizer as prepare-data and the readers use it: load with clear errors, encode
// a document to ids without BOS/EOS (readers add those), identify it by the SHA-256 of its model
// file, and train a LLaMA-style BPE model for users without one. LLaMA-1/2's tokenizer.model loads
// as is (BOS 1, EOS 2, byte fallback). Not a general text-processing API.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace longtune::data {

// One token of an encoding and the bytes [begin, end) of the input text it covers.
struct TokenSpan {
  int32_t id = 0;
  uint32_t begin = 0;
  uint32_t end = 0;
};

class Tokenizer {
 public:
  // Throws longtune::Error naming the file if it is missing or not a SentencePiece model.
  explicit Tokenizer(const std::filesystem::path& model_file);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Ids of `text` (no BOS/EOS), as Python's SentencePieceProcessor.encode(text). Thread-safe.
  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  // encode() with each token's byte span in `text` (the same ids). Thread-safe.
  std::vector<TokenSpan> encode_with_spans(std::string_view text) const;

  int64_t vocab_size() const;
  int64_t bos_id() const;  // -1 if the model has none
  int64_t eos_id() const;
  const std::filesystem::path& path() const { return path_; }
  const std::string& sha256() const { return sha256_; }  // of the model file's bytes

 private:
  std::filesystem::path path_;
  std::string sha256_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

struct TokenizerTrainOptions {
  std::vector<std::filesystem::path> inputs;  // .txt files, folders of .txt, or PG-19 roots (train/)
  int64_t vocab_size = 32000;
  std::filesystem::path output_prefix;        // writes <prefix>.model and <prefix>.vocab
  int threads = 1;
  int64_t max_sentences = 2000000;            // lines sampled for training (0: all)
  uint64_t max_line_bytes = 1 << 20;          // as prepare-data: books with longer lines are skipped
  uint32_t seed = 0;
};

struct TokenizerTrainSummary {
  int64_t books = 0;
  int64_t skipped_books = 0;
  int64_t lines = 0;
  uint64_t bytes = 0;
  std::filesystem::path model_file;
};

// Trains a LLaMA-style SentencePiece model: BPE, byte fallback, split digits, identity
// normalization, dummy prefix, no whitespace stripping, unk 0 / bos 1 / eos 2 / no pad. Books are
// read and cleaned exactly as prepare-data reads them; each line is one training sentence.
// Deterministic for the same inputs, options and seed. Throws longtune::Error on failure.
TokenizerTrainSummary train_tokenizer(const TokenizerTrainOptions& options);

}  // namespace longtune::data
