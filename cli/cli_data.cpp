// Data subcommands: `longtune tokenizer train` (a LLaMA-style SentencePiece model from text),
// `longtune tokenizer encode` (a book's ids, to check them against another implementation),
// `longtune prepare-data` (tokenize a corpus once into shards), `longtune import-tokens` (already
// tokenized documents into the same shards), `longtune data inspect` (what a
// prepared directory holds) and `longtune data passkey-drills` (synthetic retrieval training text,
// eval/passkey_prompt.h). Argument handling and printing only; the work is in data/ and eval/.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/progress.h"
#include "data/import_tokens.h"
#include "data/prepare.h"
#include "data/prepared_data.h"
#include "data/text_source.h"
#include "data/tokenizer.h"
#include "cli/cli.h"
#include "eval/passkey_prompt.h"

namespace longtune::cli {
namespace {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ','))
    if (!item.empty()) items.push_back(item);
  return items;
}

void print_prepare_summary(const data::PrepareOptions& options, const data::PrepareSummary& summary) {
  std::cout << fmt::format("prepared {} into {} in {:.1f} s with {} thread(s)\n", options.input.string(),
                           options.output.string(), summary.seconds, summary.threads);
  std::cout << fmt::format("  {:<11} {:>8} {:>10} {:>14} {:>8} {:>7} {:>7}\n", "split", "sources", "documents",
                           "tokens", "skipped", "shards", "reused");
  for (const auto& [name, split] : summary.splits)
    std::cout << fmt::format("  {:<11} {:>8} {:>10} {:>14} {:>8} {:>7} {:>7}\n", name, split.sources,
                             split.documents, split.tokens, split.skipped, split.shards, split.shards_reused);
  const double rate = summary.seconds > 0 ? summary.bytes_tokenized / summary.seconds : 0.0;
  std::cout << fmt::format("  tokenized {} ({} tokens) this run: {}/s, {} tokens/s\n",
                           ProgressLine::bytes(static_cast<double>(summary.bytes_tokenized)),
                           summary.tokens_tokenized, ProgressLine::bytes(rate),
                           ProgressLine::count(summary.seconds > 0 ? summary.tokens_tokenized / summary.seconds : 0));
}

void print_inspect(const std::filesystem::path& dir) {
  const data::Manifest manifest = data::read_manifest(dir);
  std::cout << fmt::format("prepared data   {}\n", dir.string());
  std::cout << fmt::format("input           {} ({})\n", manifest.input, manifest.input_kind);
  std::cout << fmt::format("tokenizer       {} (sha256 {}, vocab {}, bos {}, eos {})\n", manifest.tokenizer.path,
                           manifest.tokenizer.sha256.substr(0, 16), manifest.tokenizer.vocab_size,
                           manifest.tokenizer.bos_id, manifest.tokenizer.eos_id);
  std::cout << fmt::format("token width     {}\n", data::to_string(manifest.token_width));
  for (const auto& [name, split] : manifest.splits) {
    uint64_t bytes = 0;
    for (const auto& shard : split.shards) bytes += shard.bytes;
    std::cout << fmt::format("split {:<10} {} documents, {} tokens, {} shard(s), {}, {} skipped\n", name,
                             split.documents, split.tokens, split.shards.size(),
                             ProgressLine::bytes(static_cast<double>(bytes)), split.skipped.size());
    for (const auto& skipped : split.skipped)
      std::cout << fmt::format("  skipped {}: {}\n", skipped.path, skipped.reason);
  }
}

}  // namespace

