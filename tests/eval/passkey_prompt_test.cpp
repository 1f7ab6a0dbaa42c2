// eval/passkey_prompt: the Landmark-Attention wording byte for byte (the exact strings of
// epfml/landmark-attention llama/run_test.py), the filler cut, the key's token position, prompts
// fitted to a length and distance, and the answer rule (first integer in the output).
#include "eval/passkey_prompt.h"

#include <gtest/gtest.h>

#include "tests/test_support.h"

namespace longtune::eval {
namespace {

namespace fs = std::filesystem;

// A small SentencePiece model trained on text that holds the prompt's words and digits.
class PasskeyTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    std::string text;
    for (int i = 0; i < 60; ++i) {
      text += passkey_prompt_text(static_cast<size_t>(i * 37), static_cast<size_t>(i * 11), 10000 + i * 1543) + "\n";
      text += "And the " + std::to_string(i * 7) + " sailors went to sea in year " + std::to_string(1800 + i) + ".\n";
    }
    dir_->write("corpus/train/1.txt", text);
    data::TokenizerTrainOptions options;
    options.inputs = {dir_->path() / "corpus"};
    options.vocab_size = 400;
    options.output_prefix = dir_->path() / "tok";
    data::train_tokenizer(options);
    tokenizer_ = new data::Tokenizer(dir_->path() / "tok.model");
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete dir_;
  }
  static testing::TempDir* dir_;
  static data::Tokenizer* tokenizer_;
};
testing::TempDir* PasskeyTokenizer::dir_ = nullptr;
data::Tokenizer* PasskeyTokenizer::tokenizer_ = nullptr;

TEST(PasskeyPrompt, WordingEqualsLandmarkAttention) {
  EXPECT_EQ(passkey_information_line(54321), "The pass key is 54321. Remember it. 54321 is the pass key.");
  EXPECT_EQ(passkey_filler(0), "");
  EXPECT_EQ(passkey_filler(24), "The grass is green. The ");
  // Copies are joined by one space; a cut may fall anywhere, even inside a word.
  const std::string two = std::string(kPasskeyFiller) + " " + std::string(kPasskeyFiller);
  EXPECT_EQ(passkey_filler(two.size()), two);
  EXPECT_EQ(passkey_filler(kPasskeyFiller.size() + 4), std::string(kPasskeyFiller) + " The");
  EXPECT_EQ(passkey_filler(1000).size(), 1000u);
  EXPECT_EQ(passkey_prompt_text(5, 0, 12345),
            "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will "
            "quiz you about the important information there.\nThe g\nThe pass key is 12345. Remember it. 12345 is "
            "the pass key.\n\nWhat is the pass key? The pass key is");
}

TEST(PasskeyPrompt, ParsesTheFirstInteger) {
  EXPECT_EQ(parse_passkey_answer(" 12345. Remember it."), 12345);
  EXPECT_EQ(parse_passkey_answer("12345"), 12345);
  EXPECT_EQ(parse_passkey_answer(" the key 9 and 12345"), 9);
  EXPECT_EQ(parse_passkey_answer("1234 5"), 1234);
  EXPECT_EQ(parse_passkey_answer("00042x"), 42);
  EXPECT_EQ(parse_passkey_answer(" is green. The sky"), std::nullopt);
  EXPECT_EQ(parse_passkey_answer(""), std::nullopt);
  EXPECT_EQ(parse_passkey_answer("1234567890123456789"), std::nullopt);  // 19 digits
  EXPECT_EQ(parse_passkey_answer("x-7"), 7);  // as re.search(r'\d+'): no sign
}

TEST(PasskeyPrompt, DrillsAreSeededPromptsWithTheirAnswers) {
  const std::string text = passkey_drill_text(/*seed=*/4, /*count=*/50, /*max_filler_chars=*/300);
  EXPECT_EQ(text, passkey_drill_text(4, 50, 300));
  EXPECT_NE(text, passkey_drill_text(5, 50, 300));
  // Each drill: the five prompt lines, " KEY.", a blank line; its key is the one in its prompt.
  size_t begin = 0, drills = 0, fillers = 0;
  while (begin < text.size()) {
    const size_t end = text.find("\n\n", text.find(kPasskeyQuestion, begin));
    ASSERT_NE(end, std::string::npos);
    const std::string drill = text.substr(begin, end - begin);
    const size_t answer_at = drill.rfind(' ');
    const auto answer = parse_passkey_answer(drill.substr(answer_at));
    ASSERT_TRUE(answer.has_value()) << drill;
    EXPECT_TRUE(*answer >= 10000 && *answer <= 99999);
    EXPECT_EQ(drill.substr(answer_at), " " + std::to_string(*answer) + ".");
    // Prefix and suffix are passkey_filler cuts summing to at most 300 characters.
    const std::string prompt = drill.substr(0, answer_at);
    const size_t info = prompt.find("\n" + passkey_information_line(*answer) + "\n");
    ASSERT_NE(info, std::string::npos) << drill;
    const size_t prefix = info - kPasskeyTask.size() - 1;
    const size_t suffix = prompt.size() - kPasskeyQuestion.size() - 1 - (info + passkey_information_line(*answer).size() + 2);
    EXPECT_LE(prefix + suffix, 300u);
    EXPECT_EQ(prompt, passkey_prompt_text(prefix, suffix, *answer));
    fillers += prefix + suffix;
    ++drills;
    begin = end + 2;
  }
  EXPECT_EQ(drills, 50u);
  EXPECT_GT(fillers, 50u * 100);  // uniform in [0, 300]: the mean is near 150
  testing::expect_error([] { passkey_drill_text(0, 0, 10); }, {"count", "0"});
}

