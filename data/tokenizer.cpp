#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <unordered_map>

#include "common/check.h"
#include "common/file_io.h"
#include "common/json_value.h"
#include "common/log.h"
#include "data/bpe_tokenizer.h"
#include "data/sentencepiece_bpe.h"
#include "data/text_source.h"

namespace longtune::data {
namespace fs = std::filesystem;

const char* to_string(TokenizerKind kind) {
  return kind == TokenizerKind::kSentencePiece ? "sentencepiece" : "byte-level-bpe";
}

namespace {

constexpr const char* kSentencePieceFile = "tokenizer.model";
constexpr const char* kTokenizerJsonFile = "tokenizer.json";
constexpr const char* kTokenizerConfigFile = "tokenizer_config.json";
constexpr const char* kModelConfigFile = "config.json";
// Beside the tokenizer file, in the order they are copied after it.
const std::vector<std::string> kCompanionFiles = {kTokenizerConfigFile, "special_tokens_map.json",
                                                  "generation_config.json"};

// A JSON file beside the tokenizer, or null if there is none.
nlohmann::json read_companion(const fs::path& file) {
  if (!fs::is_regular_file(file)) return nullptr;
  try {
    return nlohmann::json::parse(read_file(file));
  } catch (const nlohmann::json::exception& e) {
    LT_FAIL("{}: not valid JSON: {}", file.string(), e.what());
  }
}

// tokenizer_config.json's bos_token / eos_token: a string, {"content": ...} or null.
std::optional<std::string> special_token_text(const nlohmann::json& config, const char* key, const fs::path& file) {
  if (!config.is_object() || !config.contains(key) || config[key].is_null()) return std::nullopt;
  const nlohmann::json& value = config[key];
  if (value.is_object() && value.contains("content"))
    return json_value<std::string>(value["content"], fmt::format("{}: {}.content", file.string(), key));
  return json_value<std::string>(value, fmt::format("{}: {}", file.string(), key));
}

// config.json's bos_token_id / eos_token_id: an integer or a list (the first is the document end).
std::optional<int64_t> special_token_id(const nlohmann::json& config, const char* key, const fs::path& file) {
  if (!config.is_object() || !config.contains(key) || config[key].is_null()) return std::nullopt;
  const nlohmann::json& value = config[key];
  const std::string what = fmt::format("{}: {}", file.string(), key);
  if (value.is_array()) {
    LT_CHECK(!value.empty(), "{}: an empty list", what);
    return json_value<int64_t>(value[0], what + "[0]");
  }
  return json_value<int64_t>(value, what);
}

}  // namespace

std::optional<fs::path> find_tokenizer_file(const fs::path& directory) {
  for (const char* name : {kSentencePieceFile, kTokenizerJsonFile})
    if (fs::is_regular_file(directory / name)) return directory / name;
  return std::nullopt;
}

fs::path resolve_tokenizer_file(const fs::path& file_or_directory) {
  if (!fs::is_directory(file_or_directory)) {
    LT_CHECK(fs::is_regular_file(file_or_directory), "tokenizer {}: no such file", file_or_directory.string());
    return file_or_directory;
  }
  const auto found = find_tokenizer_file(file_or_directory);
  LT_CHECK(found.has_value(), "tokenizer {}: the directory holds neither {} nor {}", file_or_directory.string(),
           kSentencePieceFile, kTokenizerJsonFile);
  return *found;
}

std::vector<fs::path> tokenizer_files(const fs::path& tokenizer_file) {
  std::vector<fs::path> files{tokenizer_file};
  for (const std::string& name : kCompanionFiles) {
    const fs::path companion = tokenizer_file.parent_path() / name;
    if (fs::is_regular_file(companion)) files.push_back(companion);
  }
  return files;
}

namespace {
bool is_tokenizer_json(const fs::path& file, std::string_view bytes) {
  return file.extension() == ".json" || (!bytes.empty() && bytes.front() == '{');
}
}  // namespace

std::string hf_tokenizer_file_name(const fs::path& tokenizer_file) {
  std::ifstream in(tokenizer_file, std::ios::binary);
  char first = 0;
  in.get(first);
  return is_tokenizer_json(tokenizer_file, std::string_view(&first, in.gcount())) ? kTokenizerJsonFile
                                                                                   : kSentencePieceFile;
}

const std::vector<std::string>& hf_tokenizer_file_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all{kSentencePieceFile, kTokenizerJsonFile};
    all.insert(all.end(), kCompanionFiles.begin(), kCompanionFiles.end());
    return all;
  }();
  return names;
}

