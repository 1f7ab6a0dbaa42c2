// Checkpoint throughput: saves a synthetic ~100 MB checkpoint shaped like one training rank's
// (fp32 master weights, 1/3; AdamW's two fp32 moments in a second file, 2/3; a JSON part)
// through CheckpointManager (write + SHA-256 while writing + fsync + rename), loads it back (mmap +
// clone of every tensor; the save bypasses the page cache where O_DIRECT works, so from disk),
// verifies it (re-hash), and copies the same files with
// std::filesystem::copy_file, without fsync (as a plain `cp`) and with one (as durable as the save).
// Then: the time of a training-like step (a fixed matmul loop on the main thread, one intra-op
// thread) with and without an asynchronous save in flight, and resume verification of a checkpoint
// of R ranks' files, one rank verifying everything vs each rank its own share (run one after the
// other here: the figure per rank is the slowest share). Median of --repeats each. The last line is
// `save_vs_copy R`: median save MB/s over median durable-copy MB/s. Not a test: no pass/fail.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"
#include "common/file_io.h"
#include "trainer/checkpoint.h"

namespace {

namespace fs = std::filesystem;
using longtune::trainer::CheckpointManager;
using longtune::trainer::CheckpointReader;
using longtune::trainer::CheckpointWriter;
using longtune::trainer::SaveMode;
using Clock = std::chrono::steady_clock;

class TensorPart final : public longtune::trainer::Stateful {
 public:
  std::string name = "model";
  bool with_json = false;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  void save(CheckpointWriter& writer) const override {
    writer.put_tensors(name, tensors);
    if (with_json) writer.put_json("trainer", R"({"step": 1})");
  }
  void load(const CheckpointReader& reader) override {
    for (const auto& tensor_name : reader.tensor_names(name))
      loaded_bytes += reader.tensor(name, tensor_name).nbytes();
    if (with_json) loaded_bytes += reader.json("trainer").size();
  }
  uint64_t loaded_bytes = 0;
};

double seconds_of(const std::function<void()>& fn) {
  const auto start = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - start).count();
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

void fsync_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LT_CHECK(fd >= 0 && ::fsync(fd) == 0, "{}: fsync failed", path.string());
  ::close(fd);
}

