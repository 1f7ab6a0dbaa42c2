#include "dist/flat_layout.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/check.h"
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
    LT_CHECK(json.value("format", "") == "longtune.sharding" && json.value("version", 0) == 1,
             "{}: not a version 1 longtune.sharding file", context);
    *world_size = json.at("world_size").get<int>();
    LT_CHECK(*world_size >= 1, "{}: world_size {} is not positive", context, *world_size);
    for (const auto& u : json.at("units")) {
      FlatUnit unit{u.at("name").get<std::string>(), {}, u.at("numel").get<int64_t>()};
      int64_t expected_offset = 0;
      for (const auto& p : u.at("params")) {
        FlatParam param{p.at("name").get<std::string>(), p.at("shape").get<std::vector<int64_t>>(),
                        p.at("offset").get<int64_t>(), p.at("numel").get<int64_t>()};
        int64_t product = 1;
        for (int64_t d : param.shape) product *= d;
        LT_CHECK(param.offset == expected_offset && param.numel == product,
                 "{}: unit '{}' parameter '{}' has an inconsistent offset or size", context, unit.name, param.name);
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