void add_data_commands(CLI::App& app) {
  // longtune tokenizer train
  auto* tokenizer = app.add_subcommand("tokenizer", "Tokenizers (SentencePiece tokenizer.model, byte-level BPE tokenizer.json)");
  tokenizer->require_subcommand(1);
  auto* train = tokenizer->add_subcommand(
      "train", "Train a LLaMA-style SentencePiece BPE model (byte fallback, split digits)");
  auto train_options = std::make_shared<data::TokenizerTrainOptions>();
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto prefix = std::make_shared<std::string>();
  train->add_option("--input", *inputs, ".txt files, folders of .txt, or PG-19 roots (their train/ split)")
      ->required();
  train->add_option("--vocab-size", train_options->vocab_size, "pieces in the vocabulary")->capture_default_str();
  train->add_option("--out", *prefix, "output prefix: writes PREFIX.model and PREFIX.vocab")->required();
  train->add_option("--threads", train_options->threads, "training threads")->capture_default_str();
  train->add_option("--max-sentences", train_options->max_sentences, "lines sampled for training (0: all)")
      ->capture_default_str();
  train->add_option("--seed", train_options->seed, "sampling seed")->capture_default_str();
  train->callback([=] {
    data::TokenizerTrainOptions options = *train_options;
    for (const std::string& input : *inputs) options.inputs.emplace_back(input);
    options.output_prefix = *prefix;
    const data::TokenizerTrainSummary summary = data::train_tokenizer(options);
    std::cout << fmt::format("wrote {} ({} pieces) from {} books, {} lines, {}; {} book(s) skipped\n",
                             summary.model_file.string(), options.vocab_size, summary.books, summary.lines,
                             ProgressLine::bytes(static_cast<double>(summary.bytes)), summary.skipped_books);
  });

  // longtune tokenizer encode
  auto* encode = tokenizer->add_subcommand(
      "encode", "Print the ids of a text file read as prepare-data reads a book (no BOS/EOS)");
  auto encode_tokenizer = std::make_shared<std::string>();
  auto encode_inputs = std::make_shared<std::vector<std::string>>();
  auto encode_max_line = std::make_shared<uint64_t>(data::PrepareOptions{}.max_line_bytes);
  encode->add_option("--tokenizer", *encode_tokenizer, "tokenizer.model, tokenizer.json or a model directory")
      ->required();
  encode->add_option("--input", *encode_inputs, "text file(s): one line of ids per file, in order")->required();
  encode->add_option("--max-line-bytes", *encode_max_line, "as prepare-data: a longer line makes the file unusable")
      ->capture_default_str();
  auto encode_raw = std::make_shared<bool>(false);
  encode->add_flag("--raw", *encode_raw,
                   "the file's bytes as they are (CR kept, no book checks); invalid UTF-8 still becomes U+FFFD");
  encode->callback([=] {
    const data::Tokenizer tokenizer{std::filesystem::path(*encode_tokenizer)};
    for (const std::string& input : *encode_inputs) {
      std::string text;
      if (*encode_raw) {
        text = read_file(input);
        data::repair_utf8(text);
      } else {
        data::TextDocument document = data::read_text_document(input, *encode_max_line);
        LT_CHECK(document.skip_reason.empty(), "tokenizer encode: {}: {}", input, document.skip_reason);
        text = std::move(document.text);
      }
      const std::vector<int32_t> ids = tokenizer.encode(text);
      std::string line;
      line.reserve(ids.size() * 6);
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) line += ' ';
        line += std::to_string(ids[i]);
      }
      line += '\n';
      std::cout << line;
    }
  });

  // longtune prepare-data
  auto* prepare = app.add_subcommand("prepare-data", "Tokenize a corpus once into token shards");
  auto prepare_options = std::make_shared<data::PrepareOptions>();
  auto input = std::make_shared<std::string>();
  auto tokenizer_path = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto splits = std::make_shared<std::string>();
  auto shard_mb = std::make_shared<double>(256.0);
  auto quiet = std::make_shared<bool>(false);
  prepare->add_option("--input", *input, "PG-19 root (train/ validation/ test/), folder of .txt, one .txt, "
                                         "or .jsonl[.zst]")->required();
  prepare->add_option("--tokenizer", *tokenizer_path, "tokenizer.model, tokenizer.json, or a model directory holding either")
      ->required();
  prepare->add_option("--out", *output, "output directory")->required();
  prepare->add_option("--threads", prepare_options->threads, "tokenizer threads (0: all cores)")
      ->capture_default_str();
  prepare->add_option("--splits", *splits, "comma-separated PG-19 splits (default: all present)");
  prepare->add_option("--split-name", prepare_options->split_name, "split name for non-PG-19 input")
      ->capture_default_str();
  prepare->add_option("--max-line-bytes", prepare_options->max_line_bytes,
                      "skip books with a longer line (not book text)")->capture_default_str();
  prepare->add_option("--shard-mb", *shard_mb, "MB of source text per shard")->capture_default_str();
  prepare->add_flag("--quiet", *quiet, "no progress line");
  prepare->callback([=] {
    data::PrepareOptions options = *prepare_options;
    options.input = *input;
    options.tokenizer = *tokenizer_path;
    options.output = *output;
    options.splits = split_list(*splits);
    LT_CHECK(*shard_mb > 0, "--shard-mb must be positive, got {}", *shard_mb);
    options.shard_source_bytes = static_cast<uint64_t>(*shard_mb * (1 << 20));
    options.progress = !*quiet;
    const data::PrepareSummary summary = data::prepare_data(options);
    print_prepare_summary(options, summary);
  });

  // longtune import-tokens
  auto* import = app.add_subcommand("import-tokens",
                                    "Already tokenized documents (JSONL ids, or a .bin with offsets) into token shards");
  auto import_options = std::make_shared<data::ImportOptions>();
  auto import_inputs = std::make_shared<std::vector<std::string>>();
  auto import_strings = std::make_shared<std::map<std::string, std::string>>();
  auto import_shard_mb = std::make_shared<double>(256.0);
  import->add_option("--input", *import_inputs,
                     "JSONL files ({\"ids\": [...]} or {\"input_ids\": [...]} per line; .jsonl or .jsonl.zst), "
                     "folders of them, or one .bin of ids")->required();
  import->add_option("--offsets", (*import_strings)["offsets"],
                     "with a .bin: document boundaries, little-endian uint64, N+1 values from 0 to the id count");
  import->add_option("--dtype", (*import_strings)["dtype"], "with a .bin: its ids' type")
      ->check(CLI::IsMember({"uint16", "uint32"}));
  import->add_option("--tokenizer", (*import_strings)["tokenizer"],
                     "the tokenizer that made the ids (tokenizer.model, tokenizer.json or a model directory): "
                     "vocabulary, BOS/EOS and the hash training checks");
  import->add_option("--vocab-size", import_options->vocab_size, "without --tokenizer: ids must be below it");
  import->add_option("--bos-id", import_options->bos_id, "without --tokenizer: the BOS id documents are joined with");
  import->add_option("--eos-id", import_options->eos_id, "without --tokenizer: the EOS id");
  import->add_option("--out", (*import_strings)["out"], "output directory")->required();
  import->add_option("--split-name", import_options->split_name, "the split the documents form")->capture_default_str();
  import->add_option("--shard-mb", *import_shard_mb, "MB of input per shard")->capture_default_str();
  import->callback([=] {
    data::ImportOptions options = *import_options;
    for (const std::string& path : *import_inputs) options.inputs.emplace_back(path);
    options.offsets = (*import_strings)["offsets"];
    options.tokenizer = (*import_strings)["tokenizer"];
    options.output = (*import_strings)["out"];
    const std::string& dtype = (*import_strings)["dtype"];
    if (!dtype.empty()) options.bin_width = dtype == "uint16" ? data::TokenWidth::kUInt16 : data::TokenWidth::kUInt32;
    LT_CHECK(*import_shard_mb > 0, "--shard-mb must be positive, got {}", *import_shard_mb);
    options.shard_source_bytes = static_cast<uint64_t>(*import_shard_mb * (1 << 20));
    const data::ImportSummary summary = data::import_tokens(options);
    std::cout << fmt::format("imported {} source(s) into {} in {:.1f} s: {} documents, {} tokens, {} shard(s) "
                             "({} kept from an earlier run), {} read\n", summary.sources, options.output.string(),
                             summary.seconds, summary.documents, summary.tokens, summary.shards,
                             summary.shards_reused, ProgressLine::bytes(static_cast<double>(summary.bytes_read)));
  });

  // longtune data inspect
  auto* data_command = app.add_subcommand("data", "Prepared token data");
  data_command->require_subcommand(1);
  auto* inspect = data_command->add_subcommand("inspect", "What a prepared-data directory holds");
  auto dir = std::make_shared<std::string>();
  inspect->add_option("dir", *dir, "prepared-data directory")->required();
  inspect->callback([=] { print_inspect(*dir); });

  // longtune data passkey-drills
  struct DrillArgs {
    std::string out;
    int64_t count = 1000;
    size_t max_filler_chars = 200;
    uint64_t seed = 0;
  };
  auto drills = std::make_shared<DrillArgs>();
  auto* drill = data_command->add_subcommand(
      "passkey-drills", "Write synthetic passkey-retrieval drills (training text in the passkey prompt's wording)");
  drill->add_option("--out", drills->out, "output .txt file")->required();
  drill->add_option("--count", drills->count, "number of drills")->capture_default_str();
  drill->add_option("--max-filler-chars", drills->max_filler_chars, "filler characters per drill, at most")
      ->capture_default_str();
  drill->add_option("--seed", drills->seed, "seed")->capture_default_str();
  drill->callback([drills] {
    const std::filesystem::path out = drills->out;
    if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
    write_file_atomic(out, eval::passkey_drill_text(drills->seed, drills->count, drills->max_filler_chars));
    std::cout << fmt::format("wrote {} passkey drills to {}\n", drills->count, out.string());
  });
}

}  // namespace longtune::cli
