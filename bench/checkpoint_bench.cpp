// Checkpoint throughput: saves a synthetic ~100 MB checkpoint (fp32 + bf16 tensors, a JSON part)
// through CheckpointManager (write + fsync + SHA-256 + rename), loads it back (mmap + clone of
// every tensor, page cache warm), verifies it (re-hash), and copies the same files with
// std::filesystem::copy_file (no fsync, as a plain `cp`) for comparison. Median of 3 each.
// Not a test: no pass/fail, just numbers.
#include <ATen/ops/randn.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/file_io.h"
#include "trainer/checkpoint.h"

namespace {

namespace fs = std::filesystem;
using longtune::trainer::CheckpointManager;
using longtune::trainer::CheckpointReader;
using longtune::trainer::CheckpointWriter;

class TensorPart final : public longtune::trainer::Stateful {
 public:
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  void save(CheckpointWriter& writer) const override {
    writer.put_tensors("model", tensors);
    writer.put_json("trainer", R"({"step": 1})");
  }
  void load(const CheckpointReader& reader) override {
    for (const auto& name : reader.tensor_names("model"))
      loaded_bytes += reader.tensor("model", name).nbytes();
    loaded_bytes += reader.json("trainer").size();
  }
  uint64_t loaded_bytes = 0;
};

double seconds_of(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

uint64_t directory_bytes(const fs::path& directory) {
  uint64_t bytes = 0;
  for (const auto& entry : fs::directory_iterator(directory)) bytes += entry.file_size();
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"checkpoint save/load throughput"};
  double megabytes = 100;
  std::string dir = (fs::temp_directory_path() / "longtune_checkpoint_bench").string();
  int repeats = 3;
  app.add_option("--mb", megabytes, "checkpoint size in MB (2/3 fp32, 1/3 bf16)");
  app.add_option("--dir", dir, "scratch directory (deleted and recreated)");
  app.add_option("--repeats", repeats, "runs per measurement (median reported)");
  CLI11_PARSE(app, argc, argv);

  try {
    const fs::path run_dir = dir;
    longtune::remove_tree(run_dir);
    fs::create_directories(run_dir);
    const auto fp32_elements = static_cast<int64_t>(megabytes * 1e6 * 2 / 3 / 4);
    const auto bf16_elements = static_cast<int64_t>(megabytes * 1e6 / 3 / 2);
    TensorPart part;
    part.tensors = {{"fp32", at::randn({fp32_elements})},
                    {"bf16", at::randn({bf16_elements}, at::kBFloat16)}};
    CheckpointManager manager(run_dir, repeats + 1);

    std::vector<double> save_s, load_s, verify_s, copy_s;
    fs::path saved;
    uint64_t bytes = 0;
    for (int run = 0; run < repeats; ++run) {
      save_s.push_back(seconds_of([&] { saved = manager.save(run + 1, {{"part", &part}}); }));
      bytes = directory_bytes(saved);
      load_s.push_back(seconds_of([&] { CheckpointManager::load(saved, {{"part", &part}}); }));
      verify_s.push_back(seconds_of([&] { LT_CHECK(CheckpointManager::verify(saved), "bad"); }));
      const fs::path copy = run_dir / "copy";
      longtune::remove_tree(copy);
      fs::create_directories(copy);
      copy_s.push_back(seconds_of([&] {
        for (const auto& entry : fs::directory_iterator(saved))
          fs::copy_file(entry.path(), copy / entry.path().filename());
      }));
    }
    const double mb = bytes / 1e6;
    std::printf("checkpoint: %.1f MB in %s (median of %d)\n", mb, run_dir.c_str(), repeats);
    std::printf("  save   %8.1f MB/s  (%.3f s: write, fsync, sha256, rename)\n",
                mb / median(save_s), median(save_s));
    std::printf("  load   %8.1f MB/s  (%.3f s: mmap + clone, page cache warm)\n",
                mb / median(load_s), median(load_s));
    std::printf("  verify %8.1f MB/s  (%.3f s: sha256 of every file)\n", mb / median(verify_s),
                median(verify_s));
    std::printf("  copy   %8.1f MB/s  (%.3f s: std::filesystem::copy_file, no fsync)\n",
                mb / median(copy_s), median(copy_s));
    longtune::remove_tree(run_dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
