#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <unordered_map>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "data/text_source.h"

namespace longtune::data {
namespace fs = std::filesystem;

Tokenizer::Tokenizer(const fs::path& model_file)
    : path_(model_file), processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  LT_CHECK(fs::is_regular_file(model_file), "tokenizer {}: no such file", model_file.string());
  const std::string bytes = read_file(model_file);
  const auto status = processor_->LoadFromSerializedProto(bytes);
  LT_CHECK(status.ok(), "tokenizer {}: not a SentencePiece model: {}", model_file.string(),
           status.ToString());
  sha256_ = sha256_hex(bytes);
}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = processor_->Encode(absl::string_view(text.data(), text.size()), &ids);
  LT_CHECK(status.ok(), "tokenizer {}: encode failed: {}", path_.string(), status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::vector<TokenSpan> Tokenizer::encode_with_spans(std::string_view text) const {
  sentencepiece::ImmutableSentencePieceText encoded;
  const auto status = processor_->Encode(absl::string_view(text.data(), text.size()), encoded.mutable_proto());
  LT_CHECK(status.ok(), "tokenizer {}: encode failed: {}", path_.string(), status.ToString());
  std::vector<TokenSpan> spans;
  spans.reserve(encoded.pieces_size());
  for (const auto& piece : encoded.pieces())
    spans.push_back({static_cast<int32_t>(piece.id()), piece.begin(), piece.end()});
  return spans;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  const auto status = processor_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  LT_CHECK(status.ok(), "tokenizer {}: decode failed: {}", path_.string(), status.ToString());
  return text;
}

int64_t Tokenizer::vocab_size() const { return processor_->GetPieceSize(); }
int64_t Tokenizer::bos_id() const { return processor_->bos_id(); }
int64_t Tokenizer::eos_id() const { return processor_->eos_id(); }

namespace {

// Feeds SentencePiece the lines of the books, read and cleaned as prepare-data reads them.
class BookLineIterator : public sentencepiece::SentenceIterator {
 public:
  BookLineIterator(std::vector<SourceFile> books, uint64_t max_line_bytes, TokenizerTrainSummary& summary)
      : books_(std::move(books)), max_line_bytes_(max_line_bytes), summary_(summary) {
    advance();
  }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void advance() {
    while (true) {
      if (offset_ < text_.size()) {
        size_t end = text_.find('\n', offset_);
        if (end == std::string::npos) end = text_.size();
        line_.assign(text_, offset_, end - offset_);
        offset_ = end + 1;
        if (line_.empty()) continue;
        ++summary_.lines;
        return;
      }
      if (next_book_ == books_.size()) {
        done_ = true;
        return;
      }
      const SourceFile& book = books_[next_book_++];
      TextDocument document = read_text_document(book.path, max_line_bytes_);
      if (!document.skip_reason.empty()) {
        LT_WARN("{}: skipped: {}", book.path.string(), document.skip_reason);
        ++summary_.skipped_books;
        continue;
      }
      ++summary_.books;
      summary_.bytes += document.text.size();
      text_ = std::move(document.text);
      offset_ = 0;
    }
  }

  std::vector<SourceFile> books_;
  uint64_t max_line_bytes_;
  TokenizerTrainSummary& summary_;
  size_t next_book_ = 0;
  std::string text_;
  size_t offset_ = 0;
  std::string line_;
  bool done_ = false;
};

}  // namespace

TokenizerTrainSummary train_tokenizer(const TokenizerTrainOptions& options) {
  LT_CHECK(!options.inputs.empty(), "tokenizer train: no --input given");
  LT_CHECK(options.vocab_size >= 300, "tokenizer train: --vocab-size {} is too small (byte fallback "
           "alone needs 259 pieces; use >= 300)", options.vocab_size);
  LT_CHECK(!options.output_prefix.empty(), "tokenizer train: no --out prefix given");
  std::vector<SourceFile> books;
  for (const fs::path& input : options.inputs) {
    // A PG-19 root contributes its train split only: held-out text must not shape the vocabulary.
    const std::vector<std::string> splits = fs::is_directory(input / "train") ? std::vector<std::string>{"train"}
                                                                            : std::vector<std::string>{};
    InputLayout layout = discover_inputs(input, splits, "train");
    for (const std::string& warning : layout.warnings) LT_WARN("{}", warning);
    for (SplitSources& split : layout.splits)
      for (SourceFile& file : split.files) {
        LT_CHECK(!file.jsonl, "tokenizer train: {}: JSONL input is not supported here; pass .txt",
                 file.path.string());
        books.push_back(std::move(file));
      }
  }
  LT_CHECK(!books.empty(), "tokenizer train: the inputs hold no .txt books");
  const fs::path prefix = options.output_prefix;
  if (prefix.has_parent_path()) fs::create_directories(prefix.parent_path());

  TokenizerTrainSummary summary;
  BookLineIterator lines(std::move(books), options.max_line_bytes, summary);
  const std::unordered_map<std::string, std::string> args = {
      {"model_prefix", prefix.string()},
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "true"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"character_coverage", "0.99995"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"max_sentence_length", "16384"},
      {"input_sentence_size", std::to_string(options.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(std::max(1, options.threads))},
      {"minloglevel", "1"},
  };
  sentencepiece::SetRandomGeneratorSeed(options.seed);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &lines);
  LT_CHECK(status.ok(), "tokenizer train: SentencePiece failed: {}", status.ToString());
  summary.model_file = prefix.string() + ".model";
  Tokenizer check(summary.model_file);  // fails loudly if what was written does not load
  return summary;
}

}  // namespace longtune::data