Tokenizer::Tokenizer(const fs::path& file_or_directory) : path_(resolve_tokenizer_file(file_or_directory)) {
  const std::string bytes = read_file(path_);
  sha256_ = sha256_hex(bytes);
  const bool json = is_tokenizer_json(path_, bytes);
  if (!json) {
    processor_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
    sentencepiece::util::Status status;
    try {
      status = processor_->LoadFromSerializedProto(bytes);
    } catch (const std::exception& e) {  // the library's trie builder throws on some malformed models
      LT_FAIL("tokenizer {}: not a SentencePiece model: {}", path_.string(), e.what());
    }
    LT_CHECK(status.ok(), "tokenizer {}: not a SentencePiece model: {}", path_.string(), status.ToString());
    bos_id_ = processor_->bos_id();
    eos_id_ = processor_->eos_id();
    fast_bpe_ = SentencePieceBpe::load(bytes);  // nullptr: the library encodes everything
    return;
  }
  kind_ = TokenizerKind::kByteLevelBpe;
  bpe_ = std::make_unique<BpeTokenizer>(path_);
  const fs::path config_file = path_.parent_path() / kTokenizerConfigFile;
  const fs::path model_file = path_.parent_path() / kModelConfigFile;
  const nlohmann::json tokenizer_config = read_companion(config_file);
  const nlohmann::json model_config = read_companion(model_file);
  auto resolve = [&](const char* token_key, const char* id_key) -> int64_t {
    if (const auto text = special_token_text(tokenizer_config, token_key, config_file)) {
      const auto id = bpe_->token_id(*text);
      LT_CHECK(id.has_value(), "{}: {} {} is not a token of {}", config_file.string(), token_key, *text,
               path_.string());
      return *id;
    }
    if (const auto id = special_token_id(model_config, id_key, model_file)) {
      LT_CHECK(*id >= 0 && *id < bpe_->vocab_size(), "{}: {} {} is outside the vocabulary of {} ({} tokens)",
               model_file.string(), id_key, *id, path_.string(), bpe_->vocab_size());
      return *id;
    }
    return -1;
  };
  bos_id_ = resolve("bos_token", "bos_token_id");
  eos_id_ = resolve("eos_token", "eos_token_id");
}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  if (bpe_) {
    const std::vector<TokenSpan> spans = bpe_->encode(text);
    std::vector<int32_t> ids(spans.size());
    for (size_t i = 0; i < spans.size(); ++i) ids[i] = spans[i].id;
    return ids;
  }
  if (fast_bpe_)
    if (std::optional<std::vector<int32_t>> ids = fast_bpe_->encode(text)) return std::move(*ids);
  std::vector<int> ids;
  const auto status = processor_->Encode(absl::string_view(text.data(), text.size()), &ids);
  LT_CHECK(status.ok(), "tokenizer {}: encode failed: {}", path_.string(), status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::vector<TokenSpan> Tokenizer::encode_with_spans(std::string_view text) const {
  if (bpe_) return bpe_->encode(text);
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
  if (bpe_) return bpe_->decode(ids);
  std::string text;
  const auto status = processor_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  LT_CHECK(status.ok(), "tokenizer {}: decode failed: {}", path_.string(), status.ToString());
  return text;
}

int64_t Tokenizer::vocab_size() const { return bpe_ ? bpe_->vocab_size() : processor_->GetPieceSize(); }

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
