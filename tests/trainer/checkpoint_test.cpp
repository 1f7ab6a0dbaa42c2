// Tests for trainer/checkpoint: bit-exact round trips of tensor/JSON/verbatim parts, the COMPLETE
// marker, keep_last pruning, verification of damaged files, resume selection with fallback, cleanup
// of leftovers from killed saves, SIGKILL at random moments of a real save, synchronous or
// asynchronous (forked child), asynchronous saves (equal to synchronous ones bit for bit, errors
// surfacing on the caller's thread), and over 3 Gloo ranks: saves, and resume verification spread
// over the ranks. CPU-only; about 5-10 s, most of it in the kill tests' ~64 MB saves.
#include "trainer/checkpoint.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include <ATen/Parallel.h>

#include "common/file_io.h"
#include "common/log.h"
#include "tests/dist_support.h"
#include "tests/test_support.h"

namespace longtune::trainer {
namespace {

namespace fs = std::filesystem;
using longtune::testing::expect_error;
using longtune::testing::read_bytes;
using longtune::testing::write_bytes;

// A part holding whatever the test gives it; load() reads back the same shape of state into the
// loaded_* members.
class TestPart : public Stateful {
 public:
  explicit TestPart(std::string name) : name_(std::move(name)) {}

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::optional<std::string> json;
  std::map<std::string, std::string> files;

  std::map<std::string, at::Tensor> loaded_tensors;
  std::optional<std::string> loaded_json;
  std::map<std::string, std::string> loaded_files;

  void save(CheckpointWriter& writer) const override {
    if (!tensors.empty()) writer.put_tensors(name_, tensors);
    if (json) writer.put_json(name_, *json);
    for (const auto& [file_name, content] : files) writer.put_file(file_name, content);
  }
  void load(const CheckpointReader& reader) override {
    for (const auto& [tensor_name, tensor] : tensors)
      loaded_tensors[tensor_name] = reader.tensor(name_, tensor_name);
    if (json) loaded_json = reader.json(name_);
    for (const auto& [file_name, content] : files) loaded_files[file_name] = reader.file(file_name);
  }

 private:
  std::string name_;
};

std::string raw_bytes(const at::Tensor& tensor) {
  const at::Tensor host = tensor.contiguous();
  return std::string(static_cast<const char*>(host.const_data_ptr()), host.nbytes());
}

void expect_bit_exact(const at::Tensor& expected, const at::Tensor& actual,
                      const std::string& name) {
  ASSERT_TRUE(actual.defined()) << name;
  EXPECT_EQ(actual.scalar_type(), expected.scalar_type()) << name;
  EXPECT_EQ(actual.sizes(), expected.sizes()) << name;
  EXPECT_TRUE(actual.device().is_cpu()) << name;
  EXPECT_EQ(raw_bytes(actual), raw_bytes(expected)) << name;
}

void flip_byte(const fs::path& path, size_t offset) {
  std::string bytes = read_bytes(path);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x01);
  write_bytes(path, bytes);
}

// Routes longtune's log to a file (no console) for the scope, to check warnings.
class CapturedLog {
 public:
  explicit CapturedLog(fs::path path) : path_(std::move(path)) {
    LogOptions options;
    options.rank = 1;  // no console sink
    options.file = path_.string();
    options.level = "warn";
    init_logging(options);
  }
  ~CapturedLog() { init_logging(LogOptions{}); }
  std::string text() const { return read_bytes(path_); }

