// Typed values out of JSON that came from outside. nlohmann's get<int64_t>() on 2.5 truncates and
// on 1e40 is undefined behaviour (a float-to-integer cast out of range), and get<int>() on a large
// integer wraps; json_value<T>() accepts only a JSON value of T's kind that fits, and otherwise
// throws our Error naming `what` (e.g. "manifest.json: splits.train.tokens"). Header-only over
// nlohmann/json, for both json and ordered_json.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "common/check.h"

namespace longtune {

template <class T, class Json>
T json_value(const Json& value, const std::string& what) {
  if constexpr (std::is_same_v<T, bool>) {
    LT_CHECK(value.is_boolean(), "{}: expected true or false, got {}", what, value.type_name());
    return value.template get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    LT_CHECK(value.is_number_integer(), "{}: expected an integer, got {}", what,
             value.is_number() ? value.dump() : std::string(value.type_name()));
    if (value.is_number_unsigned()) {
      const uint64_t u = value.template get<uint64_t>();
      LT_CHECK(u <= static_cast<uint64_t>(std::numeric_limits<T>::max()), "{}: {} is out of range", what, u);
      return static_cast<T>(u);
    }
    const int64_t i = value.template get<int64_t>();
    LT_CHECK(i >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                 (i < 0 || static_cast<uint64_t>(i) <= static_cast<uint64_t>(std::numeric_limits<T>::max())),
             "{}: {} is out of range", what, i);
    return static_cast<T>(i);
  } else if constexpr (std::is_floating_point_v<T>) {
    LT_CHECK(value.is_number(), "{}: expected a number, got {}", what, value.type_name());
    return value.template get<T>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    LT_CHECK(value.is_string(), "{}: expected a string, got {}", what, value.type_name());
    return value.template get<std::string>();
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    LT_CHECK(value.is_array(), "{}: expected a list of integers, got {}", what, value.type_name());
    std::vector<int64_t> out;
    for (const auto& item : value) out.push_back(json_value<int64_t>(item, what));
    return out;
  } else {
    return value.template get<T>();
  }
}

}  // namespace longtune
