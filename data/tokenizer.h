// The tokenizer as prepare-data, the readers, passkey and export use it, of either kind LLaMA
// models ship: a SentencePiece tokenizer.model (LLaMA-1/2) or a byte-level BPE tokenizer.json
// (Llama 3, SmolLM, Qwen: data/bpe_tokenizer). Load with clear errors, encode a document to ids
// without BOS/EOS (readers add those), identify it by the SHA-256 of its file, and name the files
// that travel with it; plus training a LLaMA-style SentencePiece model for users without one.
// BOS/EOS of a tokenizer.json come from the tokenizer_config.json (or config.json) beside it.
// SentencePiece BPE models the fast encoder covers (data/sentencepiece_bpe.h) encode through it.
// Not a general text-processing API.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace longtune::data {

class BpeTokenizer;
class SentencePieceBpe;

// One token of an encoding and the bytes [begin, end) of the input text it covers.
struct TokenSpan {
  int32_t id = 0;
  uint32_t begin = 0;
  uint32_t end = 0;
};

enum class TokenizerKind { kSentencePiece, kByteLevelBpe };
const char* to_string(TokenizerKind kind);

// The tokenizer file of an HF model directory: tokenizer.model if there is one (LLaMA-1/2 ship both,
// and their tokenizer.json is not byte-level), else tokenizer.json; nullopt if neither.
std::optional<std::filesystem::path> find_tokenizer_file(const std::filesystem::path& directory);
// A tokenizer file itself, or the one find_tokenizer_file() picks in a directory; throws
// longtune::Error naming the path if there is none.
std::filesystem::path resolve_tokenizer_file(const std::filesystem::path& file_or_directory);
// The files that describe a tokenizer beside `tokenizer_file`, itself first: tokenizer_config.json,
// special_tokens_map.json, generation_config.json where they exist. What checkpoints and exports copy.
std::vector<std::filesystem::path> tokenizer_files(const std::filesystem::path& tokenizer_file);
// The name HF gives a tokenizer file of this kind (tokenizer.model or tokenizer.json), whatever
// `tokenizer_file` is called: what a checkpoint or an export stores it as.
std::string hf_tokenizer_file_name(const std::filesystem::path& tokenizer_file);
// Every tokenizer file name an HF directory may hold, for copying one directory's into another.
const std::vector<std::string>& hf_tokenizer_file_names();

class Tokenizer {
 public:
  // A tokenizer.model, a tokenizer.json, or a model directory holding either. Throws
  // longtune::Error naming the file if it is missing or not a tokenizer of a supported kind.
  explicit Tokenizer(const std::filesystem::path& file_or_directory);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Ids of `text` (no BOS/EOS): Python sentencepiece's encode(text), or HF tokenizers'
  // encode(text, add_special_tokens=False). Thread-safe.
  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  // encode() with each token's byte span in `text` (the same ids). Thread-safe.
  std::vector<TokenSpan> encode_with_spans(std::string_view text) const;

  TokenizerKind kind() const { return kind_; }
  int64_t vocab_size() const;
  int64_t bos_id() const { return bos_id_; }  // -1 if the model has none
  int64_t eos_id() const { return eos_id_; }
  const std::filesystem::path& path() const { return path_; }  // the tokenizer file
  const std::string& sha256() const { return sha256_; }  // of the tokenizer file's bytes

 private:
  std::filesystem::path path_;
  TokenizerKind kind_ = TokenizerKind::kSentencePiece;
  std::string sha256_;
  int64_t bos_id_ = -1;
  int64_t eos_id_ = -1;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::unique_ptr<SentencePieceBpe> fast_bpe_;  // the library's ids, faster, for the models it covers
  std::unique_ptr<BpeTokenizer> bpe_;
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