 private:
  fs::path path_;
};

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "checkpoint_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    run_dir_ = pattern;
  }
  // Not TempDir: its std::filesystem::remove_all is the call that crashes next to LibTorch.
  void TearDown() override { remove_tree(run_dir_); }

  // A model part (fp32 with NaN/-0/denormal bit patterns, bf16, int64, and a non-contiguous view),
  // an optimizer part with JSON, and a verbatim config file.
  void make_parts() {
    at::Tensor weights = at::randn({4, 6});
    auto* data = weights.mutable_data_ptr<float>();
    data[0] = std::numeric_limits<float>::quiet_NaN();
    data[1] = -0.0f;
    data[2] = std::numeric_limits<float>::denorm_min();
    data[3] = -std::numeric_limits<float>::infinity();
    model_.tensors = {{"w", weights},
                      {"w_t", weights.t()},  // non-contiguous: saved as its contiguous copy
                      {"h", at::randn({3, 5}, at::kBFloat16)},
                      {"ids", at::arange(-7, 9, at::kLong)}};
    optimizer_.tensors = {{"m.w", at::randn({4, 6})}};
    optimizer_.json = R"({"lr": 0.0003, "betas": [0.9, 0.95]})";
    config_.files = {{"config.resolved.yaml", "model:\n  dim: 64\n"}};
  }
  std::map<std::string, const Stateful*> parts() const {
    return {{"model", &model_}, {"optimizer", &optimizer_}, {"config", &config_}};
  }
  std::map<std::string, Stateful*> parts_to_load() {
    return {{"model", &model_}, {"optimizer", &optimizer_}, {"config", &config_}};
  }
  fs::path checkpoints() const { return run_dir_ / "checkpoints"; }

  fs::path run_dir_;
  TestPart model_{"model"};
  TestPart optimizer_{"optimizer"};
  TestPart config_{"config"};
};

TEST_F(CheckpointTest, RoundTripsEveryKindOfPartBitExact) {
  make_parts();
  CheckpointManager manager(run_dir_, 3);
  const fs::path saved = manager.save(7, parts());
  EXPECT_EQ(saved, checkpoints() / "step_00000007");
  EXPECT_EQ(CheckpointManager::step_of(saved), 7);
  EXPECT_TRUE(CheckpointManager::verify(saved));
  for (const char* file : {"model.safetensors", "optimizer.safetensors", "optimizer.json",
                           "config.resolved.yaml", "COMPLETE"})
    EXPECT_TRUE(fs::is_regular_file(saved / file)) << file;

  CheckpointManager::load(saved, parts_to_load());
  for (const auto& [name, tensor] : model_.tensors)
    expect_bit_exact(tensor, model_.loaded_tensors.at(name), name);
  expect_bit_exact(optimizer_.tensors[0].second, optimizer_.loaded_tensors.at("m.w"), "m.w");
  EXPECT_EQ(optimizer_.loaded_json, optimizer_.json);
  EXPECT_EQ(config_.loaded_files, config_.files);

  CheckpointReader reader(saved);
  EXPECT_TRUE(reader.has_part("model"));
  EXPECT_TRUE(reader.has_part("optimizer"));
  EXPECT_FALSE(reader.has_part("config"));  // verbatim files only
  auto names = reader.tensor_names("model");
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"h", "ids", "w", "w_t"}));
  // Owned copies: writable, and independent of each other.
  at::Tensor a = reader.tensor("model", "w");
  a.zero_();
  EXPECT_EQ(raw_bytes(reader.tensor("model", "w")), raw_bytes(model_.tensors[0].second));
}

TEST_F(CheckpointTest, SavesTensorsThatRequireGrad) {
  TestPart part("p");
  at::Tensor leaf = at::randn({5});
  leaf.set_requires_grad(true);
  part.tensors = {{"leaf", leaf}};
  CheckpointManager manager(run_dir_, 1);
  const fs::path saved = manager.save(1, {{"p", &part}});
  CheckpointManager::load(saved, {{"p", &part}});
  expect_bit_exact(leaf.detach(), part.loaded_tensors.at("leaf"), "leaf");
  EXPECT_FALSE(part.loaded_tensors.at("leaf").requires_grad());
}

TEST_F(CheckpointTest, CompleteMarkerListsSizeAndSha256OfEveryFile) {
  make_parts();
  const fs::path saved = CheckpointManager(run_dir_, 1).save(42, parts());
  const auto marker = nlohmann::json::parse(read_bytes(saved / "COMPLETE"));
  EXPECT_EQ(marker.at("format"), "longtune.checkpoint");
  EXPECT_EQ(marker.at("version"), 1);
  EXPECT_EQ(marker.at("step"), 42);
  std::set<std::string> listed;
  for (const auto& [name, entry] : marker.at("files").items()) {
    listed.insert(name);
    EXPECT_EQ(entry.at("bytes").get<uint64_t>(), fs::file_size(saved / name)) << name;
    EXPECT_EQ(entry.at("sha256").get<std::string>(), sha256_file(saved / name)) << name;
    EXPECT_EQ(entry.at("rank"), 0) << name;  // who wrote it, and so who verifies it on resume
  }
  std::set<std::string> on_disk;
  for (const auto& entry : fs::directory_iterator(saved))
    on_disk.insert(entry.path().filename().string());
  on_disk.erase("COMPLETE");
  EXPECT_EQ(listed, on_disk);  // no temporaries left, nothing unlisted
}

