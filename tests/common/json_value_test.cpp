// common/json_value: numbers from outside JSON convert only when they are of the asked kind and fit
// (fuzzing found 1e40 and 2.5 reaching nlohmann's unchecked casts in manifest and config readers).
#include "common/json_value.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/test_support.h"

namespace longtune {
namespace {

using nlohmann::json;

TEST(JsonValue, IntegersMustBeIntegersThatFit) {
  EXPECT_EQ(json_value<int64_t>(json::parse("42"), "n"), 42);
  EXPECT_EQ(json_value<uint64_t>(json::parse("18446744073709551615"), "n"), UINT64_MAX);
  EXPECT_EQ(json_value<int>(json::parse("-7"), "n"), -7);
  testing::expect_error([] { json_value<uint64_t>(json::parse("9.18e39"), "splits.train.tokens"); },
                        {"splits.train.tokens", "expected an integer", "9.18e+39"});
  testing::expect_error([] { json_value<int64_t>(json::parse("2.5"), "n"); }, {"n", "expected an integer"});
  testing::expect_error([] { json_value<int>(json::parse("4294967296"), "world_size"); }, {"world_size", "out of range"});
  testing::expect_error([] { json_value<uint64_t>(json::parse("-1"), "bytes"); }, {"bytes", "out of range"});
  testing::expect_error([] { json_value<int64_t>(json::parse("\"3\""), "step"); }, {"step", "expected an integer", "string"});
}

TEST(JsonValue, OtherKinds) {
  EXPECT_EQ(json_value<double>(json::parse("3"), "x"), 3.0);
  EXPECT_EQ(json_value<std::string>(json::parse("\"a\""), "s"), "a");
  EXPECT_EQ(json_value<std::vector<int64_t>>(json::parse("[1, 2]"), "shape"), (std::vector<int64_t>{1, 2}));
  testing::expect_error([] { json_value<std::vector<int64_t>>(json::parse("[1, 1e30]"), "shape"); }, {"shape"});
  testing::expect_error([] { json_value<bool>(json::parse("1"), "flag"); }, {"flag", "true or false"});
  testing::expect_error([] { json_value<double>(json::parse("null"), "lr"); }, {"lr", "expected a number"});
}

}  // namespace
}  // namespace longtune
