// The fast SentencePiece BPE encoder against the library itself (SentencePieceProcessor::Encode,
// the oracle): equal ids for models trained here with each normalizer setting it covers, on
// generated text and adversarial text; the models it does not cover are left to the library.
// Python sentencepiece checks it on every corpus book (tests/reference/test_prepare_data.py).
#include "data/sentencepiece_bpe.h"

#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <random>

#include "common/file_io.h"
#include "tests/test_support.h"

namespace longtune::data {
namespace {

using longtune::testing::TempDir;

// Words made of random syllables (many distinct words, so BPE has real merges), numbers, spaces.
std::string training_text() {
  static const char* syllables[] = {"ka", "to", "ri", "sen", "mar", "the", "wh", "ale", "sea", "ship", "cap",
                                    "ïve", "café", "Äh", "re", "on", "st", "orm", "1851", "9", "."};
  std::mt19937 rng(7);
  std::string text;
  for (int line = 0; line < 4000; ++line) {
    for (int w = 0; w < 10; ++w) {
      for (int k = 0, n = 1 + rng() % 4; k < n; ++k) text += syllables[rng() % 21];
      text += (rng() % 9 == 0) ? "  " : " ";
    }
    text += line % 7 == 0 ? "   \n" : ".\n";
  }
  return text;
}

// A model of `type` trained on training_text() with `options`; its serialized bytes.
std::string train(const TempDir& dir, const std::string& name, const std::string& options,
                  const std::string& type = "bpe") {
  const auto input = dir.path() / "train.txt";
  if (!std::filesystem::exists(input)) dir.write("train.txt", training_text());
  const auto prefix = (dir.path() / name).string();
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + input.string() + " --model_prefix=" + prefix + " --vocab_size=400 --model_type=" + type + " "
      " --character_coverage=0.9995 --minloglevel=2 " + options);
  EXPECT_TRUE(status.ok()) << status.ToString();
  return read_file(prefix + ".model");
}

const std::vector<std::string>& adversarial_texts() {
  static const std::vector<std::string> texts = {
      "", " ", "   ", "a", " a", "a ", "  leading and trailing  ", "the  whale   and\tthe\tsea\n\nship",
      "captain said: 18511851 1 12 123!", "naïve café Ähre ÄHRE", "中文 日本語 한국어",
      "👨‍👩‍👧 emoji 🙂x",
      "\xe2\x96\x81 already a space symbol \xe2\x96\x81\xe2\x96\x81", "tab\tnew\nline\r\nCR\rend",
      "the whale the whale the whale, the whale.", "x" + std::string(500, ' ') + "y" + std::string(300, 'z'),
      "<s> </s> <unk> <0x41> control texts"};
  return texts;
}

void expect_library_ids(const std::string& model, const std::string& text, bool fast_expected = true) {
  sentencepiece::SentencePieceProcessor library;
  ASSERT_TRUE(library.LoadFromSerializedProto(model).ok());
  const auto fast = SentencePieceBpe::load(model);
  ASSERT_EQ(fast != nullptr, fast_expected);
  if (!fast) return;
  std::vector<int> expected;
  ASSERT_TRUE(library.Encode(text, &expected).ok());
  const auto ids = fast->encode(text);
  ASSERT_TRUE(ids.has_value()) << text;
  EXPECT_EQ(*ids, std::vector<int32_t>(expected.begin(), expected.end())) << "text: " << text;
}

TEST(SentencePieceBpe, EqualsTheLibraryForEachNormalizerSetting) {
  TempDir dir;
  const std::pair<const char*, const char*> models[] = {
      // LLaMA's settings (and `longtune tokenizer train`'s): identity, dummy prefix, spaces kept.
      {"llama", "--normalization_rule_name=identity --byte_fallback=true --split_digits=true "
                "--remove_extra_whitespaces=false --allow_whitespace_only_pieces=true"},
      {"collapse", "--normalization_rule_name=identity --remove_extra_whitespaces=true"},
      {"no_prefix", "--normalization_rule_name=identity --add_dummy_prefix=false --byte_fallback=true"},
      // Pieces across words: merged over the whole text, not word by word.
      {"across_words", "--normalization_rule_name=identity --split_by_whitespace=false "
                       "--remove_extra_whitespaces=false"},
  };
  std::mt19937 rng(3);
  const std::string corpus = training_text();
  for (const auto& [name, options] : models) {
    SCOPED_TRACE(name);
    const std::string model = train(dir, name, options);
    for (const std::string& text : adversarial_texts()) expect_library_ids(model, text);
    for (int i = 0; i < 20; ++i) {  // random slices of the training text, cut anywhere
      size_t begin = rng() % corpus.size(), end = std::min(corpus.size(), begin + rng() % 2000);
      const auto inside_character = [&](size_t at) { return at < corpus.size() && (corpus[at] & 0xc0) == 0x80; };
      while (inside_character(begin)) ++begin;
      while (inside_character(end)) ++end;
      expect_library_ids(model, corpus.substr(begin, end - begin));
    }
    expect_library_ids(model, corpus);  // the whole text at once
  }
}

TEST(SentencePieceBpe, InvalidUtf8IsLeftToTheLibrary) {
  TempDir dir;
  const auto fast = SentencePieceBpe::load(train(dir, "m", "--normalization_rule_name=identity"));
  ASSERT_NE(fast, nullptr);
  for (const std::string bad : {"a\xff", "\xc0\xaf", "\xed\xa0\x80", "abc\xe2\x96"})
    EXPECT_FALSE(fast->encode(bad).has_value()) << bad;
}

TEST(SentencePieceBpe, ModelsItDoesNotCoverStayWithTheLibrary) {
  TempDir dir;
  EXPECT_EQ(SentencePieceBpe::load(train(dir, "nfkc", "--normalization_rule_name=nmt_nfkc")), nullptr);
  EXPECT_EQ(SentencePieceBpe::load(train(dir, "user", "--normalization_rule_name=identity "
                                                      "--user_defined_symbols=whale,<sep>")), nullptr);
  EXPECT_EQ(SentencePieceBpe::load(train(dir, "unigram", "--normalization_rule_name=identity", "unigram")),
            nullptr);
  EXPECT_EQ(SentencePieceBpe::load("not a model"), nullptr);
  EXPECT_EQ(SentencePieceBpe::load(""), nullptr);
}

}  // namespace
}  // namespace longtune::data