TEST_F(CheckpointTest, KeepsOnlyTheNewestKeepLast) {
  make_parts();
  CheckpointManager manager(run_dir_, 2);
  for (int64_t step : {10, 20, 30, 40}) manager.save(step, parts());
  EXPECT_EQ(manager.list_complete(), (std::vector<fs::path>{checkpoints() / "step_00000040",
                                                            checkpoints() / "step_00000030"}));
  size_t entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(checkpoints())) ++entries;
  EXPECT_EQ(entries, 2u);
}

TEST_F(CheckpointTest, NeverPrunesTheCheckpointJustWritten) {
  // After resuming from an older checkpoint, the new save is older-numbered than a stale one.
  make_parts();
  CheckpointManager manager(run_dir_, 1);
  manager.save(200, parts());
  manager.save(150, parts());
  EXPECT_EQ(manager.list_complete(), std::vector<fs::path>{checkpoints() / "step_00000150"});
}

TEST_F(CheckpointTest, ResavingAStepReplacesIt) {
  make_parts();
  CheckpointManager manager(run_dir_, 2);
  const fs::path saved = manager.save(5, parts());
  flip_byte(saved / "model.safetensors", 100);
  ASSERT_FALSE(CheckpointManager::verify(saved));
  EXPECT_EQ(manager.save(5, parts()), saved);
  EXPECT_TRUE(CheckpointManager::verify(saved));
  EXPECT_EQ(manager.list_complete(), std::vector<fs::path>{saved});
}

TEST_F(CheckpointTest, VerifyDetectsFlippedTruncatedAndMissingFiles) {
  make_parts();
  CheckpointManager manager(run_dir_, 10);
  std::string why;

  const fs::path flipped = manager.save(1, parts());
  flip_byte(flipped / "optimizer.safetensors",
            fs::file_size(flipped / "optimizer.safetensors") - 3);
  EXPECT_FALSE(CheckpointManager::verify(flipped, &why));
  EXPECT_NE(why.find("optimizer.safetensors"), std::string::npos) << why;
  EXPECT_NE(why.find("SHA-256"), std::string::npos) << why;

  const fs::path truncated = manager.save(2, parts());
  fs::resize_file(truncated / "model.safetensors",
                  fs::file_size(truncated / "model.safetensors") - 1);
  EXPECT_FALSE(CheckpointManager::verify(truncated, &why));
  EXPECT_NE(why.find("model.safetensors"), std::string::npos) << why;
  EXPECT_NE(why.find("bytes"), std::string::npos) << why;

  const fs::path missing = manager.save(3, parts());
  fs::remove(missing / "config.resolved.yaml");
  EXPECT_FALSE(CheckpointManager::verify(missing, &why));
  EXPECT_NE(why.find("config.resolved.yaml"), std::string::npos) << why;
  EXPECT_NE(why.find("missing"), std::string::npos) << why;

  const fs::path bad_marker = manager.save(4, parts());
  write_bytes(bad_marker / "COMPLETE", "{not json");
  EXPECT_FALSE(CheckpointManager::verify(bad_marker, &why));
  EXPECT_NE(why.find("COMPLETE"), std::string::npos) << why;

  // Files the marker does not list are not its business.
  const fs::path extra = manager.save(5, parts());
  write_bytes(extra / "notes.txt", "added later");
  EXPECT_TRUE(CheckpointManager::verify(extra, &why)) << why;
}