TEST_F(PasskeyTokenizer, LocatesTheKey) {
  for (size_t prefix : {0u, 1u, 90u, 333u}) {
    const PasskeyPrompt p = tokenize_passkey_prompt(*tokenizer_, 1, prefix, 50, 70531);
    ASSERT_GE(p.ids.size(), 2u);
    EXPECT_EQ(p.ids[0], 1);
    // The ids are BOS + encode(text), and the key starts at key_position.
    std::vector<int32_t> expected = tokenizer_->encode(passkey_prompt_text(prefix, 50, 70531));
    ASSERT_EQ(p.ids.size(), expected.size() + 1);
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(p.ids[i + 1], expected[i]);
    std::vector<int32_t> from_key(p.ids.begin() + p.key_position, p.ids.end());
    const std::string tail = tokenizer_->decode(from_key);
    EXPECT_NE(tail.find("70531. Remember it."), std::string::npos) << tail;
    std::vector<int32_t> before(p.ids.begin() + 1, p.ids.begin() + p.key_position);
    EXPECT_EQ(tokenizer_->decode(before).find("70531"), std::string::npos);
    EXPECT_EQ(p.distance(), static_cast<int64_t>(p.ids.size()) - p.key_position);
  }
}

TEST_F(PasskeyTokenizer, FitsLengthAndDistance) {
  const int64_t length = 400;
  const PasskeyPrompt shortest = tokenize_passkey_prompt(*tokenizer_, 1, 0, 0, 11111);
  for (int64_t k : {1L, 40L, 100L, 250L, 399L, 400L}) {
    const PasskeyPrompt p = fit_passkey_prompt(*tokenizer_, 1, 11111, length, k);
    EXPECT_LE(static_cast<int64_t>(p.ids.size()), length) << k;
    // Filled: one more prefix character would not fit.
    EXPECT_GT(tokenize_passkey_prompt(*tokenizer_, 1, p.prefix_chars + 1, p.suffix_chars, 11111).ids.size(),
              static_cast<size_t>(length))
        << k;
    if (k < shortest.distance()) {
      EXPECT_EQ(p.suffix_chars, 0u) << k;  // the key cannot be nearer the end than this
    } else {
      EXPECT_LE(p.distance(), k);
      // The largest distance <= k that fits: one more suffix character passes k or the length.
      const PasskeyPrompt more = tokenize_passkey_prompt(*tokenizer_, 1, 0, p.suffix_chars + 1, 11111);
      EXPECT_TRUE(more.distance() > k || static_cast<int64_t>(more.ids.size()) > length) << k;
      if (k <= 250) {
        EXPECT_GE(p.distance(), k - 2) << k;  // within a token or two of k
      }
    }
    // A hint from another key gives what the full search gives for this key.
    for (int64_t other : {22222L, 98765L}) {
      const PasskeyPrompt searched = fit_passkey_prompt(*tokenizer_, 1, other, length, k);
      const PasskeyPrompt hinted = fit_passkey_prompt(*tokenizer_, 1, other, length, k, &p);
      EXPECT_EQ(hinted.prefix_chars, searched.prefix_chars) << k;
      EXPECT_EQ(hinted.suffix_chars, searched.suffix_chars) << k;
      EXPECT_EQ(hinted.ids, searched.ids) << k;
    }
    // A hint that does not fit this length is not taken.
    const PasskeyPrompt shorter = fit_passkey_prompt(*tokenizer_, 1, 11111, length / 2, std::min(k, length / 2), &p);
    EXPECT_LE(static_cast<int64_t>(shorter.ids.size()), length / 2);
  }
  testing::expect_error([&] { fit_passkey_prompt(*tokenizer_, 1, 11111, 10, 5); }, {"without filler", "10"});
}

}  // namespace
}  // namespace longtune::eval