// One training-like step: a fixed amount of matmul work on this thread.
double step_seconds(const at::Tensor& a, const at::Tensor& b, int matmuls) {
  return seconds_of([&] {
    at::Tensor c = a;
    for (int i = 0; i < matmuls; ++i) c = at::mm(c, b).tanh_();
    (void)c.sum().item<float>();
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"checkpoint save/load throughput"};
  double megabytes = 100;
  std::string dir = (fs::temp_directory_path() / "longtune_checkpoint_bench").string();
  int repeats = 5, ranks = 4, matmuls = 12;
  app.add_option("--mb", megabytes, "checkpoint size in MB (fp32 weights 1/3, fp32 moments 2/3)");
  app.add_option("--dir", dir, "scratch directory (deleted and recreated)");
  app.add_option("--repeats", repeats, "runs per measurement (median reported)");
  app.add_option("--ranks", ranks, "ranks of the simulated checkpoint for the verification figures");
  app.add_option("--matmuls", matmuls, "512x512 matmuls per simulated training step");
  CLI11_PARSE(app, argc, argv);

  try {
    const fs::path run_dir = dir;
    longtune::remove_tree(run_dir);
    fs::create_directories(run_dir);
    const auto fp32_elements = static_cast<int64_t>(megabytes * 1e6 / 3 / 4);  // one third of the bytes
    TensorPart weights, optimizer;
    weights.name = "weights";
    weights.with_json = true;
    weights.tensors = {{"master", at::randn({fp32_elements})}};
    optimizer.name = "optimizer";
    optimizer.tensors = {{"exp_avg", at::randn({fp32_elements})}, {"exp_avg_sq", at::rand({fp32_elements})}};
    const std::map<std::string, const longtune::trainer::Stateful*> parts = {{"weights", &weights},
                                                                             {"optimizer", &optimizer}};
    CheckpointManager manager(run_dir, repeats + 1);

    // ---- save, load, verify, copy ----
    std::vector<double> save_s, load_s, verify_s, copy_s, durable_copy_s;
    fs::path saved;
    uint64_t bytes = 0;
    for (int run = 0; run < repeats; ++run) {
      // Each durable write starts with no dirty pages of another's: an fsync on ext4 may also write
      // out other files' data that is due in the same journal commit.
      ::sync();
      save_s.push_back(seconds_of([&] { saved = manager.save(run + 1, parts); }));
      bytes = directory_bytes(saved);
      load_s.push_back(seconds_of([&] { CheckpointManager::load(saved, {{"weights", &weights}, {"optimizer", &optimizer}}); }));
      verify_s.push_back(seconds_of([&] { LT_CHECK(CheckpointManager::verify(saved), "bad"); }));
      for (const bool durable : {false, true}) {
        const fs::path copy = run_dir / (durable ? "durable_copy" : "copy");
        longtune::remove_tree(copy);
        fs::create_directories(copy);
        ::sync();
        (durable ? durable_copy_s : copy_s).push_back(seconds_of([&] {
          for (const auto& entry : fs::directory_iterator(saved)) {
            const fs::path to = copy / entry.path().filename();
            fs::copy_file(entry.path(), to);
            if (durable) fsync_file(to);
          }
          if (durable) longtune::fsync_directory(copy);
        }));
      }
    }
    const double mb = bytes / 1e6;
    const double save_mbs = mb / median(save_s), durable_copy_mbs = mb / median(durable_copy_s);
    std::printf("checkpoint: %.1f MB in %s (median of %d)\n", mb, run_dir.c_str(), repeats);
    std::printf("  save   %8.1f MB/s  (%.3f s: write with sha256 of each block as written, fsync, rename)\n",
                save_mbs, median(save_s));
    std::printf("  load   %8.1f MB/s  (%.3f s: mmap + clone of every tensor)\n",
                mb / median(load_s), median(load_s));
    std::printf("  verify %8.1f MB/s  (%.3f s: sha256 of every file)\n", mb / median(verify_s),
                median(verify_s));
    std::printf("  copy   %8.1f MB/s  (%.3f s: std::filesystem::copy_file, no fsync)\n",
                mb / median(copy_s), median(copy_s));
    std::printf("  durable copy %8.1f MB/s  (%.3f s: copy_file, then fsync of each file and the directory)\n",
                durable_copy_mbs, median(durable_copy_s));

    // ---- a training-like step with and without an asynchronous save in flight ----
    // One intra-op thread: the step holds one core, the background writer may use the other.
    at::set_num_threads(1);
    const at::Tensor a = at::randn({512, 512}), b = at::randn({512, 512}) / 25;
    std::vector<double> quiet;
    for (int i = 0; i < 5; ++i) step_seconds(a, b, matmuls);  // warm up
    for (int i = 0; i < 15; ++i) quiet.push_back(step_seconds(a, b, matmuls));
    std::vector<double> during, snapshot_s;
    for (int run = 0; run < repeats; ++run) {
      const int64_t step = 100 + run;
      fs::path target;
      ::sync();
      snapshot_s.push_back(seconds_of([&] { target = manager.save(step, parts, nullptr, SaveMode::kAsync); }));
      // Steps that start while the write is under way (the directory appears under its final name
      // when rank 0 commits).
      while (!fs::exists(target)) during.push_back(step_seconds(a, b, matmuls));
      manager.wait();
    }
    const double quiet_s = median(quiet), during_s = during.empty() ? 0 : median(during);
    std::printf("step (%d 512x512 matmuls, 1 thread; the machine's other core is free for the writer)\n", matmuls);
    std::printf("  without a save   %.4f s (median of %zu)\n", quiet_s, quiet.size());
    std::printf("  during async save %.4f s (median of %zu steps), %.1f%% of the step without one\n", during_s,
                during.size(), 100 * during_s / quiet_s);
    std::printf("  async save pause %.3f s (snapshot to host memory), vs %.3f s for a synchronous save\n",
                median(snapshot_s), median(save_s));
    at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));

    // ---- resume verification: one rank verifies all vs each rank its share ----
    // A checkpoint of `ranks` equal shards, marked as written by one rank each (the marker a
    // distributed save writes); after the first repeat the files are in the page cache.
    std::vector<TensorPart> shards(static_cast<size_t>(ranks));
    std::map<std::string, const longtune::trainer::Stateful*> shard_parts;
    for (int r = 0; r < ranks; ++r) {
      shards[r].name = "shard" + std::to_string(r);
      shards[r].tensors = {{"w", at::randn({2 * fp32_elements / ranks})}};
      shard_parts[shards[r].name] = &shards[r];
    }
    CheckpointManager sharded(run_dir / "sharded", 1);
    const fs::path sharded_dir = sharded.save(1, shard_parts);
    const fs::path marker_path = sharded_dir / "COMPLETE";
    nlohmann::json marker = nlohmann::json::parse(longtune::read_file(marker_path));
    for (int r = 0; r < ranks; ++r) marker["files"]["shard" + std::to_string(r) + ".safetensors"]["rank"] = r;
    longtune::write_file_atomic(marker_path, marker.dump(2));
    std::vector<double> all_s, per_rank_s;
    for (int run = 0; run < repeats; ++run) {
      all_s.push_back(seconds_of([&] { LT_CHECK(CheckpointManager::verify(sharded_dir), "bad"); }));
      double slowest = 0;
      for (int r = 0; r < ranks; ++r)
        slowest = std::max(slowest, seconds_of([&] {
          LT_CHECK(CheckpointManager::verify_share(sharded_dir, r, ranks, false).empty() &&
                       CheckpointManager::verify_share(sharded_dir, r, ranks, true).empty(),
                   "bad");
        }));
      per_rank_s.push_back(slowest);
    }
    std::printf("resume verification of %.1f MB in %d ranks' files (median: page cache warm)\n",
                directory_bytes(sharded_dir) / 1e6, ranks);
    std::printf("  one rank verifies all   %.3f s\n", median(all_s));
    std::printf("  each rank its own share %.3f s per rank (slowest), %.1fx less\n", median(per_rank_s),
                median(all_s) / median(per_rank_s));
    longtune::remove_tree(run_dir);
    std::printf("save_vs_copy %.2f\n", save_mbs / durable_copy_mbs);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