TEST_F(CheckpointTest, FindResumeAutoPicksTheNewestAndFallsBackPastDamage) {
  make_parts();
  CheckpointManager manager(run_dir_, 5);
  EXPECT_EQ(manager.find_resume("auto"), std::nullopt);  // no checkpoints dir yet
  EXPECT_EQ(manager.find_resume("never"), std::nullopt);
  manager.save(100, parts());
  const fs::path newest = manager.save(200, parts());
  EXPECT_EQ(manager.find_resume("auto"), newest);
  EXPECT_EQ(manager.find_resume("never"), std::nullopt);

  flip_byte(newest / "model.safetensors", 200);
  std::optional<fs::path> resume;
  {
    CapturedLog log(run_dir_ / "log.txt");
    resume = manager.find_resume("auto");
    EXPECT_NE(log.text().find("step_00000200"), std::string::npos) << log.text();
    EXPECT_NE(log.text().find("damaged"), std::string::npos) << log.text();
  }
  EXPECT_EQ(resume, checkpoints() / "step_00000100");
}

TEST_F(CheckpointTest, FindResumeAutoFailsWhenEveryCheckpointIsDamaged) {
  make_parts();
  CheckpointManager manager(run_dir_, 5);
  fs::remove(manager.save(1, parts()) / "optimizer.json");
  flip_byte(manager.save(2, parts()) / "model.safetensors", 50);
  CapturedLog quiet(run_dir_ / "log.txt");
  expect_error([&] { manager.find_resume("auto"); },
               {"step_00000001", "step_00000002", "damaged", "never"});
}

TEST_F(CheckpointTest, FindResumeExplicitPath) {
  make_parts();
  CheckpointManager manager(run_dir_, 5);
  const fs::path good = manager.save(3, parts());
  const fs::path damaged = manager.save(4, parts());
  fs::resize_file(damaged / "optimizer.json", 2);
  EXPECT_EQ(manager.find_resume(good.string()), good);
  EXPECT_EQ(manager.find_resume("step_00000003"), checkpoints() / "step_00000003");
  expect_error([&] { manager.find_resume(damaged.string()); },
               {damaged.string(), "damaged", "optimizer.json"});
  expect_error([&] { manager.find_resume((run_dir_ / "nope").string()); },
               {"nope", "does not exist"});
  fs::create_directories(run_dir_ / "incomplete");
  expect_error([&] { manager.find_resume((run_dir_ / "incomplete").string()); },
               {"incomplete", "COMPLETE"});
}

TEST_F(CheckpointTest, LoadNamesTheMissingPartAndTensor) {
  make_parts();
  const fs::path saved = CheckpointManager(run_dir_, 1).save(9, parts());
  TestPart absent("scheduler");
  absent.json = "{}";
  const std::map<std::string, Stateful*> only_absent = {{"scheduler", &absent}};
  expect_error([&] { CheckpointManager::load(saved, only_absent); }, {saved.string(), "scheduler"});
  TestPart wider("model");
  wider.tensors = {{"w", at::Tensor()}, {"bias", at::Tensor()}};
  const std::map<std::string, Stateful*> only_wider = {{"model", &wider}};
  expect_error([&] { CheckpointManager::load(saved, only_wider); },
               {saved.string(), "model", "bias"});
  expect_error([&] { CheckpointReader reader(run_dir_); }, {run_dir_.string(), "COMPLETE"});
}

TEST_F(CheckpointTest, RejectsClashingAndHiddenFileNames) {
  TestPart a("model"), b("model");
  a.json = b.json = "{}";
  CheckpointManager manager(run_dir_, 1);
  expect_error([&] { manager.save(1, {{"a", &a}, {"b", &b}}); }, {"model.json", "twice"});
  TestPart hidden("x");
  hidden.files = {{".secret", "x"}};
  expect_error([&] { manager.save(1, {{"x", &hidden}}); }, {".secret"});
  TestPart marker("x");
  marker.files = {{"COMPLETE", "x"}};
  expect_error([&] { manager.save(1, {{"x", &marker}}); }, {"COMPLETE"});
  // Failed saves leave nothing behind.
  EXPECT_TRUE(manager.list_complete().empty());
  for (const auto& entry : fs::directory_iterator(checkpoints()))
    ADD_FAILURE() << "left behind: " << entry.path();
}

