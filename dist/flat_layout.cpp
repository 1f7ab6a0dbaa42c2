#include "dist/flat_layout.h"

#include <limits>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/json_value.h"
#include "model/llama.h"

namespace longtune::dist {

int64_t FlatUnit::shard_begin(int rank, int world) const {
  return std::min(numel, shard_numel(world) * rank);
}

int64_t FlatUnit::shard_end(int rank, int world) const {
  return std::min(numel, shard_numel(world) * (rank + 1));
}

std::vector<FlatUnit> flat_units(model::LlamaImpl& model) {
  std::vector<FlatUnit> units(static_cast<size_t>(model.num_units()));
  for (int64_t u = 0; u < model.num_units(); ++u)
    units[u].name = u == 0 ? "embed" : u == model.num_units() - 1 ? "head" : "layer." + std::to_string(u - 1);
  for (const auto& item : model.named_parameters()) {
    FlatUnit& unit = units[static_cast<size_t>(model.unit_of(item.key()))];
    FlatParam param{item.key(), item.value().sizes().vec(), unit.numel, item.value().numel()};
    unit.numel += param.numel;
    unit.params.push_back(std::move(param));
  }
  return units;
}

std::string layout_to_json(const std::vector<FlatUnit>& units, int world_size) {
  nlohmann::ordered_json json = {{"format", "longtune.sharding"}, {"version", 1}, {"world_size", world_size}};
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const FlatUnit& unit : units) {
    nlohmann::ordered_json params = nlohmann::ordered_json::array();
    for (const FlatParam& p : unit.params)
      params.push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}, {"numel", p.numel}});
    list.push_back({{"name", unit.name}, {"numel", unit.numel}, {"params", std::move(params)}});
  }
  json["units"] = std::move(list);
  return json.dump(1) + "\n";
}

std::vector<FlatUnit> layout_from_json(const std::string& json_text, const std::string& context, int* world_size) {
  std::vector<FlatUnit> units;
  try {
    const nlohmann::json json = nlohmann::json::parse(json_text);
    LT_CHECK(json.is_object() && json.contains("format") && json.at("format") == "longtune.sharding" &&
                 json.contains("version") && json.at("version") == 1,
             "{}: not a version 1 longtune.sharding file", context);
    *world_size = json_value<int>(json.at("world_size"), context + ": world_size");
    LT_CHECK(*world_size >= 1, "{}: world_size {} is not positive", context, *world_size);
    for (const auto& u : json.at("units")) {
      FlatUnit unit{json_value<std::string>(u.at("name"), context + ": unit name"), {},
                    json_value<int64_t>(u.at("numel"), context + ": unit numel")};
      int64_t expected_offset = 0;
      for (const auto& p : u.at("params")) {
        FlatParam param{json_value<std::string>(p.at("name"), context + ": parameter name"),
                        json_value<std::vector<int64_t>>(p.at("shape"), context + ": parameter shape"),
                        json_value<int64_t>(p.at("offset"), context + ": parameter offset"),
                        json_value<int64_t>(p.at("numel"), context + ": parameter numel")};
        int64_t product = 1;
        for (int64_t d : param.shape) {
          // Checked before multiplying: a product past INT64_MAX would be undefined.
          LT_CHECK(d >= 0 && (d == 0 || product <= std::numeric_limits<int64_t>::max() / d),
                   "{}: unit '{}' parameter '{}' has a bad shape", context, unit.name, param.name);
          product *= d;
        }
        LT_CHECK(param.offset == expected_offset && param.numel == product,
                 "{}: unit '{}' parameter '{}' has an inconsistent offset or size", context, unit.name, param.name);
        LT_CHECK(param.numel <= std::numeric_limits<int64_t>::max() - expected_offset,
                 "{}: unit '{}' is too large", context, unit.name);
        expected_offset += param.numel;
        unit.params.push_back(std::move(param));
      }
      LT_CHECK(expected_offset == unit.numel, "{}: unit '{}' sizes do not add up to {}", context, unit.name,
               unit.numel);
      units.push_back(std::move(unit));
    }
  } catch (const nlohmann::json::exception& e) {
    LT_FAIL("{}: malformed sharding layout: {}", context, e.what());
  }
  return units;
}

}  // namespace longtune::dist
