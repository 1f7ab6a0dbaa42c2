// A checkpoint's completion marker as resume and export read it (trainer/checkpoint: verify, which
// must answer false with a reason and never throw, and step_of), and its sharding.json
// (dist/flat_layout layout_from_json, which must write back equal). The first byte picks which.
#include <string>

#include "dist/flat_layout.h"
#include "fuzz/fuzz_support.h"
#include "trainer/checkpoint.h"
#include "trainer/training_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace longtune;
  if (size == 0) return 0;
  if (data[0] % 2 == 0) {
    const auto step_dir = fuzz::scratch_dir() / "step_00000007";
    std::filesystem::create_directories(step_dir);
    fuzz::input_file(nullptr, 0, "step_00000007/model.safetensors");
    fuzz::input_file(data + 1, size - 1, std::string("step_00000007/") + trainer::complete_marker_name());
    std::string why;
    const bool ok = trainer::CheckpointManager::verify(step_dir, &why);
    fuzz::require(ok || !why.empty());
    fuzz::errors_only([&] { (void)trainer::CheckpointManager::step_of(step_dir); });
  } else {
    int world = 0;
    const auto units = fuzz::accepted(
        [&] { return dist::layout_from_json(fuzz::input_text(data + 1, size - 1), "sharding.json", &world); });
    if (!units) return 0;
    const std::string json = dist::layout_to_json(*units, world);
    int world_again = 0;
    const auto again = dist::layout_from_json(json, "again", &world_again);
    fuzz::require(world_again == world && dist::layout_to_json(again, world_again) == json);
  }
  return 0;
}