TEST_F(CheckpointTest, LeftoversOfKilledSavesAreIgnoredThenCleaned) {
  make_parts();
  CheckpointManager manager(run_dir_, 2);
  const fs::path good = manager.save(1, parts());
  // What a save killed before its rename leaves: a temp dir with partial files and no COMPLETE,
  // an AtomicFile temporary, and a half-deleted directory being discarded.
  const fs::path temp = checkpoints() / ".tmp-step_00000002-999999";
  write_bytes(temp / "model.safetensors", std::string(1000, 'x'));
  write_bytes(temp / "optimizer.json.tmp-999999", "{");
  write_bytes(checkpoints() / ".trash-step_00000000-999999" / "model.safetensors", "x");
  fs::create_directories(checkpoints() / "step_00000003");  // no COMPLETE: not a checkpoint
  EXPECT_EQ(manager.list_complete(), std::vector<fs::path>{good});
  {
    // Passed over, but not silently: the warning names it.
    CapturedLog log(run_dir_ / "log.txt");
    EXPECT_EQ(manager.find_resume("auto"), good);
    EXPECT_NE(log.text().find("step_00000003: no COMPLETE marker"), std::string::npos) << log.text();
    EXPECT_EQ(log.text().find(".tmp-step_00000002"), std::string::npos) << log.text();  // temporaries are no news
  }

  const fs::path next = manager.save(2, parts());
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_FALSE(fs::exists(checkpoints() / ".trash-step_00000000-999999"));
  EXPECT_EQ(manager.list_complete(), (std::vector<fs::path>{next, good}));
}

// SIGKILL a child process at moments spread over a real ~64 MB save (synchronous, or asynchronous
// and waited for): whatever the moment, the previous checkpoint still verifies and auto-resume
// finds a checkpoint that verifies, never a damaged one and never none.
void kill_during_saves(const fs::path& run_dir, SaveMode mode) {
  const fs::path checkpoints = run_dir / "checkpoints";
  // fork() copies only this thread; the child's synchronous save runs no torch kernels (its tensors
  // are already CPU and contiguous), and its asynchronous one clones on this thread alone (one
  // intra-op thread), so torch's worker pools are never needed there.
  TestPart big("model");
  big.tensors = {{"big", at::randn({16 << 20})}, {"small", at::randn({1000}, at::kBFloat16)}};
  TestPart state("trainer");
  state.json = R"({"step": 100})";
  const std::map<std::string, const Stateful*> parts = {{"model", &big}, {"trainer", &state}};
  CheckpointManager manager(run_dir, 2);

  const auto start = std::chrono::steady_clock::now();
  const fs::path previous = manager.save(100, parts);
  const double save_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const fs::path next = checkpoints / "step_00000101";

  const unsigned seed = std::random_device{}();
  std::mt19937 random(seed);
  std::uniform_real_distribution<double> jitter(0.7, 1.3);
  constexpr int kKills = 6;
  int completed = 0, interrupted = 0;
  // Round 0 lets the save finish, so later rounds also replace an existing step_00000101; then
  // kills from "at once" to half again the parent's own save time (a child's save is often slower).
  for (int i = 0; i <= kKills; ++i) {
    const double delay = i == 0 ? 0 : save_seconds * 1.5 * (i - 1) / (kKills - 1) * jitter(random);
    SCOPED_TRACE(::testing::Message() << "round " << i << " (seed " << seed << "): kill after "
                                      << delay << " s of a ~" << save_seconds << " s save");
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      try {
        if (mode == SaveMode::kAsync) at::set_num_threads(1);
        manager.save(101, parts, nullptr, mode);
        manager.wait();
      } catch (...) {
        ::_exit(3);
      }
      ::_exit(0);
    }
    if (i > 0) {
      std::this_thread::sleep_for(std::chrono::duration<double>(delay));
      ::kill(child, SIGKILL);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    const bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    const bool finished = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    ASSERT_TRUE(finished || (killed && i > 0)) << "child status " << status;
    completed += finished;
    // Evidence that kills land mid-save: the child's own temporary (or trash) directory remains.
    for (const auto& entry : fs::directory_iterator(checkpoints))
      interrupted += entry.path().filename().string().ends_with("-" + std::to_string(child));

    std::string why;
    EXPECT_TRUE(CheckpointManager::verify(previous, &why)) << why;
    for (const fs::path& directory : manager.list_complete())
      EXPECT_TRUE(CheckpointManager::verify(directory, &why)) << directory << ": " << why;
    const std::optional<fs::path> resume = manager.find_resume("auto");
    ASSERT_TRUE(resume.has_value());
    EXPECT_TRUE(*resume == previous || *resume == next) << *resume;
    if (finished) {
      EXPECT_EQ(*resume, next);
    }
  }
  // The next ordinary save sweeps up whatever the killed ones left.
  manager.save(102, parts);
  for (const auto& entry : fs::directory_iterator(checkpoints))
    EXPECT_EQ(entry.path().filename().string().rfind("step_", 0), 0u) << entry.path();
  ::testing::Test::RecordProperty("completed", completed);
  ::testing::Test::RecordProperty("interrupted_mid_save", interrupted);
}

TEST_F(CheckpointTest, KillDuringSaveNeverDamagesWhatResumeSees) { kill_during_saves(run_dir_, SaveMode::kSync); }

TEST_F(CheckpointTest, KillDuringAsyncSaveNeverDamagesWhatResumeSees) {
  kill_during_saves(run_dir_, SaveMode::kAsync);
}

// ---- asynchronous saves ----

// Every file of a checkpoint directory, by name, as bytes.
std::map<std::string, std::string> directory_bytes(const fs::path& directory) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::directory_iterator(directory))
    files[entry.path().filename().string()] = read_bytes(entry.path());
  return files;
}

TEST_F(CheckpointTest, AsyncSaveEqualsSyncSaveBitForBitAndSnapshotsAtTheCall) {
  make_parts();
  CheckpointManager sync(run_dir_ / "sync", 2), async(run_dir_ / "async", 2);
  const fs::path expected = sync.save(3, parts());
  const std::string weights = raw_bytes(model_.tensors[0].second);
  const fs::path saved = async.save(3, parts(), nullptr, SaveMode::kAsync);
  EXPECT_TRUE(async.save_in_flight());
  // The optimizer step that follows a save changes the state in place: the save must not see it.
  model_.tensors[0].second.add_(1.0);
  optimizer_.tensors[0].second.zero_();
  async.wait();
  EXPECT_FALSE(async.save_in_flight());
  EXPECT_EQ(saved, run_dir_ / "async" / "checkpoints" / "step_00000003");
  EXPECT_EQ(directory_bytes(saved), directory_bytes(expected));  // COMPLETE included
  EXPECT_TRUE(CheckpointManager::verify(saved));
  CheckpointReader reader(saved);
  EXPECT_EQ(raw_bytes(reader.tensor("model", "w")), weights);
}

TEST_F(CheckpointTest, AsyncSavesKeepAtLeastOneCompleteCheckpoint) {
  // keep_last 1: the only complete checkpoint goes only once the next one is in place.
  make_parts();
  CheckpointManager manager(run_dir_, 1);
  const fs::path first = manager.save(1, parts(), nullptr, SaveMode::kAsync);
  manager.wait();
  manager.save(2, parts(), nullptr, SaveMode::kAsync);
  EXPECT_GE(manager.list_complete().size(), 1u);  // step 1 until step 2 is committed, then step 2
  manager.wait();
  EXPECT_EQ(manager.list_complete(), std::vector<fs::path>{checkpoints() / "step_00000002"});
  EXPECT_FALSE(fs::exists(first));
  // The next save waits for the one in flight, so saves never overlap.
  manager.save(3, parts(), nullptr, SaveMode::kAsync);
  manager.save(4, parts(), nullptr, SaveMode::kAsync);
  manager.wait();
  EXPECT_EQ(manager.list_complete(), std::vector<fs::path>{checkpoints() / "step_00000004"});
}

TEST_F(CheckpointTest, AsyncSaveErrorSurfacesAtTheNextWaitOrSaveNamingTheCheckpoint) {
  make_parts();
  CheckpointManager manager(run_dir_, 3);
  const fs::path good = manager.save(1, parts());
  // Complex numbers have no safetensors dtype: the snapshot takes them, the background write fails.
  TestPart bad("model");
  bad.tensors = {{"z", at::randn({4}, at::kComplexFloat)}};
  manager.save(2, {{"model", &bad}}, nullptr, SaveMode::kAsync);
  expect_error([&] { manager.wait(); }, {"asynchronous save", "step_00000002", "model.safetensors"});
  manager.wait();  // rethrown once
  manager.save(3, {{"model", &bad}}, nullptr, SaveMode::kAsync);
  expect_error([&] { manager.save(4, parts()); }, {"asynchronous save", "step_00000003"});
  // Nothing half-written is left, the earlier checkpoint is untouched, saving works again.
  EXPECT_EQ(manager.list_complete(), std::vector<fs::path>{good});
  EXPECT_TRUE(CheckpointManager::verify(good));
  for (const auto& entry : fs::directory_iterator(checkpoints()))
    EXPECT_EQ(entry.path().filename().string().rfind("step_", 0), 0u) << entry.path();
  EXPECT_EQ(manager.save(5, parts()), checkpoints() / "step_00000005");
  // A failure nobody waited for is logged by the destructor, not thrown from it.
  CapturedLog log(run_dir_ / "log.txt");
  {
    CheckpointManager abandoned(run_dir_, 3);
    abandoned.save(6, {{"model", &bad}}, nullptr, SaveMode::kAsync);
  }
  EXPECT_NE(log.text().find("step_00000006"), std::string::npos) << log.text();
}

TEST_F(CheckpointTest, MarkerWithoutRanksStillVerifiesAndResumes) {
  // Markers written before ranks were recorded: the same format version, files without "rank".
  make_parts();
  CheckpointManager manager(run_dir_, 2);
  const fs::path saved = manager.save(8, parts());
  auto marker = nlohmann::json::parse(read_bytes(saved / "COMPLETE"));
  for (auto& [name, entry] : marker.at("files").items()) entry.erase("rank");
  write_bytes(saved / "COMPLETE", marker.dump(2));
  EXPECT_TRUE(CheckpointManager::verify(saved));
  EXPECT_EQ(manager.find_resume("auto"), saved);
  // Spread over 3 verifying ranks by size: each file is checked by exactly one of them.
  flip_byte(saved / "model.safetensors", 100);
  int finding = 0;
  for (int rank = 0; rank < 3; ++rank)
    finding += !CheckpointManager::verify_share(saved, rank, 3, /*hash=*/true).empty();
  EXPECT_EQ(finding, 1);
}

// ---- several ranks (threads of this process joined by a Gloo group) ----

// Rank r's share of a sharded state: its own tensors, and from rank 0 also a JSON part.
struct RankParts {
  TestPart shard;
  TestPart shared{"trainer"};
  explicit RankParts(int rank) : shard(fmt::format("shard{}", rank)) {
    at::manual_seed(static_cast<uint64_t>(100 + rank));
    shard.tensors = {{"w", at::randn({1000 + 7 * rank})}, {"b", at::randn({33}, at::kBFloat16)}};
    if (rank == 0) shared.json = R"({"step": 4})";
  }
  std::map<std::string, const Stateful*> parts() const {
    std::map<std::string, const Stateful*> all = {{"shard", &shard}};
    if (shared.json) all["trainer"] = &shared;
    return all;
  }
};

TEST_F(CheckpointTest, ThreeRanksAsyncSaveEqualsSyncSaveWithOneCompleteMarker) {
  std::vector<std::unique_ptr<RankParts>> ranks;
  for (int r = 0; r < 3; ++r) ranks.push_back(std::make_unique<RankParts>(r));
  dist::run_ranks(3, [&](int rank, dist::ProcessGroup& group) {
    CheckpointManager sync(run_dir_ / "sync", 2), async(run_dir_ / "async", 2);
    sync.save(4, ranks[rank]->parts(), &group);
    async.save(4, ranks[rank]->parts(), &group, SaveMode::kAsync);
    ranks[rank]->shard.tensors[0].second.mul_(2);  // training goes on
    async.wait();
  });
  const fs::path expected = run_dir_ / "sync" / "checkpoints" / "step_00000004";
  const fs::path saved = run_dir_ / "async" / "checkpoints" / "step_00000004";
  EXPECT_EQ(directory_bytes(saved), directory_bytes(expected));
  EXPECT_EQ(CheckpointManager(run_dir_ / "async", 2).list_complete(), std::vector<fs::path>{saved});
  const auto marker = nlohmann::json::parse(read_bytes(saved / "COMPLETE"));
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(marker.at("files").at(fmt::format("shard{}.safetensors", r)).at("rank"), r);
  EXPECT_EQ(marker.at("files").at("trainer.json").at("rank"), 0);
}

TEST_F(CheckpointTest, EachRankVerifiesItsOwnFilesAndResumeFallsBackTogether) {
  std::vector<std::unique_ptr<RankParts>> ranks;
  for (int r = 0; r < 3; ++r) ranks.push_back(std::make_unique<RankParts>(r));
  dist::run_ranks(3, [&](int rank, dist::ProcessGroup& group) {
    CheckpointManager manager(run_dir_, 5);
    for (const int64_t step : {1, 2, 3}) manager.save(step, ranks[rank]->parts(), &group, SaveMode::kAsync);
    manager.wait();
  });
  const fs::path step1 = checkpoints() / "step_00000001", step2 = checkpoints() / "step_00000002",
                 step3 = checkpoints() / "step_00000003";
  // Step 3: one byte of rank 1's file flipped; only rank 1's share finds it.
  flip_byte(step3 / "shard1.safetensors", 200);
  for (int rank = 0; rank < 3; ++rank)
    EXPECT_EQ(CheckpointManager::verify_share(step3, rank, 3, /*hash=*/true).empty(), rank != 1) << rank;
  // Under two ranks, rank 1's file is rank 1's again, and rank 2's goes to rank 0.
  EXPECT_FALSE(CheckpointManager::verify_share(step3, 1, 2, true).empty());
  EXPECT_TRUE(CheckpointManager::verify_share(step3, 0, 2, true).empty());
  // Step 2: rank 2's file truncated, found by its size before anyone hashes.
  fs::resize_file(step2 / "shard2.safetensors", fs::file_size(step2 / "shard2.safetensors") - 1);
  EXPECT_NE(CheckpointManager::verify_share(step2, 2, 3, /*hash=*/false).find("bytes"), std::string::npos);

  std::vector<std::optional<fs::path>> chosen(3);
  {
    CapturedLog log(run_dir_ / "log.txt");
    dist::run_ranks(3, [&](int rank, dist::ProcessGroup& group) {
      chosen[rank] = CheckpointManager(run_dir_, 5).find_resume("auto", group);
    });
    EXPECT_NE(log.text().find("step_00000003: rank 1 found: file 'shard1.safetensors' has SHA-256"),
              std::string::npos) << log.text();
    EXPECT_NE(log.text().find("step_00000002: rank 2 found: file 'shard2.safetensors' has"), std::string::npos)
        << log.text();
  }
  for (int rank = 0; rank < 3; ++rank) EXPECT_EQ(chosen[rank], step1) << rank;

  // Every checkpoint damaged: every rank gets the same error, naming each one.
  fs::remove(step1 / "shard0.safetensors");
  std::vector<std::string> errors(3);
  CapturedLog quiet(run_dir_ / "log2.txt");
  dist::run_ranks(3, [&](int rank, dist::ProcessGroup& group) {
    try {
      CheckpointManager(run_dir_, 5).find_resume("auto", group);
    } catch (const Error& e) {
      errors[rank] = e.what();
    }
  });
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_NE(errors[rank].find("every checkpoint"), std::string::npos) << errors[rank];
    EXPECT_NE(errors[rank].find("rank 0 found: file 'shard0.safetensors' is missing"), std::string::npos)
        << errors[rank];
  }
  // An explicit path: the same verification, and its failure an error on every rank.
  dist::run_ranks(2, [&](int, dist::ProcessGroup& group) {
    expect_error([&] { CheckpointManager(run_dir_, 5).find_resume(step3.string(), group); },
                 {step3.string(), "damaged", "shard1.safetensors"});
  });
}

}  // namespace
}  // namespace longtune::trainer
